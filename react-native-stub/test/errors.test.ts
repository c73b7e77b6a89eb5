/** docs/device.md's error list is the contract with the Python device: every class it
 * names exists here with the same name, the same parent and the same report code. */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";

import * as errors from "../src/core/errors";

const doc = readFileSync(join(import.meta.dirname, "..", "..", "docs", "device.md"), "utf8");
// The tree's rows up to its "(Python only:)" line are the classes both clients share.
const block = (doc.slice(doc.indexOf("## Error classes")).split("```")[1] ?? "").split("(Python only")[0]!;

interface Row {
  name: string;
  code: string | null;
  parent: string | null;
}

/** The tree's lines: name, its parent (from the indentation), its code (the last word). */
function rows(): Row[] {
  const out: Row[] = [];
  const stack: string[] = [];
  for (const line of block.split("\n")) {
    const m = /^([│ ]*)(?:[├└]── )?(\w+Error)\b.*?(?:\s(\w+))?\s*$/.exec(line);
    if (m === null) continue;
    const depth = line.startsWith("├") || line.startsWith("└") ? 1 : m[1]!.length / 4 + (m[1]!.length > 0 ? 1 : 0);
    stack[depth] = m[2]!;
    // The header line ends in the column title "code", not a code.
    const code = m[3] !== undefined && m[3] !== "code" && /^[a-z_]+$/.test(m[3]) ? m[3] : null;
    out.push({ name: m[2]!, code, parent: depth > 0 ? stack[depth - 1]! : null });
  }
  return out;
}

describe("error classes match docs/device.md", () => {
  const table = rows();
  it("the doc lists the tree", () => {
    // 23 before offline packs, + PackFormatError and StalePackError (issue 15)
    assert.equal(table.length, 25, `parsed ${table.length} rows`);
  });
  it("every error class the client exports is in the doc's tree", () => {
    const exported = Object.entries(errors)
      .filter(([, v]) => typeof v === "function" && (v as { prototype?: unknown }).prototype instanceof Error)
      .map(([k]) => k)
      .sort();
    assert.deepEqual(exported, table.map((r) => r.name).sort());
  });
  for (const row of table) {
    it(`${row.name}${row.code === null ? "" : ` (${row.code})`}`, () => {
      const cls = (errors as Record<string, unknown>)[row.name] as (new (m: string, x?: unknown) => errors.ModelSyncError) | undefined;
      assert.ok(cls !== undefined, `no ${row.name} in src/core/errors.ts`);
      const err = new cls("x", undefined);
      assert.equal(err.name, row.name);
      assert.ok(err instanceof errors.ModelSyncError);
      if (row.code !== null) assert.equal(err.code, row.code);
      if (row.parent !== null) {
        const parent = (errors as Record<string, unknown>)[row.parent] as new (...a: never[]) => unknown;
        assert.ok(err instanceof parent, `${row.name} should extend ${row.parent}`);
      }
    });
  }
});
