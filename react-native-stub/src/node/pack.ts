/** Offline packs from the file system (docs/offline.md): a technician's .mspack on a USB
 * stick or in the app's documents, installed with no network. */
import { readFile } from "node:fs/promises";

import type { ModelSyncClient, PackInstallResult } from "../core/client";
import { PackFormatError } from "../core/errors";

/** The pack's bytes; an unreadable file is a PackFormatError (check P.1), as it is for the
 * Python device's PackReader. */
export async function readPackFile(path: string): Promise<Uint8Array> {
  try {
    return new Uint8Array(await readFile(path));
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new PackFormatError(`cannot read pack ${path}: ${e.code ?? e.message}`);
  }
}

/** `client.installFromPack` on the file at `path`. */
export async function installFromPackFile(client: ModelSyncClient, path: string): Promise<PackInstallResult> {
  return client.installFromPack(await readPackFile(path));
}
