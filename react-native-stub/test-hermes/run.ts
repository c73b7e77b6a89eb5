/** Entry of the Hermes bundle: every cross-language vector through the core, on Hermes.
 * hermes.test.ts bundles it with the vectors inlined as ``__VECTORS__`` and the offline packs
 * as base64 in ``__PACKS__`` (Hermes' CLI has no file system) and lowers it for Hermes with React Native's Babel preset, as Metro does. */
import { base64 } from "@scure/base";

import { allProblems } from "../test/vectorCases";
import { installTextCodec } from "./textcodec";

declare const print: (...args: unknown[]) => void;
declare const __VECTORS__: Record<string, unknown>;
declare const __PACKS__: Record<string, string>; // base64 of tests/vectors/packs/*.mspack

installTextCodec(); // the core encodes only when called, so before the first case is soon enough

const { checked, problems } = allProblems(
  (rel) => {
    const value = __VECTORS__[rel];
    if (value === undefined) throw new Error(`no vector ${rel}`);
    return value;
  },
  (rel) => {
    const value = __PACKS__[rel];
    if (value === undefined) throw new Error(`no pack ${rel}`);
    return base64.decode(value);
  },
);
for (const p of problems) print(`MISMATCH ${p}`);
print(`hermes: ${checked} checks, ${problems.length} mismatches`);
if (problems.length > 0) throw new Error("the vectors disagree under Hermes");
