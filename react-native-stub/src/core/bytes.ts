/** Byte helpers shared by the core. Hermes (React Native) and Node both provide
 * TextEncoder/TextDecoder; the core reaches them through globalThis so that it compiles
 * against neither the DOM nor Node's type declarations. */
import { bytesToHex, hexToBytes, utf8ToBytes } from "@noble/hashes/utils.js";
import { sha256 } from "@noble/hashes/sha2.js";

export { bytesToHex, hexToBytes, utf8ToBytes };

interface Utf8Decoder {
  decode(input: Uint8Array): string;
}
type DecoderCtor = new (label: string, options: { fatal: boolean }) => Utf8Decoder;

let decoder: Utf8Decoder | undefined;

/** Strict UTF-8 decoding: malformed bytes throw rather than become U+FFFD, so a document
 * cannot mean one thing here and another in Python. */
export function utf8Decode(data: Uint8Array): string {
  if (decoder === undefined) {
    const ctor = (globalThis as unknown as { TextDecoder?: DecoderCtor }).TextDecoder;
    if (ctor === undefined) throw new Error("TextDecoder is not available on this runtime");
    decoder = new ctor("utf-8", { fatal: true });
  }
  return decoder.decode(data);
}

export function sha256Hex(data: Uint8Array): string {
  return bytesToHex(sha256(data));
}

export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  const total = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
