/**
 * The `next-start` activation policy (docs/mobile.md "Activation"): a version that passed
 * every check, golden vectors included, waits in the state directory and becomes current
 * at the next cold start, so a running app never swaps its model under the user.
 *
 *   staged/<name>/staged.json       the Installed record of the staged version, written
 *                                   atomically after its files (the commit point)
 *   staged/<name>/v<version>/       manifest.json + <sha256>.ort
 *
 * Activation re-checks what could have changed on disk since: the staged manifest's
 * signatures against the saved root, that it names this version and artifact (and that
 * this runtime still takes it, checks 3.6 and 3.7), the file's length and sha256. Anything
 * else refuses the staged version; the current model stays and the next sync fetches the
 * release again.
 */
import { MixAndMatchError } from "./errors";
import type { Target } from "./schema";
import type { Installed, State } from "./state";
import { checkArtifact, checkManifestSigned, parseJson, selectArtifact, trustedRoot } from "./trust";

export type Activation = "immediate" | "next-start";

export interface StagedModel {
  name: string;
  version: number;
}

const RECORD = "staged.json";

export class Staging {
  constructor(private readonly state: State) {}

  versionDir(name: string, version: number): string {
    return `staged/${name}/v${version}`;
  }

  async staged(name: string): Promise<Installed | null> {
    return this.state.readJson<Installed>(`staged/${name}/${RECORD}`);
  }

  /** Staged versions by model name. A model directory without a record (a crash before
   * the commit point) is removed. */
  async all(): Promise<Record<string, Installed>> {
    const out: Record<string, Installed> = {};
    for (const name of await this.state.storage.list("staged")) {
      const rec = await this.staged(name).catch(() => null);
      if (rec === null) await this.discard(name);
      else out[name] = rec;
    }
    return out;
  }

  /** `installed` (files already under versionDir) becomes the staged version of its model;
   * a version staged before it goes. */
  async stage(installed: Installed): Promise<void> {
    const { name, version } = installed;
    await this.state.writeJson(`staged/${name}/${RECORD}`, installed);
    for (const entry of await this.state.storage.list(`staged/${name}`)) {
      if (entry !== RECORD && entry !== `v${version}`) await this.state.storage.remove(`staged/${name}/${entry}`);
    }
  }

  discard(name: string): Promise<void> {
    return this.state.storage.remove(`staged/${name}`);
  }

  /**
   * Make the staged version of `name` current (checks 5.1-5.3 as for an install): re-check,
   * move its files into models/<name>/v<N>, swap the pointer. Returns the installed record,
   * or null when nothing newer than the current version was staged. Throws the check's
   * error when the staged files fail it; either way nothing stays staged.
   */
  async activate(name: string, shippedRoot: unknown, target: Target, ortVersion: string, nowIso: string): Promise<Installed | null> {
    const storage = this.state.storage;
    try {
      const rec = await this.staged(name);
      if (rec === null) return null;
      const current = await this.state.pointer(name);
      if (current !== null && current.current.version >= rec.version) return null; // check 3.5
      const data = (await storage.read(rec.manifest_path)) ?? new Uint8Array(0);
      const root = trustedRoot((await this.state.savedRoot()) ?? shippedRoot);
      const manifest = checkManifestSigned(parseJson(data, "staged manifest"), root); // checks 3.2, 3.3
      if (manifest.name !== rec.name || manifest.version !== rec.version) {
        throw new MixAndMatchError(`staged manifest is ${manifest.name} v${manifest.version}, the record says ${rec.name} v${rec.version}`);
      }
      const artifact = selectArtifact(manifest, target, ortVersion); // checks 3.6, 3.7
      if (artifact.sha256 !== rec.sha256) {
        throw new MixAndMatchError(`staged artifact ${rec.sha256.slice(0, 12)}… is not the one the manifest has for ${target}`);
      }
      checkArtifact((await storage.read(rec.artifact_path)) ?? new Uint8Array(0), artifact); // checks 4.1, 4.2

      const dir = `models/${name}/v${rec.version}`;
      const installed: Installed = {
        ...rec,
        artifact_path: `${dir}/${rec.sha256}.ort`,
        manifest_path: `${dir}/manifest.json`,
        installed_at: nowIso,
      };
      // check 5.1: nothing points at the version directory until the swap
      await storage.remove(dir);
      await storage.rename(rec.manifest_path, installed.manifest_path);
      await storage.rename(rec.artifact_path, installed.artifact_path);
      await this.state.swap(name, installed); // check 5.2
      await this.state.cleanUp(name); // check 5.3
      return installed;
    } finally {
      await this.discard(name);
    }
  }
}
