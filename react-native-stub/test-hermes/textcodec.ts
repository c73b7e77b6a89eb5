/** UTF-8 TextEncoder/TextDecoder for the Hermes CLI from npm (hermes-engine-cli 0.12, 2022),
 * which predates them; the Hermes inside React Native 0.74 and later has TextEncoder, and an
 * app supplies TextDecoder where it lacks it (docs/mobile.md). Standing in for the runtime's,
 * not for our code: the core reaches both through globalThis. Strict: a malformed sequence
 * throws, as `new TextDecoder("utf-8", { fatal: true })` does. */
class Utf8Encoder {
  encode(text: string): Uint8Array {
    const out: number[] = [];
    for (const ch of text) {
      const c = ch.codePointAt(0)!;
      if (c < 0x80) out.push(c);
      else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
      else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
      else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    }
    return Uint8Array.from(out);
  }
}

class Utf8Decoder {
  decode(bytes: Uint8Array): string {
    let text = "";
    for (let i = 0; i < bytes.length; ) {
      const b = bytes[i]!;
      const n = b < 0x80 ? 0 : b >= 0xf0 && b < 0xf5 ? 3 : b >= 0xe0 ? 2 : b >= 0xc2 && b < 0xe0 ? 1 : -1;
      if (n < 0) throw new TypeError("invalid UTF-8");
      let c = n === 0 ? b : b & (0x3f >> n);
      for (let k = 1; k <= n; k++) {
        const t = bytes[i + k];
        if (t === undefined || (t & 0xc0) !== 0x80) throw new TypeError("invalid UTF-8");
        c = (c << 6) | (t & 63);
      }
      const min = [0, 0x80, 0x800, 0x10000][n]!;
      if (c < min || c > 0x10ffff || (c >= 0xd800 && c < 0xe000)) throw new TypeError("invalid UTF-8");
      text += String.fromCodePoint(c);
      i += n + 1;
    }
    return text;
  }
}

/** Put them on globalThis where the runtime has none (the package is side-effect free, so
 * a bare import would be dropped by the bundler: the runner calls this first). */
export function installTextCodec(): void {
  const g = globalThis as Record<string, unknown>;
  if (g.TextEncoder === undefined) g.TextEncoder = Utf8Encoder;
  if (g.TextDecoder === undefined) g.TextDecoder = Utf8Decoder;
}
