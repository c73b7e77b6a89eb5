/**
 * Held shadow candidates (docs/device.md check 2.7, docs/behaviour.md "Shadow runs"): a
 * version that passed every check of an install, golden vectors included, kept beside the
 * active model and never pointed at by current.json:
 *
 *   shadow/<name>/held.json      the HeldRecord, written atomically after its files (the
 *                                commit point)
 *   shadow/<name>/v<version>/    manifest.json + <sha256>.ort
 *   shadow/<name>/windows.json   agreement windows not yet reported (shadow.ts SavedWindow[])
 *
 * One candidate per model at a time. A model directory without a readable record (a crash
 * before the commit point) holds nothing and is removed by the next sync.
 */
import type { ReportAfter } from "./schema";
import type { SavedWindow } from "./shadow";
import type { State } from "./state";

/** held.json: the doc's {version, manifest_sha256, artifact_sha256, target, report_after},
 * and what serving it needs. */
export interface HeldRecord {
  version: number;
  manifest_sha256: string;
  artifact_sha256: string;
  target: string;
  report_after: ReportAfter;
  length: number;
  /** The providers its golden check's session was created with. */
  providers: string[];
  fixed_batch: number | null;
  held_at: string;
}

const RECORD = "held.json";
const WINDOWS = "windows.json";

export class HeldShadows {
  constructor(private readonly state: State) {}

  versionDir(name: string, version: number): string {
    return `shadow/${name}/v${version}`;
  }

  manifestPath(name: string, version: number): string {
    return `${this.versionDir(name, version)}/manifest.json`;
  }

  artifactPath(name: string, rec: Pick<HeldRecord, "version" | "artifact_sha256">): string {
    return `${this.versionDir(name, rec.version)}/${rec.artifact_sha256}.ort`;
  }

  /** Models with anything under shadow/ (held or stray). */
  names(): Promise<string[]> {
    return this.state.storage.list("shadow");
  }

  /** The held record of `name`, null when none (or unreadable: then nothing is held). */
  async held(name: string): Promise<HeldRecord | null> {
    const rec = await this.state.readJson<HeldRecord>(`shadow/${name}/${RECORD}`).catch(() => null);
    if (rec === null || typeof rec !== "object" || typeof rec.version !== "number" || typeof rec.artifact_sha256 !== "string") {
      return null;
    }
    return rec;
  }

  /** `rec`'s files are already under versionDir: it becomes the held candidate of `name`;
   * any other version directory goes. */
  async hold(name: string, rec: HeldRecord): Promise<void> {
    await this.state.writeJson(`shadow/${name}/${RECORD}`, rec);
    for (const entry of await this.state.storage.list(`shadow/${name}`)) {
      if (/^v\d+$/.test(entry) && entry !== `v${rec.version}`) await this.state.storage.remove(`shadow/${name}/${entry}`);
    }
  }

  /** Rewrite the record (a new report_after for the same candidate). */
  update(name: string, rec: HeldRecord): Promise<void> {
    return this.state.writeJson(`shadow/${name}/${RECORD}`, rec);
  }

  /** Everything held for `name`, windows included. */
  discard(name: string): Promise<void> {
    return this.state.storage.remove(`shadow/${name}`);
  }

  async windows(name: string): Promise<unknown[]> {
    const raw = await this.state.readJson<unknown>(`shadow/${name}/${WINDOWS}`).catch(() => null);
    return Array.isArray(raw) ? raw : [];
  }

  async saveWindows(name: string, windows: SavedWindow[]): Promise<void> {
    if (windows.length === 0) await this.state.storage.remove(`shadow/${name}/${WINDOWS}`);
    else await this.state.writeJson(`shadow/${name}/${WINDOWS}`, windows);
  }

  /** Bytes the held artifacts take, for the storage budget (condition C.2). */
  async bytes(): Promise<number> {
    let total = 0;
    for (const name of await this.names()) total += (await this.held(name))?.length ?? 0;
    return total;
  }
}
