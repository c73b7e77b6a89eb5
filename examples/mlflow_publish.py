"""Publish the latest version of a model registered in MLflow, from a CI job or a registry
hook, with modelsync's Python API (no shell):

    python examples/mlflow_publish.py --tracking-uri file:./mlruns --model detector \\
        --keys keys/ --calibration telemetry.csv --fleet field --percent 10

It finds the registered model's newest version, loads it with MLflow's scikit-learn
flavour, packages it as modelsync model ``--name`` (default: the registered name, lower
case) with the same version number, signs it with the publisher key in ``--keys``,
publishes it, and, given ``--fleet``, releases it. Server and token as for the CLI
(``MODELSYNC_SERVER``, ``MODELSYNC_TOKEN``). Needs ``pip install mlflow-skinny``.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path
from typing import Any

import modelsync


def latest_version(client: Any, name: str) -> Any:
    """The registered model's highest version (MLflow's ModelVersion)."""
    versions = client.search_model_versions(f"name='{name}'")
    if not versions:
        raise modelsync.NotFoundError(f"MLflow has no registered model {name!r}")
    return max(versions, key=lambda v: int(v.version))


def publish_latest(
    *,
    tracking_uri: str,
    registered_name: str,
    keys_dir: Path,
    calibration: Path | None = None,
    name: str | None = None,
    fleet: str | None = None,
    channel: str = "stable",
    percent: float = 100.0,
    server: str | None = None,
    token: str | None = None,
) -> tuple[modelsync.Published, modelsync.Release | None]:
    import mlflow
    import mlflow.sklearn
    import pandas as pd

    from packager.keys import load_private_key, load_root
    from packager.package import build_and_write

    mlflow.set_tracking_uri(tracking_uri)
    found = latest_version(mlflow.MlflowClient(), registered_name)
    model = mlflow.sklearn.load_model(f"models:/{registered_name}/{found.version}")
    name = name or re.sub(r"[^a-z0-9._-]", "-", registered_name.lower())
    rows = pd.read_csv(calibration).to_numpy() if calibration else None
    with tempfile.TemporaryDirectory(prefix="mlflow-publish-") as tmp:
        bundle = build_and_write(
            model, name=name, version=int(found.version), targets=["cpu"],
            keys=[load_private_key(keys_dir / "publisher.key")], root=load_root(keys_dir / "root.json"),
            out_dir=Path(tmp) / "bundle", calibration=rows,
            description=f"MLflow {registered_name} v{found.version} (run {found.run_id})",
        )
        published = modelsync.publish(bundle, server=server, token=token)
    released = None
    if fleet:
        released = modelsync.release(fleet=fleet, channel=channel, model=published.name,
                                     version=published.version, percent=percent, server=server, token=token)
    return published, released


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", required=True, help="MLflow tracking URI, e.g. file:./mlruns")
    parser.add_argument("--model", required=True, help="the MLflow registered model's name")
    parser.add_argument("--name", help="the modelsync model name (default: the registered name)")
    parser.add_argument("--keys", type=Path, required=True,
                        help="key directory with publisher.key and root.json")
    parser.add_argument("--calibration", type=Path, help="CSV of representative rows (recommended)")
    parser.add_argument("--fleet", help="release to this fleet after publishing")
    parser.add_argument("--channel", default="stable", help="the fleet's channel (default: stable)")
    parser.add_argument("--percent", type=float, default=100.0, help="rollout percent (default 100)")
    args = parser.parse_args(argv)
    published, released = publish_latest(
        tracking_uri=args.tracking_uri, registered_name=args.model, keys_dir=args.keys,
        calibration=args.calibration, name=args.name, fleet=args.fleet, channel=args.channel,
        percent=args.percent,
    )
    where = f", released to {released.fleet}/{released.channel} at {released.percent:g}%" if released else ""
    print(f"published {published.name} v{published.version}{where}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
