/** RFC 8785 canonical JSON: the one function signing and verifying both call
 * (packager/manifest.py canonical_bytes). */
import canonicalize from "canonicalize";

import { utf8ToBytes } from "./bytes";
import { FormatError } from "./errors";

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** ES2024's String.prototype.isWellFormed, which canonicalize 5 calls on every string.
 * Node 20 has it; a JavaScript engine without it (older Hermes builds) would otherwise fail
 * every document with a TypeError, so it is installed only where missing. */
export function isWellFormed(s: string): boolean {
  return !LONE_SURROGATE.test(s);
}

const proto = String.prototype as { isWellFormed?: (this: string) => boolean };
if (typeof proto.isWellFormed !== "function") {
  Object.defineProperty(String.prototype, "isWellFormed", {
    value: function (this: string): boolean {
      return isWellFormed(String(this));
    },
    configurable: true,
    writable: true,
  });
}

export function canonicalText(value: unknown): string {
  let text: string | undefined;
  try {
    text = canonicalize(value);
  } catch (err) {
    throw new FormatError(`cannot canonicalise document: ${(err as Error).message}`);
  }
  if (text === undefined) throw new FormatError("cannot canonicalise document: no JSON value");
  return text;
}

export function canonicalBytes(value: unknown): Uint8Array {
  return utf8ToBytes(canonicalText(value));
}
