"""`modelsync device register|sync|status|predict|run` (+ `device parity`, `fleet`, `demo`
from device_sim.cli_engine when present). Thin: each handler calls device_sim.device."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from packager.errors import UsageError

STATE_HELP = "the device's state directory"


def register(sub: Any) -> None:
    device = sub.add_parser("device", help="a simulated field device: register, sync, status, predict")
    dsub = device.add_subparsers(dest="device_command", metavar="ACTION", required=True)

    reg = dsub.add_parser("register", help="enroll with a sync service and create the state directory")
    reg.add_argument("--server", required=True, metavar="URL", help="sync service base URL")
    reg.add_argument("--enroll-token", metavar="TOKEN",
                     help="fleet enrollment token (default: $MODELSYNC_ENROLL_TOKEN)")
    reg.add_argument("--state", required=True, type=Path, help=STATE_HELP)
    reg.add_argument("--platform", required=True, choices=["android", "ios", "linux"],
                     help="the platform it simulates: picks the artifact target")
    reg.add_argument("--root", required=True, type=Path, metavar="ROOT_JSON",
                     help="the root.json shipped with the app: the device's first trust anchor")
    reg.add_argument("--device-id", help="default: a random dev-… id")
    reg.add_argument("--channel", default="stable", help="the fleet's channel to follow (default: stable)")
    reg.add_argument("--metered", action="store_true", help="defer large downloads unless urgent")
    reg.add_argument("--metered-max-bytes", type=int, default=1_000_000, metavar="N",
                     help="with --metered: largest download not deferred (default 1000000)")
    reg.add_argument("--storage-budget", type=int, metavar="BYTES", help="most bytes models may take")
    reg.add_argument("--force", action="store_true",
                     help="replace a device already in --state: retires its id on the server first")
    reg.add_argument("--json", action="store_true", help="print the new identity (or the error) as JSON")
    reg.set_defaults(handler=_register)

    syn = dsub.add_parser("sync", help="check for and install new models (verified), send reports")
    syn.add_argument("--state", required=True, type=Path, help=STATE_HELP)
    mode = syn.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="one sync (the default)")
    mode.add_argument("--loop", action="store_true", help="poll forever: jittered, backing off on errors")
    syn.add_argument("--interval", type=float, default=300.0, metavar="S", help="poll interval (--loop)")
    syn.add_argument("--iterations", type=int, metavar="N", help="stop --loop after N syncs")
    syn.add_argument("--deadline", type=float, default=300.0, metavar="S", help="overall limit per sync")
    syn.add_argument("--json", action="store_true",
                     help="print the outcome as JSON (one object per sync): status, exit_code, models, why")
    syn.set_defaults(handler=_sync)

    st = dsub.add_parser("status", help="identity, trusted versions, installed models, queued reports")
    st.add_argument("--state", required=True, type=Path, help=STATE_HELP)
    st.add_argument("--json", action="store_true", help="print the status (or the error) as JSON")
    st.set_defaults(handler=_status)

    ipk = dsub.add_parser("install-pack", help="install from an offline pack file (no network needed)")
    ipk.add_argument("pack", type=Path, help="the .mspack file (`modelsync pack export` wrote it)")
    ipk.add_argument("--state", required=True, type=Path, help=STATE_HELP)
    ipk.add_argument("--json", action="store_true", help="print the outcome (or the error) as JSON")
    ipk.set_defaults(handler=_install_pack)

    pred = dsub.add_parser("predict", help="score telemetry rows with the installed model")
    pred.add_argument("--state", required=True, type=Path, help=STATE_HELP)
    pred.add_argument("--csv", required=True, type=Path, help="rows with a header naming the features")
    pred.add_argument("--model", help="model name (needed when several are installed)")
    pred.add_argument("--out", type=Path, help="write label,score per row to this CSV")
    pred.add_argument("--json", action="store_true", help="print the counts (or the error) as JSON")
    pred.set_defaults(handler=_predict)

    run = dsub.add_parser("run", help="live like a field device: sync on a schedule, score telemetry between")
    run.add_argument("--state", required=True, type=Path, help=STATE_HELP)
    run.add_argument("--csv", type=Path, help="telemetry to score after each sync")
    run.add_argument("--interval", type=float, default=300.0, metavar="S", help="seconds between syncs")
    run.add_argument("--iterations", type=int, metavar="N", help="stop after N rounds")
    run.add_argument("--deadline", type=float, default=300.0, metavar="S", help="overall limit per sync")
    run.set_defaults(handler=_run)

    try:
        from device_sim import cli_engine
    except ImportError:  # the engine engineer's commands (parity, fleet, demo) are optional here
        return
    cli_engine.register_device_commands(dsub)
    cli_engine.register_top(sub)


def _config(args: argparse.Namespace) -> Any:
    from device_sim.transfer import SyncConfig

    if args.deadline <= 0:
        raise UsageError("--deadline must be positive")
    return SyncConfig(deadline=args.deadline)


def _register(args: argparse.Namespace) -> int:
    from device_sim.device import Device
    from device_sim.store import Store
    from packager.keys import read_json

    token = args.enroll_token or os.environ.get("MODELSYNC_ENROLL_TOKEN")
    if not token:
        raise UsageError("give --enroll-token or set MODELSYNC_ENROLL_TOKEN")
    device = Device.register(args.state, server=args.server, enroll_token=token, platform=args.platform,
                             root_envelope=read_json(args.root), device_id=args.device_id,
                             channel=args.channel, strict=True, force=args.force)
    ident = device.store.identity.model_copy(update={
        "metered": args.metered, "metered_max_bytes": args.metered_max_bytes,
        "storage_budget_bytes": args.storage_budget,
    })
    Store.open(args.state).save_identity(ident)
    if args.json:
        from packager.cli_common import print_json

        print_json({k: v for k, v in ident.model_dump(mode="json").items() if k != "token"})
        return 0
    print(f"registered {ident.device_id} in fleet {ident.fleet}/{ident.channel} "
          f"({ident.platform} → {ident.target}); state in {args.state}")
    return 0


def _print_result(result: Any) -> None:
    from rich.console import Console

    console = Console()
    head = f"[bold]{result.status}[/]"
    if result.root_version is not None:
        head += f"  root v{result.root_version}"
    if result.index_version is not None:
        head += f"  index v{result.index_version}"
    console.print(head + f"  {result.wire_bytes:,} bytes  reports sent: {result.reports_sent}")
    for o in result.outcomes:
        colour = {"installed": "green", "deferred": "yellow"}.get(o.outcome, "red")
        why = f" ({o.reason}: {o.detail})" if o.reason else ""
        console.print(f"  [{colour}]{o.outcome}[/] {o.model} v{o.version} via {o.transfer}{why}",
                      highlight=False)
    if result.error:
        console.print(f"  [red]{result.error_code}[/]: {result.error}", highlight=False)


def _sync(args: argparse.Namespace) -> int:
    """Exit code by outcome (device_sim.sync_outcome, docs/device.md "Exit codes")."""
    import asyncio
    import json

    from device_sim import sync_outcome
    from device_sim.device import Device

    def report(result: Any) -> None:
        if args.json:
            print(json.dumps(sync_outcome.as_json(result)), flush=True)
            return
        _print_result(result)
        code = sync_outcome.exit_code(result)
        for line in sync_outcome.why_nothing(result):
            print(f"  why: {line}")
        print(f"  {sync_outcome.word(code)} (exit {code})")

    with _download_bar(enabled=not args.json) as progress:
        device = Device(args.state, config=_config(args), progress=progress)
        if args.loop:
            asyncio.run(device.async_run(args.interval, args.iterations, on_result=report))
            return 0
        result = device.sync()
    report(result)
    return sync_outcome.exit_code(result)


@contextmanager
def _download_bar(enabled: bool = True) -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar per artifact download (transient: it leaves the summary behind);
    none under --json, whose output is the JSON alone."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    bars = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    transient=True, disable=not enabled)
    tasks: dict[str, Any] = {}

    def update(what: str, done: int, total: int) -> None:
        if what not in tasks:
            tasks[what] = bars.add_task(what, total=total)
        bars.update(tasks[what], completed=done)

    with bars:
        yield update


def _status(args: argparse.Namespace) -> int:
    from rich.table import Table

    from device_sim.device import Device
    from packager.cli_common import console as make_console

    st = Device(args.state).status()
    if args.json:
        import dataclasses

        from packager.cli_common import print_json

        print_json(dataclasses.asdict(st))
        return 0
    console = make_console()  # unbounded in a pipe: table cells are never cut
    console.print(f"[bold]{st.device_id}[/]  fleet {st.fleet}/{st.channel}  {st.platform} → {st.target}  "
                  f"onnxruntime {st.ort_version}  server {st.server}", highlight=False)
    console.print(f"trusted root v{st.root_version}, index "
                  f"{'v' + str(st.index_version) if st.index_version else 'none yet'}, "
                  f"{st.queued_reports} report(s) queued"
                  + (f", {st.refused_reports} refused by the server" if st.refused_reports else ""),
                  highlight=False)
    table = Table(title="installed models")
    for col in ("model", "current", "previous", "serving", "target", "installed"):
        table.add_column(col)
    for m in st.models:
        serving = f"v{m.serving}" if m.serving is not None else "[red]none[/]"
        table.add_row(m.name, f"v{m.current}", f"v{m.previous}" if m.previous else "-", serving, m.target,
                      m.installed_at)
    console.print(table)
    if st.failed:
        console.print("never retried: " + ", ".join(f"{k} v{v}" for k, vs in st.failed.items() for v in vs))
    return 0


def _install_pack(args: argparse.Namespace) -> int:
    """0: the pack was accepted and every model it offered this device installed (or none
    was newer); VERIFICATION: a model of it failed its checks. A refused pack raises: one
    line, the exit code of its error class (docs/cli.md)."""
    import dataclasses

    from device_sim.device import Device
    from packager import exit_codes

    if not args.pack.is_file():
        raise UsageError(f"no pack file {args.pack}")
    result = Device(args.state).install_pack(args.pack)
    failed = [o for o in result.outcomes if o["outcome"] == "failed"]
    code = exit_codes.VERIFICATION if failed else exit_codes.OK
    if args.json:
        from packager.cli_common import print_json

        out = dataclasses.asdict(result)
        out["skipped"] = [dataclasses.asdict(s) for s in result.skipped]
        print_json({**out, "exit_code": code})
        return code
    print(f"pack {result.pack_id[:8]}… index v{result.index_version}, valid to {result.expires}; "
          f"root v{result.root_version}")
    for o in result.outcomes:
        why = f" ({o['reason']}: {o['detail']})" if o["outcome"] == "failed" else ""
        print(f"  {o['outcome']} {o['model']} v{o['version']}{why}")
    for s in result.skipped:
        print(f"  skipped {s.model} v{s.version}: {s.detail}")
    if not result.outcomes:
        print("  nothing newer for this device in the pack")
    print("  reports are queued for the next online sync")
    return code


def _read_csv(path: Path) -> Any:
    import pandas as pd

    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        raise UsageError(f"file not found: {path}") from None
    except (ValueError, OSError) as exc:
        raise UsageError(f"{path}: cannot read CSV ({exc})") from None


def _predict(args: argparse.Namespace) -> int:
    from device_sim.device import Device

    device = Device(args.state)
    frame = _read_csv(args.csv)
    pred = device.predict(frame, model=args.model)
    if args.json:
        from packager.cli_common import print_json

        out = str(args.out) if args.out else None
        print_json({"rows": len(pred), "anomalies": pred.anomalies, "out": out})
    else:
        share = 100 * pred.anomalies / max(len(pred), 1)
        print(f"{len(pred)} rows, {pred.anomalies} anomalous ({share:.1f}%)")
    if args.out:
        import csv

        with open(args.out, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["label", "score"])
            writer.writerows(zip(pred.labels.tolist(), pred.scores.tolist(), strict=True))
        if not args.json:
            print(f"wrote {args.out}")
    device.queue_stats()  # sent with the next sync's reports
    return 0


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from device_sim.device import Device

    device = Device(args.state, config=_config(args))
    frame = _read_csv(args.csv) if args.csv else None

    def after(result: Any) -> None:
        _print_result(result)
        if frame is not None and device.store.model_names():
            pred = device.predict(frame)
            print(f"  scored {len(pred)} rows: {pred.anomalies} anomalous")

    asyncio.run(device.async_run(args.interval, args.iterations, on_result=after))
    return 0
