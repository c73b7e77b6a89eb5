/** Staged rollout from signed data (docs/architecture.md): the device computes its own bucket, and
 * the server can compute the same one for its statistics. */
import { sha256Hex, utf8ToBytes } from "./bytes";
import type { IndexEntry, Rollout } from "./schema";

/** 0..9999: int(sha256(salt + ":" + device_id)[:8], 16) % 10000. */
export function rolloutBucket(salt: string, deviceId: string): number {
  const digest = sha256Hex(utf8ToBytes(`${salt}:${deviceId}`));
  return Number.parseInt(digest.slice(0, 8), 16) % 10000;
}

export function inRollout(rollout: Rollout, deviceId: string): boolean {
  return rolloutBucket(rollout.salt, deviceId) < rollout.percent * 100;
}

/** The first (newest) entry whose rollout includes this device. */
export function pickEntry(entries: readonly IndexEntry[], deviceId: string): IndexEntry | undefined {
  return entries.find((e) => inRollout(e.rollout, deviceId));
}
