"""What the release console reads and renders, at fleet size: the latency of a release's
status and its adoption chart, a page of the device list (first, a later page, a search),
one device, its report history and the audit log as JSON; and the console's pages built
from them (the release page with its chart, device list pages, a device, the audit log), with
``--devices`` registered devices (10,000 by default) and their reports.

The service runs in this process (httpx's ASGI transport: the route, the database and the
JSON, no sockets), on SQLite in a temporary directory, or on ``--database-url`` (an empty
PostgreSQL database or schema). Devices and their reports are written straight into the
database (the report route's own validation is measured elsewhere); the releases, the
model and the audit records come from the API, as in use.

    .venv/bin/python benchmarks/bench_release_reads.py --out benchmarks/results/release_reads.json

Each read is timed ``--repeat`` times after one warm-up; the median and the slowest are
printed and written.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlmodel import Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FLEET = "bench"
MODEL = "pump-iforest"


def make_bundle(work: Path, keys: Path, version: int) -> Path:
    from packager.detectors import IsolationForestDetector
    from packager.keys import load_private_key, load_root
    from packager.package import build_and_write
    from packager.telemetry import generate_telemetry

    data = generate_telemetry(1000, seed=version)
    model = IsolationForestDetector(n_estimators=10, random_state=version).fit(data.frame)
    return build_and_write(
        model, name=MODEL, version=version, targets=("cpu",),
        keys=[load_private_key(keys / "publisher.key")], root=load_root(keys / "root.json"),
        out_dir=work / f"bundle-v{version}", calibration=data.frame.to_numpy(),
    )


def seed_fleet(app: Any, fleet_id: int, devices: int, rng: random.Random) -> int:
    """``devices`` devices; each reported installing v1, ~30% v2, ~2% a failure on v2."""
    from sync_service.models import Device, DeviceEvent

    start = datetime.now(UTC) - timedelta(hours=6)
    events = 0
    with Session(app.state.engine) as session:
        for i in range(devices):
            device_id = f"dev-{i:06d}"
            session.add(Device(id=device_id, fleet_id=fleet_id, platform=rng.choice(["android", "ios"]),
                               app_version="3.1", ort_version="1.24.3"))
            at = start + timedelta(seconds=rng.uniform(0, 3600))
            rows = [("installed", 1, None, at)]
            roll = rng.random()
            if roll < 0.30:
                rows.append(("installed", 2, None, at + timedelta(seconds=rng.uniform(3600, 18000))))
            elif roll < 0.32:
                rows.append(("install_failed", 2, "sha256_mismatch", at + timedelta(seconds=4000)))
            for n, (kind, version, reason, when) in enumerate(rows):
                session.add(DeviceEvent(event_id=f"{device_id}-{n}", device_id=device_id, kind=kind,
                                        model_name=MODEL, model_version=version, reason=reason,
                                        at=when, received_at=when))
                events += 1
            if i % 2000 == 1999:
                session.commit()
        session.commit()
    return events


async def time_reads(client: httpx.AsyncClient, reads: dict[str, str], repeat: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, path in reads.items():
        (await client.get(path)).raise_for_status()  # warm-up
        took = []
        size = 0
        for _ in range(repeat):
            t0 = time.perf_counter()
            r = await client.get(path)
            took.append((time.perf_counter() - t0) * 1000)
            r.raise_for_status()
            size = len(r.content)
        out[label] = {"path": path, "median_ms": round(statistics.median(took), 2),
                      "max_ms": round(max(took), 2), "bytes": size}
        print(f"{label:>22}: median {statistics.median(took):7.2f} ms, max {max(took):7.2f} ms, "
              f"{size:>9,} B  {path}", flush=True)
    return out


async def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from packager.keys import init_keys
    from sync_service import crud
    from sync_service.client import write_bundle_tar
    from sync_service.console import sessions
    from sync_service.core.config import Settings
    from sync_service.main import create_app

    keys = work / "keys"
    init_keys(keys)
    if args.database_url:
        from sync_service.db import make_engine, migrate

        engine = make_engine(args.database_url)
        migrate(engine)
        engine.dispose()
    app = create_app(Settings(data_dir=work / "data", database_url=args.database_url,
                              root_path=keys / "root.json", index_key_path=keys / "index.key",
                              storage_backend="local"))
    with Session(app.state.engine) as session:
        crud.create_fleet(session=session, name=FLEET)
        token, _ = crud.create_token(session=session, kind="publisher", name="bench",
                                     scopes=("publish", "release", "admin"))
        session.commit()
        row = crud.get_token(session=session, plain=token)
        assert row is not None and row.id is not None
        login, _ = sessions.open_session(session, token_id=row.id, lifetime=timedelta(hours=1))
        fleet = crud.get_fleet(session=session, name=FLEET)
        assert fleet is not None and fleet.id is not None
        fleet_id = fleet.id
    t0 = time.perf_counter()
    events = seed_fleet(app, fleet_id, args.devices, random.Random(7))
    print(f"seeded {args.devices:,} devices and {events:,} reports in {time.perf_counter() - t0:.1f} s",
          flush=True)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench.test",
                                 headers={"Authorization": f"Bearer {token}"},
                                 cookies={sessions.COOKIE: login}, timeout=120) as client:
        for version in (1, 2):
            tar = work / f"v{version}.tar"
            write_bundle_tar(make_bundle(work, keys, version), tar)
            (await client.post("/v1/bundles", content=tar.read_bytes())).raise_for_status()
        release: dict[str, Any] = {}
        for version, percent in ((1, 100), (2, 5)):
            r = await client.post("/v1/releases", json={"fleet": FLEET, "channel": "stable", "model": MODEL,
                                                        "version": version, "percent": percent})
            r.raise_for_status()
            release = r.json()
        rid = release["id"]
        for percent in (10, 20, 30):
            (await client.patch(f"/v1/releases/{rid}", json={"percent": percent})).raise_for_status()
        middle = f"dev-{args.devices // 2 - 1:06d}"
        reads = {
            "release_status": f"/v1/releases/{rid}/status",
            "adoption_60_points": f"/v1/releases/{rid}/adoption?points=60",
            "devices_first_page": f"/v1/devices?fleet={FLEET}&limit=50",
            "devices_middle_page": f"/v1/devices?fleet={FLEET}&limit=50&after={middle}",
            "devices_search": f"/v1/devices?fleet={FLEET}&q=77&limit=50",
            "one_device": f"/v1/devices/dev-{args.devices // 3:06d}",
            "device_history": f"/v1/devices/dev-{args.devices // 3:06d}/history?limit=50",
            "audit_log": "/v1/audit?limit=50",
            # the console's pages: the same reads, rendered (sync_service/console/)
            "page_release": f"/console/releases/{rid}",
            "page_devices": f"/console/devices?fleet={FLEET}",
            "page_devices_middle": f"/console/devices?fleet={FLEET}&after={middle}",
            "page_devices_search": f"/console/devices?fleet={FLEET}&q=77",
            "page_device": f"/console/devices/dev-{args.devices // 3:06d}",
            "page_audit": "/console/audit",
        }
        timings = await time_reads(client, reads, args.repeat)
    app.state.engine.dispose()
    return {"devices": args.devices, "reports": events,
            "database": "postgresql" if args.database_url else "sqlite", "repeat": args.repeat,
            "reads": timings}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--database-url", help="an empty PostgreSQL database (default: SQLite in a temp dir)")
    parser.add_argument("--out", type=Path, help="write the figures here (JSON)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-release-reads-") as tmp:
        result = asyncio.run(measure(args, Path(tmp)))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
