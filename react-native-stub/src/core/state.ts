/**
 * The client's saved state, laid out like the Python device's (docs/device.md "State on
 * disk"), on any Storage:
 *
 *   device.json                   identity and device token (after register)
 *   root.json                     newest trusted root (verified envelope)
 *   index/<channel>.json          last verified channel index, the exact bytes served
 *   index/<channel>.etag          its ETag, for If-None-Match
 *   index/<channel>.pack.json     {"version", "pack_id"} of the last offline pack installed:
 *                                 the pack floor, below which neither a pack nor the network
 *                                 may go (checks 2.4, P.2.3)
 *   models/<name>/current.json    {"current": Installed, "previous": Installed | null}
 *   models/<name>/v<version>/     manifest.json + <sha256>.ort of an installed version
 *   cache/<sha256>.part           partial download, resumed with Range
 *   staged/<name>/                a verified version waiting for the next start (staging.ts)
 *   shadow/<name>/                a held shadow candidate (held.json, v<version>/) and its
 *                                 open agreement windows (windows.json): check 2.7, held.ts
 *   queue/<ms>-<seq>.json         one report event per file, removed once the server took it
 *   failed.json                   {"<model>": [versions]} never retried
 *   status.json                   bookkeeping: last stale index reported, event sequence,
 *                                 reports the service refused (count and the last one)
 *
 * Installing writes the version directory first and swaps current.json last (one atomic
 * rename), so an app killed at any instant finds either the old pointer or the new one,
 * each pointing at whole files.
 */
import { utf8Decode, utf8ToBytes } from "./bytes";
import { StoreError } from "./errors";
import type { Storage } from "./ports";

export interface DeviceIdentity {
  device_id: string;
  fleet: string;
  platform: string;
  device_token: string;
}

export interface Installed {
  name: string;
  version: number;
  target: string;
  sha256: string;
  length: number;
  /** Paths relative to the store. */
  artifact_path: string;
  manifest_path: string;
  providers: string[];
  fixed_batch: number | null;
  installed_at: string;
  /** Where a staged version came from, for the report its activation queues (an offline
   * pack's {source: "pack", pack_id, index_version, ...}); absent for the network. */
  report_data?: Record<string, unknown>;
}

export interface PackFloor {
  version: number;
  pack_id: string;
}

export interface Pointer {
  current: Installed;
  previous: Installed | null;
}

/** The last report event the service refused on its own (reports.ts), for diagnostics. */
export interface RefusedReport {
  kind: string;
  /** The HTTP status: 422 (invalid) or 413 (too large). */
  status: number;
  /** The service's one-line detail, or "" when it sent none. */
  detail: string;
}

export interface Status {
  stale_reported_index: number | null;
  event_seq: number;
  /** Report events dropped from the queue because the service refused them alone. */
  reports_refused: number;
  last_refused: RefusedReport | null;
}

const NO_STATUS: Status = { stale_reported_index: null, event_seq: 0, reports_refused: 0, last_refused: null };

export class State {
  constructor(readonly storage: Storage) {}

  async readJson<T>(path: string): Promise<T | null> {
    const data = await this.storage.read(path);
    if (data === null) return null;
    try {
      return JSON.parse(utf8Decode(data)) as T;
    } catch (err) {
      throw new StoreError(`${path} is corrupt: ${(err as Error).message}`);
    }
  }

  async writeJson(path: string, value: unknown): Promise<void> {
    await this.storage.writeAtomic(path, utf8ToBytes(JSON.stringify(value, null, 2) + "\n"));
  }

  identity(): Promise<DeviceIdentity | null> {
    return this.readJson<DeviceIdentity>("device.json");
  }

  saveIdentity(id: DeviceIdentity): Promise<void> {
    return this.writeJson("device.json", id);
  }

  savedRoot(): Promise<unknown> {
    return this.readJson<unknown>("root.json");
  }

  saveRoot(envelope: unknown): Promise<void> {
    return this.writeJson("root.json", envelope);
  }

  async savedIndex(channel: string): Promise<{ body: Uint8Array; etag: string | null } | null> {
    const body = await this.storage.read(`index/${channel}.json`);
    if (body === null) return null;
    const etag = await this.storage.read(`index/${channel}.etag`);
    return { body, etag: etag === null ? null : utf8Decode(etag) };
  }

  async saveIndex(channel: string, body: Uint8Array, etag: string | null): Promise<void> {
    // The ETag goes first: a crash between the writes leaves a new ETag beside the old body,
    // which only costs one full download (the server's 200 for a mismatching tag).
    if (etag === null) await this.storage.remove(`index/${channel}.etag`);
    else await this.storage.writeAtomic(`index/${channel}.etag`, utf8ToBytes(etag));
    await this.storage.writeAtomic(`index/${channel}.json`, body);
  }

  /** check 1.5: after the index keys rotate, the old index proves nothing any more. */
  async forgetIndex(channel: string): Promise<void> {
    await this.storage.remove(`index/${channel}.json`);
    await this.storage.remove(`index/${channel}.etag`);
  }

