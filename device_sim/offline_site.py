"""The offline-site scenario (docs/offline.md): a site of devices that never reach the
service installs a channel's model from a pack a technician carried, while the online fleet
moves on; a week later (on the devices' simulated clock) the site comes online, its queued
reports reach the service, and it converges with the rest of the fleet.

    depot      every device enrolls (it needs a token and the shipped root)
    export     the technician exports a pack of v_old for the site's targets
    online     the online devices sync: v_old
    site       each site device installs the pack with no network at all
    release    v_new goes to 100%; the online devices sync: v_new
    +7 days    the site devices sync for the first time: reports sent, v_new installed

The service's clock does not move: it runs with an index lifetime longer than the jump
(``SITE_INDEX_LIFETIME``), so the late devices' check 2.5 sees an index as fresh as a
service that kept re-signing would serve. The same function runs in the test suite (a few
devices) and in benchmarks/bench_offline.py (hundreds).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from device_sim.device import Device
from device_sim.transfer import SyncConfig
from packager.manifest import utcnow

SITE_INDEX_LIFETIME = timedelta(days=14)
OFFLINE_FOR = timedelta(days=7)

Admin = Callable[..., Awaitable[httpx.Response]]


class SimClock:
    """The devices' wall clock: the real one plus an offset the scenario moves."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return utcnow() + self.offset

    def advance(self, by: timedelta) -> None:
        self.offset += by


@dataclass
class SiteReport:
    site_devices: int
    online_devices: int
    pack_bytes: int
    pack_seconds: float
    install_seconds: list[float] = field(default_factory=list)  # one per site device
    site_on_old: int = 0  # after the pack, before going online
    converged: int = 0  # devices on v_new at the end
    installs_from_packs: int = 0  # the service's count for v_old, after the site's sync

    def summary(self) -> dict[str, Any]:
        times = sorted(self.install_seconds)
        return {
            "site_devices": self.site_devices, "online_devices": self.online_devices,
            "pack_bytes": self.pack_bytes, "pack_export_s": round(self.pack_seconds, 3),
            "install_from_pack_median_s": round(statistics.median(times), 4) if times else None,
            "install_from_pack_max_s": round(times[-1], 4) if times else None,
            "site_on_old_after_pack": self.site_on_old, "converged_on_new": self.converged,
            "service_installs_from_packs": self.installs_from_packs,
        }


async def _release(admin: Admin, fleet: str, model: str, version: int) -> None:
    r = await admin("POST", "/v1/releases", json={"fleet": fleet, "channel": "stable", "model": model,
                                                 "version": version, "percent": 100})
    if r.status_code != 201:
        raise RuntimeError(f"release {model} v{version}: {r.status_code} {r.text}")


async def run_offline_site(
    *,
    admin: Admin,
    server: str,
    transport: httpx.AsyncBaseTransport | None,
    enroll_token: str,
    root_envelope: dict[str, Any],
    fleet: str,
    model: str,
    old: int,
    new: int,
    state_root: Path,
    site_devices: int,
    online_devices: int,
    targets: tuple[str, ...] = ("cpu",),
    on_progress: Callable[[str], None] = lambda _: None,
) -> SiteReport:
    """Run the scenario; ``old`` must be released at 100% and ``new`` published, unreleased."""
    clock = SimClock()
    config = SyncConfig(deadline=120)

    async def enroll(kind: str, i: int) -> Device:
        device = await Device.async_register(
            state_root / f"{kind}-{i:04d}", server=server, enroll_token=enroll_token, platform="linux",
            root_envelope=root_envelope, device_id=f"{kind}-{i:04d}", transport=transport, config=config)
        device.now = clock
        return device

    site = [await enroll("site", i) for i in range(site_devices)]
    online = [await enroll("online", i) for i in range(online_devices)]
    on_progress(f"enrolled {site_devices} site and {online_devices} online devices")

    started = time.perf_counter()
    r = await admin("POST", f"/v1/fleets/{fleet}/channels/stable/pack",
                    json={"model": model, "targets": list(targets), "valid_days": 30})
    if r.status_code != 200:
        raise RuntimeError(f"pack export: {r.status_code} {r.text}")
    pack = state_root / "site.mspack"
    pack.write_bytes(r.content)
    report = SiteReport(site_devices=site_devices, online_devices=online_devices,
                        pack_bytes=len(r.content), pack_seconds=time.perf_counter() - started)
    on_progress(f"exported a {len(r.content):,}-byte pack")

    for device in online:
        await device.async_sync()
    for i, device in enumerate(site, start=1):
        t0 = time.perf_counter()
        result = device.install_pack(pack)  # no transport, no client: the site has no network
        report.install_seconds.append(time.perf_counter() - t0)
        if [(o["model"], o["version"]) for o in result.installed] == [(model, old)]:
            report.site_on_old += 1
        if i % max(1, site_devices // 5) == 0:
            on_progress(f"site: {i}/{site_devices} installed from the pack")

    await _release(admin, fleet, model, new)
    for device in online:
        await device.async_sync()
    clock.advance(OFFLINE_FOR)
    on_progress("a week later: the site comes online")
    for device in site:
        await device.async_sync()
    for device in (*site, *online):
        slot = device.store.slot(model)
        if slot is not None and slot.current.version == new:
            report.converged += 1

    releases = (await admin("GET", f"/v1/releases?fleet={fleet}&channel=stable")).json()
    (old_release,) = [x for x in releases if x["model"] == model and x["version"] == old]
    status = (await admin("GET", f"/v1/releases/{old_release['id']}/status")).json()
    report.installs_from_packs = int(status.get("installs_from_packs", 0))
    return report
