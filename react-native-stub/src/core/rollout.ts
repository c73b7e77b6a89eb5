/** Staged rollout from signed data (docs/architecture.md): the device computes its own bucket, and
 * the server can compute the same one for its statistics; the entries a device takes (docs/device.md
 * checks 2.6 and 2.7), as packager/rollout.py. */
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

/**
 * check 2.7 (docs/device.md): the shadow entry a device holds beside the version it runs —
 * the first entry whose rollout includes the device, unless the device runs no version of
 * the model (`runsVersion` 0: nothing to compare with), or that entry's version is not above
 * the one it runs, or it is known bad. A later entry is never taken instead.
 */
export function pickShadow<E extends { version: number; rollout: Rollout }>(
  entries: readonly E[],
  deviceId: string,
  runsVersion: number,
  failed: readonly number[],
): E | undefined {
  const entry = entries.find((e) => inRollout(e.rollout, deviceId));
  if (entry === undefined || !(runsVersion > 0) || entry.version <= runsVersion || failed.includes(entry.version)) {
    return undefined;
  }
  return entry;
}
