/**
 * A plain file-system path for InferenceSession.create(path).
 *
 * What users report with onnxruntime-react-native (microsoft/onnxruntime issues):
 * - #11239, #10990: `file://` URIs (expo-asset's localUri, some FS packages) where the
 *   native loader wants a path. 1.24's JSI binding strips a leading `file:/` or `file://`
 *   itself, but it does not percent-decode, so an iOS path under "Application Support"
 *   arrives as ".../Application%20Support/..." and fails with "failed to load model".
 * - #26738, #27062, #26931: a model left inside the read-only iOS app bundle fails to load
 *   in standalone builds; copying it to a writable directory first works. The React Native
 *   storage adapter does that copy for embedded models (src/react/storage.ts).
 * So: strip the scheme, percent-decode, and insist on an absolute path.
 */
export function modelFilePath(pathOrUri: string): string {
  let p = pathOrUri.trim();
  if (/^file:/i.test(p)) {
    p = p.replace(/^file:(\/\/localhost)?/i, "");
    p = p.replace(/^\/\/+/, "/");
    try {
      p = decodeURIComponent(p);
    } catch {
      throw new Error(`malformed file URI: ${pathOrUri}`);
    }
  } else if (/^[a-z][a-z0-9+.-]*:\/\//i.test(p)) {
    throw new Error(`not a local file: ${pathOrUri} (download it first)`);
  }
  if (!p.startsWith("/")) throw new Error(`model path must be absolute: ${pathOrUri}`);
  return p;
}