  /** The highest channel-index version an installed offline pack carried (check P.2.3). */
  async packFloor(channel: string): Promise<number | null> {
    const raw = await this.readJson<PackFloor>(`index/${channel}.pack.json`);
    return raw !== null && typeof raw.version === "number" ? raw.version : null;
  }

  savePackFloor(channel: string, version: number, packId: string): Promise<void> {
    return this.writeJson(`index/${channel}.pack.json`, { version, pack_id: packId });
  }

  /** After the offline keys rotate: what the old keys signed proves nothing any more. */
  forgetPackFloor(channel: string): Promise<void> {
    return this.storage.remove(`index/${channel}.pack.json`);
  }

  /** The version below which no index is accepted (checks 2.4, P.2.3): the saved online
   * index's or the last pack's, whichever is higher. */
  async trustedIndexVersion(channel: string): Promise<number | null> {
    const saved = await this.savedIndex(channel);
    const versions: number[] = [];
    const online = saved === null ? null : indexVersionOf(saved.body);
    if (online !== null) versions.push(online);
    const floor = await this.packFloor(channel);
    if (floor !== null) versions.push(floor);
    return versions.length === 0 ? null : Math.max(...versions);
  }

  pointer(name: string): Promise<Pointer | null> {
    return this.readJson<Pointer>(`models/${name}/current.json`);
  }

  async installedModels(): Promise<Record<string, Pointer>> {
    const out: Record<string, Pointer> = {};
    for (const name of await this.storage.list("models")) {
      const p = await this.pointer(name);
      if (p !== null) out[name] = p;
    }
    return out;
  }

  /** check 5.2: the new version becomes current, the old current becomes previous. */
  async swap(name: string, next: Installed): Promise<Pointer> {
    const old = await this.pointer(name);
    const pointer: Pointer = {
      current: next,
      previous: old === null ? null : old.current.version === next.version ? old.previous : old.current,
    };
    await this.writeJson(`models/${name}/current.json`, pointer);
    return pointer;
  }

  /** check 5.3: versions other than current and previous, and stray files, go. */
  async cleanUp(name: string): Promise<void> {
    const p = await this.pointer(name);
    const keep = new Set(["current.json"]);
    if (p !== null) {
      keep.add(`v${p.current.version}`);
      if (p.previous !== null) keep.add(`v${p.previous.version}`);
    }
    for (const entry of await this.storage.list(`models/${name}`)) {
      if (!keep.has(entry)) await this.storage.remove(`models/${name}/${entry}`);
    }
  }

  /**
   * The fallback from a version that failed after it was activated (the expected-band
   * check, client.ts observeBand): `version` leaves the pointer. When it is current, the
   * previous version becomes current again (with no previous behind it); with no previous,
   * the pointer goes and the model embedded in the app, if any, serves. When it is the
   * previous, it is dropped. Its files go (check 5.3). Returns the pointer now in effect.
   * One atomic write of current.json, as an install's swap.
   */
  async dropVersion(name: string, version: number): Promise<Pointer | null> {
    const p = await this.pointer(name);
    if (p === null) return null;
    let next: Pointer | null;
    if (p.current.version === version) next = p.previous === null ? null : { current: p.previous, previous: null };
    else if (p.previous?.version === version) next = { current: p.current, previous: null };
    else return p;
    if (next === null) {
      await this.storage.remove(`models/${name}/current.json`);
      await this.storage.remove(`models/${name}`);
    } else {
      await this.writeJson(`models/${name}/current.json`, next);
      await this.cleanUp(name);
    }
    return next;
  }

  async failed(): Promise<Record<string, number[]>> {
    return (await this.readJson<Record<string, number[]>>("failed.json")) ?? {};
  }

  async markFailed(name: string, version: number): Promise<void> {
    const all = await this.failed();
    all[name] = [...new Set([...(all[name] ?? []), version])].sort((a, b) => a - b);
    await this.writeJson("failed.json", all);
  }

  async status(): Promise<Status> {
    // A status.json written before a field existed reads as that field's default.
    return { ...NO_STATUS, ...(await this.readJson<Partial<Status>>("status.json")) };
  }

  saveStatus(s: Status): Promise<void> {
    return this.writeJson("status.json", s);
  }

  /** Bytes the installed versions take, for the storage budget (condition C.2). */
  async installedBytes(): Promise<number> {
    let total = 0;
    for (const p of Object.values(await this.installedModels())) {
      total += p.current.length + (p.previous?.length ?? 0);
    }
    return total;
  }
}

/** The `signed.version` of a saved index envelope, or null when it has none. */
export function indexVersionOf(body: Uint8Array): number | null {
  try {
    const v = (JSON.parse(utf8Decode(body)) as { signed?: { version?: unknown } }).signed?.version;
    return typeof v === "number" ? v : null;
  } catch {
    return null;
  }
}
