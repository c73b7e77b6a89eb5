/**
 * The offline report queue (docs/device.md "Reports"): events are written to disk first,
 * one file each, and sent in batches of up to 500 to POST /v1/devices/{id}/reports. A batch
 * leaves the queue only on 200; the server is idempotent by event_id, so a lost answer just
 * resends.
 */
import { sha256Hex, utf8ToBytes } from "./bytes";
import { formatTime } from "./documents";
import { StoreError } from "./errors";
import type { State } from "./state";
import { type Endpoint, failure, request } from "./transfer";

/** The kinds the service takes (device_sim/store.py's ReportKind). `behaviour` is what a
 * model did since the last report (behaviour.ts); `inference_stats`, its predecessor, is
 * still accepted (reportInferenceStats, deprecated) but no longer sent by the hook. */
export type ReportKind =
  | "installed"
  | "install_failed"
  | "golden_failed"
  | "transfer_failed"
  | "stale_index"
  | "inference_stats"
  | "behaviour";

export interface ReportEvent {
  event_id: string;
  kind: ReportKind;
  at: string;
  model?: string;
  version?: number;
  reason?: string;
  data?: Record<string, unknown>;
}

export const MAX_BATCH = 500;

/** A UUID-shaped id derived from the device, a persistent sequence number and the time:
 * unique without a random source (Hermes has no crypto.getRandomValues without a polyfill). */
function eventId(deviceId: string, seq: number, nowMs: number): string {
  const h = sha256Hex(utf8ToBytes(`${deviceId}\n${seq}\n${nowMs}`));
  const variant = ((Number.parseInt(h[16]!, 16) & 0x3) | 0x8).toString(16);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-${variant}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

export class ReportQueue {
  constructor(
    private readonly state: State,
    private readonly now: () => number,
  ) {}

  async enqueue(
    deviceId: string,
    kind: ReportKind,
    fields: Omit<ReportEvent, "event_id" | "kind" | "at"> = {},
  ): Promise<ReportEvent> {
    const status = await this.state.status();
    const seq = status.event_seq + 1;
    const nowMs = this.now();
    const event: ReportEvent = { event_id: eventId(deviceId, seq, nowMs), kind, at: formatTime(nowMs), ...fields };
    await this.state.saveStatus({ ...status, event_seq: seq });
    const name = `${String(nowMs).padStart(15, "0")}-${String(seq).padStart(9, "0")}.json`;
    await this.state.writeJson(`queue/${name}`, event);
    return event;
  }

  async pending(): Promise<string[]> {
    return (await this.state.storage.list("queue")).filter((n) => n.endsWith(".json")).sort();
  }

  /** Send everything queued; returns how many events the server accepted (new or
   * duplicate). Stops at the first failed batch and leaves it queued. */
  async flush(ep: Endpoint, deviceId: string): Promise<number> {
    const names = await this.pending();
    let sent = 0;
    for (let i = 0; i < names.length; i += MAX_BATCH) {
      const batch = names.slice(i, i + MAX_BATCH);
      const events: ReportEvent[] = [];
      for (const n of batch) {
        try {
          const e = await this.state.readJson<ReportEvent>(`queue/${n}`);
          if (e !== null) events.push(e);
        } catch (err) {
          // A queue file torn by a crash must not block every later report.
          if (!(err instanceof StoreError)) throw err;
          await this.state.storage.remove(`queue/${n}`);
        }
      }
      if (events.length === 0) continue;
      const res = await request(
        ep,
        `v1/devices/${encodeURIComponent(deviceId)}/reports`,
        { "Content-Type": "application/json" },
        "POST",
        JSON.stringify({ events }),
      );
      if (res.status !== 200) throw await failure(res, "POST reports");
      await res.arrayBuffer().catch(() => undefined);
      for (const n of batch) await this.state.storage.remove(`queue/${n}`);
      sent += events.length;
    }
    return sent;
  }
}
