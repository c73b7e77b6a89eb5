"""Who a channel-index entry is for: the device's rollout bucket and the entries it takes
(docs/architecture.md; docs/device.md checks 2.6 and 2.7). Both clients compute the same
buckets (tests/vectors/rollout.json, shadow.json)."""

from __future__ import annotations

import hashlib

from packager.manifest import IndexEntry, Rollout, ShadowEntry


def rollout_bucket(salt: str, device_id: str) -> int:
    """0..9999, the device's place in a staged rollout (docs/architecture.md)."""
    digest = hashlib.sha256(f"{salt}:{device_id}".encode()).hexdigest()
    return int(digest[:8], 16) % 10000


def in_rollout(rollout: Rollout, device_id: str) -> bool:
    return rollout_bucket(rollout.salt, device_id) < rollout.percent * 100


def pick_entry(entries: list[IndexEntry], device_id: str) -> IndexEntry | None:
    """The first (newest) entry whose rollout includes this device."""
    return next((e for e in entries if in_rollout(e.rollout, device_id)), None)


def pick_shadow(
    entries: list[ShadowEntry], device_id: str, runs_version: int, failed: set[int]
) -> ShadowEntry | None:
    """check 2.7: the shadow entry to hold beside the version the device runs (0: none,
    so nothing to compare with), unless not above it or known bad."""
    entry = next((e for e in entries if in_rollout(e.rollout, device_id)), None)
    if entry is None or not runs_version or entry.version <= runs_version or entry.version in failed:
        return None
    return entry
