/** Offline packs on a phone (docs/offline.md): a .mspack the technician copied to the
 * device (a share sheet, a USB-C stick, the Files app) installed with no network. The
 * whole file crosses the bridge as base64 and is held in memory while it is checked. */
import * as RNFS from "@dr.pogodin/react-native-fs";
import { base64 } from "@scure/base";

import type { ModelSyncClient, PackInstallResult } from "../core/client";
import { PackFormatError } from "../core/errors";

/** The pack's bytes; an unreadable file is a PackFormatError (check P.1). */
export async function readPackFile(absolutePath: string): Promise<Uint8Array> {
  let text: string;
  try {
    text = await RNFS.readFile(absolutePath, "base64");
  } catch (err) {
    throw new PackFormatError(`cannot read pack ${absolutePath}: ${(err as Error).message}`);
  }
  return base64.decode(text);
}

/** `client.installFromPack` on the file at `absolutePath`. */
export async function installFromPackFile(client: ModelSyncClient, absolutePath: string): Promise<PackInstallResult> {
  return client.installFromPack(await readPackFile(absolutePath));
}
