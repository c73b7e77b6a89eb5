/** Ed25519 verification with @noble/ed25519, SHA-512 from @noble/hashes so that the
 * synchronous API works on Hermes, which has no WebCrypto. */
import * as ed from "@noble/ed25519";
import { sha512 } from "@noble/hashes/sha2.js";

import { hexToBytes } from "./bytes";

ed.hashes.sha512 = sha512;

/** RFC 8032 verification, not ZIP-215: Python's `cryptography` (OpenSSL) rejects
 * non-canonical encodings, and both sides must reach the same verdict on every input. */
export function verifyEd25519(sigHex: string, message: Uint8Array, publicHex: string): boolean {
  try {
    return ed.verify(hexToBytes(sigHex), message, hexToBytes(publicHex), { zip215: false });
  } catch {
    // Malformed points or lengths: a signature that does not verify, never a crash.
    return false;
  }
}
