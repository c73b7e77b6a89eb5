"""Offline packs: what a technician carries and how long a device takes to install it.

    .venv/bin/python benchmarks/bench_offline.py --out benchmarks/results/offline.json

One real model (IsolationForest, ``--trees`` trees, packaged for android-nnapi, ios-coreml
and cpu) published to an in-process service (SQLite, local blobs). Measured:

* sizes: a pack of that one model with all three targets, and with ``cpu`` only, against
  the artifacts' own zstd size as the manifest records it (what a network sync downloads)
  and their raw size; the difference is the pack's overhead (roots, snapshot, manifests,
  header);
* install time from a pack (P.1 container, root walk, P.2, manifest, artifact hash, golden
  vectors, atomic install) per device, median and maximum over the site's devices;
* the offline-site scenario (device_sim/offline_site.py) with ``--site`` devices installing
  offline and ``--online`` devices syncing, a week's jump on the devices' clock, and the
  count of devices converged at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from sqlmodel import Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from device_sim.offline_site import SITE_INDEX_LIFETIME, run_offline_site

FLEET = "site-bench"
MODEL = "pump-iforest"
TARGETS = ("android-nnapi", "ios-coreml", "cpu")


def make_bundle(workdir: Path, keys: Path, version: int, trees: int) -> Path:
    from packager.detectors import IsolationForestDetector
    from packager.keys import load_private_key, load_root
    from packager.package import build_and_write
    from packager.telemetry import generate_telemetry

    data = generate_telemetry(4000, seed=version)
    model = IsolationForestDetector(n_estimators=trees, random_state=version).fit(data.frame)
    return build_and_write(
        model, name=MODEL, version=version, targets=TARGETS,
        keys=[load_private_key(keys / "publisher.key")], root=load_root(keys / "root.json"),
        out_dir=workdir / f"bundle-v{version}", calibration=data.frame.to_numpy(),
    )


def tar_of(bundle: Path, work: Path) -> bytes:
    """The bundle as `modelsync publish` uploads it (sync_service.client.write_bundle_tar)."""
    from sync_service.client import write_bundle_tar

    dest = work / f"{bundle.parent.name}.tar"
    write_bundle_tar(bundle, dest)
    return dest.read_bytes()


async def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from packager.keys import init_keys
    from sync_service import crud
    from sync_service.core.config import Settings
    from sync_service.main import create_app

    keys = work / "keys"
    init_keys(keys)
    t0 = time.perf_counter()
    bundles = [make_bundle(work, keys, v, args.trees) for v in (1, 2)]
    took = time.perf_counter() - t0
    print(f"packaged two {args.trees}-tree models for {len(TARGETS)} targets in {took:.1f} s")
    app = create_app(Settings(data_dir=work / "data", root_path=keys / "root.json",
                              index_key_path=keys / "index.key", storage_backend="local",
                              index_lifetime=SITE_INDEX_LIFETIME))
    with Session(app.state.engine) as session:
        crud.create_fleet(session=session, name=FLEET)
        token, _ = crud.create_token(session=session, kind="publisher", name="bench",
                                     scopes=("publish", "release", "admin"))
        session.commit()
        fleet = crud.get_fleet(session=session, name=FLEET)
        assert fleet is not None
        enroll, _ = crud.create_token(session=session, kind="enrollment", name="site", fleet_id=fleet.id)
        session.commit()
    transport = httpx.ASGITransport(app=app)
    out: dict[str, Any] = {"trees": args.trees, "targets": list(TARGETS)}
    async with httpx.AsyncClient(transport=transport, base_url="http://bench.test",
                                 headers={"Authorization": f"Bearer {token}"}, timeout=120) as client:
        async def admin(method: str, path: str, **kw: Any) -> httpx.Response:
            return await client.request(method, path, **kw)

        published = []
        for bundle in bundles:
            r = await admin("POST", "/v1/bundles", content=tar_of(bundle, work))
            r.raise_for_status()
            published.append(r.json())
        r = await admin("POST", "/v1/releases", json={"fleet": FLEET, "channel": "stable", "model": MODEL,
                                                      "version": 1, "percent": 100})
        r.raise_for_status()
        manifest = json.loads((bundles[0] / "manifest.json").read_text())["signed"]
        sizes: dict[str, Any] = {}
        for label, targets in (("three_targets", list(TARGETS)), ("cpu_only", ["cpu"])):
            r = await admin("POST", f"/v1/fleets/{FLEET}/channels/stable/pack",
                            json={"model": MODEL, "targets": targets})
            r.raise_for_status()
            chosen = [a for a in manifest["artifacts"] if a["target"] in targets]
            zstd = sum(a["compressed"]["length"] for a in chosen)
            raw = sum(a["length"] for a in chosen)
            sizes[label] = {
                "pack_bytes": len(r.content), "artifacts_zstd_bytes": zstd, "artifacts_raw_bytes": raw,
                "pack_over_zstd": round(len(r.content) / zstd, 4),
                "overhead_bytes": len(r.content) - zstd,
            }
            print(f"{label:>13}: pack {len(r.content):>9,} B, artifacts zstd {zstd:>9,} B "
                  f"(x{len(r.content) / zstd:.3f}), raw {raw:,} B")
        out["sizes"] = sizes
        root = json.loads((keys / "root.json").read_text())
        report = await run_offline_site(
            admin=admin, server="http://bench.test", transport=transport, enroll_token=enroll,
            root_envelope=root, fleet=FLEET, model=MODEL, old=1, new=2, state_root=work / "fleet",
            site_devices=args.site, online_devices=args.online, targets=TARGETS,
            on_progress=lambda line: print(f"  {line}", flush=True),
        )
        out["site"] = report.summary()
    app.state.engine.dispose()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", type=int, default=200, help="IsolationForest trees (default 200)")
    parser.add_argument("--site", type=int, default=100, help="site devices installing from the pack")
    parser.add_argument("--online", type=int, default=100, help="online devices")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON result here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-offline-") as tmp:
        result = asyncio.run(measure(args, Path(tmp)))
    site = result["site"]
    print(f"install from pack: median {site['install_from_pack_median_s'] * 1000:.1f} ms, "
          f"max {site['install_from_pack_max_s'] * 1000:.1f} ms over {site['site_devices']} devices")
    print(f"converged on v2: {site['converged_on_new']}/{site['site_devices'] + site['online_devices']}; "
          f"service counts {site['service_installs_from_packs']} installs from packs")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
