/**
 * The offline report queue (docs/device.md "Reports"): events are written to disk first,
 * one file each, and sent in batches of up to 500 to POST /v1/devices/{id}/reports. A batch
 * leaves the queue on 200; the server is idempotent by event_id, so a lost answer just
 * resends. A batch the service refuses as such (422, 413) is halved until the events it
 * refuses stand alone; those are dropped and counted (Status.reports_refused).
 */
import { sha256Hex, utf8Decode, utf8ToBytes } from "./bytes";
import { formatTime } from "./documents";
import { StoreError } from "./errors";
import type { HttpResponse } from "./ports";
import type { RefusedReport, State, Status } from "./state";
import { type Endpoint, failure, request } from "./transfer";

/** The kinds the service takes (device_sim/store.py's ReportKind). `behaviour` is what a
 * model did since the last report (behaviour.ts); `shadow`, one agreement window of a held
 * shadow candidate beside the active model (shadow.ts); `inference_stats`, the
 * predecessor of `behaviour`, is still accepted (reportInferenceStats, deprecated) but no
 * longer sent by the hook. */
export type ReportKind =
  | "installed"
  | "install_failed"
  | "golden_failed"
  | "transfer_failed"
  | "stale_index"
  | "inference_stats"
  | "behaviour"
  | "shadow";

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

/** What the service answers a batch it will never take as sent: an invalid event (422), a
 * body over its cap (413). Any other answer may change by itself (auth, outage). */
const REFUSED_STATUSES: ReadonlySet<number> = new Set([413, 422]);
const MAX_DETAIL = 300;

/** How many report events the service refused and the last of them (Status). */
export interface RefusedReports {
  count: number;
  last: RefusedReport | null;
}

interface Queued {
  name: string;
  event: ReportEvent;
}

/** A UUID-shaped id derived from the device, a persistent sequence number and the time:
 * unique without a random source (Hermes has no crypto.getRandomValues without a polyfill). */
function eventId(deviceId: string, seq: number, nowMs: number): string {
  const h = sha256Hex(utf8ToBytes(`${deviceId}\n${seq}\n${nowMs}`));
  const variant = ((Number.parseInt(h[16]!, 16) & 0x3) | 0x8).toString(16);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-${variant}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

export class ReportQueue {
  // status.json is read, changed and written back by enqueue() and by a refusal during a
  // flush, which may interleave (a report queued while a sync sends): one at a time.
  private statusLock: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly state: State,
    private readonly now: () => number,
  ) {}

  private updateStatus<T>(fn: (s: Status) => Promise<T>): Promise<T> {
    const run = this.statusLock.then(async () => fn(await this.state.status()));
    this.statusLock = run.catch(() => undefined);
    return run;
  }

  async enqueue(
    deviceId: string,
    kind: ReportKind,
    fields: Omit<ReportEvent, "event_id" | "kind" | "at"> = {},
  ): Promise<ReportEvent> {
    const nowMs = this.now();
    const seq = await this.updateStatus(async (status) => {
      await this.state.saveStatus({ ...status, event_seq: status.event_seq + 1 });
      return status.event_seq + 1;
    });
    const event: ReportEvent = { event_id: eventId(deviceId, seq, nowMs), kind, at: formatTime(nowMs), ...fields };
    const name = `${String(nowMs).padStart(15, "0")}-${String(seq).padStart(9, "0")}.json`;
    await this.state.writeJson(`queue/${name}`, event);
    return event;
  }

  async pending(): Promise<string[]> {
    return (await this.state.storage.list("queue")).filter((n) => n.endsWith(".json")).sort();
  }

  async refused(): Promise<RefusedReports> {
    const status = await this.state.status();
    return { count: status.reports_refused, last: status.last_refused };
  }

  /** Send everything queued; returns how many events the server accepted (new or
   * duplicate). Stops at the first batch that fails other than as refused (throws) and
   * leaves it queued; what was accepted before stays sent. */
  async flush(ep: Endpoint, deviceId: string): Promise<number> {
    const names = await this.pending();
    let sent = 0;
    for (let i = 0; i < names.length; i += MAX_BATCH) {
      const batch: Queued[] = [];
      for (const name of names.slice(i, i + MAX_BATCH)) {
        try {
          const event = await this.state.readJson<ReportEvent>(`queue/${name}`);
          if (event !== null) batch.push({ name, event });
        } catch (err) {
          // A queue file torn by a crash must not block every later report.
          if (!(err instanceof StoreError)) throw err;
          await this.state.storage.remove(`queue/${name}`);
        }
      }
      if (batch.length > 0) sent += await this.send(ep, deviceId, batch);
    }
    return sent;
  }

  /** POST one batch; the events accepted. The service takes a batch whole or not at all,
   * so one event it will never accept (a behaviour report for a version it has no install
   * of, a body over its cap) would hold back every later report of the device, installs
   * included, at every sync for good. Halving a refused batch, oldest half first, isolates
   * such events in about 2·log2(n) requests and lets all the others through; an event
   * refused on its own is dropped, counted, and its answer kept. Any other failure (auth,
   * outage, network) says nothing about the events: it throws, and they stay queued. */
  private async send(ep: Endpoint, deviceId: string, batch: Queued[]): Promise<number> {
    const res = await request(
      ep,
      `v1/devices/${encodeURIComponent(deviceId)}/reports`,
      { "Content-Type": "application/json" },
      "POST",
      JSON.stringify({ events: batch.map((q) => q.event) }),
    );
    if (res.status === 200) {
      await res.arrayBuffer().catch(() => undefined);
      for (const q of batch) await this.state.storage.remove(`queue/${q.name}`);
      return batch.length;
    }
    if (!REFUSED_STATUSES.has(res.status)) throw await failure(res, "POST reports");
    const detail = await detailOf(res);
    if (batch.length > 1) {
      const half = Math.floor(batch.length / 2);
      const first = await this.send(ep, deviceId, batch.slice(0, half));
      return first + (await this.send(ep, deviceId, batch.slice(half)));
    }
    const [{ name, event }] = batch as [Queued];
    // Counted before the file goes: a crash in between resends it, and it is counted
    // twice, rather than lost uncounted.
    await this.updateStatus((status) =>
      this.state.saveStatus({
        ...status,
        reports_refused: status.reports_refused + 1,
        last_refused: { kind: String(event.kind), status: res.status, detail },
      }),
    );
    await this.state.storage.remove(`queue/${name}`);
    return 0;
  }
}

/** The error body's one-line `detail` (`{"detail", "code"}`), "" when it has none. */
async function detailOf(res: HttpResponse): Promise<string> {
  try {
    const body = new Uint8Array(await res.arrayBuffer()).subarray(0, 4096);
    const parsed = JSON.parse(utf8Decode(body)) as { detail?: unknown };
    return typeof parsed.detail === "string" ? parsed.detail.slice(0, MAX_DETAIL) : "";
  } catch {
    return "";
  }
}
