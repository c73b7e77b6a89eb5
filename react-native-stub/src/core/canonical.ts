/** RFC 8785 canonical JSON: the one function signing and verifying both call
 * (packager/manifest.py canonical_bytes). */
import canonicalize from "canonicalize";

import { utf8ToBytes } from "./bytes";
import { FormatError } from "./errors";

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
