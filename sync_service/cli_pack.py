"""``modelsync pack export|inspect``: offline packs for devices that never see the service
(docs/offline.md). ``export`` asks the service (a publisher token with scope release);
``inspect`` reads a pack file and says what is inside, checking nothing it cannot (the
device checks the signatures against its own root)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from packager.errors import UsageError
from sync_service.cli_common import add_server_args, positive_int

TARGETS = ("android-nnapi", "ios-coreml", "cpu")


def _days(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if not 1 <= n <= 365:
        raise argparse.ArgumentTypeError(f"must be within 1..365 days, got {value}")
    return n


def register_pack(sub: Any) -> None:
    pack = sub.add_parser("pack", help="offline packs: export from the service, inspect a pack file")
    verbs = pack.add_subparsers(dest="verb", metavar="VERB", required=True)

    exp = verbs.add_parser("export", help="write one file with what a channel's devices need, offline")
    exp.add_argument("--fleet", required=True, help="the fleet")
    exp.add_argument("--channel", default="stable", help="the fleet's channel (default: stable)")
    exp.add_argument("--model", help="only this model (default: every model of the channel)")
    exp.add_argument("--target", action="append", choices=TARGETS, dest="targets",
                     help="only this target's artifacts (repeat; default: all targets)")
    exp.add_argument("--from-root", type=positive_int, default=1, metavar="N",
                     help="the oldest root version the devices hold (default 1: the whole chain)")
    exp.add_argument("--valid-days", type=_days, default=30, metavar="D",
                     help="days the pack may be installed from now (default 30; the service caps it)")
    exp.add_argument("-o", "--out", type=Path, required=True, help="the pack file to write (.mspack)")
    add_server_args(exp, token_help="file holding a publisher token (scope release)")
    exp.set_defaults(handler=_export)

    ins = verbs.add_parser("inspect", help="what a pack holds, its validity window, the devices it serves")
    ins.add_argument("pack", type=Path, help="the .mspack file")
    ins.add_argument("--json", action="store_true", help="print it as JSON")
    ins.set_defaults(handler=_inspect)


def _export(args: argparse.Namespace) -> int:
    from sync_service.client import ServiceClient, resolve_server, resolve_token

    out: Path = args.out
    if out.exists() and out.is_dir():
        raise UsageError(f"{out} is a directory")
    if not out.parent.exists():
        raise UsageError(f"{out.parent} does not exist")
    body: dict[str, Any] = {"from_root": args.from_root, "valid_days": args.valid_days}
    if args.model:
        body["model"] = args.model
    if args.targets:
        body["targets"] = sorted(set(args.targets))
    path = f"/v1/fleets/{args.fleet}/channels/{args.channel}/pack"
    tmp = out.with_name(f".{out.name}.part-{os.getpid()}")
    with ServiceClient(resolve_server(args.server), resolve_token(args.token_file), timeout=300.0) as client:
        response = client.request("POST", path, json=body)
        try:
            tmp.write_bytes(response.content)
            os.replace(tmp, out)  # never a half-written pack under the name a technician carries
        finally:
            tmp.unlink(missing_ok=True)
    summary = _summary(out)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"wrote {out} ({summary['size']} bytes): {args.fleet}/{args.channel} index "
          f"v{summary['index_version']}, valid {summary['valid_from']} to {summary['expires']}")
    for m in summary["models"]:
        targets = ", ".join(a["target"] for a in m["artifacts"]) or "no artifacts"
        print(f"  {m['model']} v{m['version']}: {targets}")
    return 0


def _summary(path: Path) -> dict[str, Any]:
    """What ``inspect`` prints: read from the pack's members, unverified (the device checks)."""
    from packager.manifest import ModelManifest, OfflineIndex
    from packager.offline_pack import PackReader

    with PackReader(path) as reader:
        header = reader.header
        for member in header.members:
            reader.read(member)  # the container itself must be whole (check P.1)
        (index_member,) = header.of_kind("offline-index")
        index = OfflineIndex.model_validate(json.loads(reader.read(index_member))["signed"])
        manifests = {m.sha256: json.loads(reader.read(m))["signed"] for m in header.of_kind("manifest")}
        held = {m.sha256 for m in header.of_kind("artifact")}
        roots = sorted(json.loads(reader.read(m))["signed"]["version"] for m in header.of_kind("root"))
    models: list[dict[str, Any]] = []
    for name, entries in sorted(index.models.items()):
        for entry in entries:
            signed = manifests.get(entry.manifest.sha256)
            if signed is None:
                continue
            manifest = ModelManifest.model_validate(signed)
            models.append({
                "model": name,
                "version": entry.version,
                "rollout_percent": entry.rollout.percent,
                "artifacts": [
                    {"target": a.target, "precision": a.precision, "length": a.length,
                     "ort_version": a.ort_version, "min_runtime": ".".join(a.ort_version.split(".")[:2])}
                    for a in manifest.artifacts if a.sha256 in held
                ],
            })
    artifact_bytes = sum(m.length for m in header.of_kind("artifact"))
    stored_bytes = sum(m.stored_length for m in header.of_kind("artifact"))
    return {
        "pack": str(path),
        "size": header.size,
        "fleet": index.fleet,
        "channel": index.channel,
        "index_version": index.version,
        "pack_id": index.pack_id,
        "valid_from": index.valid_from,
        "expires": index.expires,
        "roots": roots,
        "models": models,
        "artifact_bytes": artifact_bytes,
        "artifact_stored_bytes": stored_bytes,
        "members": len(header.members),
    }


def _inspect(args: argparse.Namespace) -> int:
    from packager.keys import describe_expiry

    summary = _summary(args.pack)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    from packager.cli_common import console

    c = console()
    c.print(f"[bold]{summary['pack']}[/bold]: {summary['size']} bytes, {summary['members']} members")
    c.print(f"fleet/channel  {summary['fleet']}/{summary['channel']} (index v{summary['index_version']}, "
            f"pack {summary['pack_id'][:8]}…)")
    c.print(f"valid          {summary['valid_from']} to {summary['expires']} "
            f"(expires {describe_expiry(summary['expires'])})")
    roots = summary["roots"]
    c.print(f"root chain     v{roots[0]}..v{roots[-1]}: devices holding root v{roots[0]} or newer"
            if roots else "root chain     none")
    for m in summary["models"]:
        c.print(f"model          {m['model']} v{m['version']} (rollout {m['rollout_percent']:g}%)")
        for a in m["artifacts"]:
            c.print(f"  {a['target']:<14} {a['precision']:<5} {a['length']:>10} bytes  "
                    f"onnxruntime >= {a['min_runtime']}")
        if not m["artifacts"]:
            c.print("  no artifacts: no device can install it from this pack")
    return 0
