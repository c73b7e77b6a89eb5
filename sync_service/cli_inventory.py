"""``modelsync models list|show`` and ``modelsync devices list|show|retire``: what a
service holds, read over HTTP with a publisher token (server and token as for ``publish``).
Each prints a table, or the server's JSON under ``--json``."""

from __future__ import annotations

import argparse
from typing import Any

from sync_service.cli_common import add_server_args, positive_int, print_table


def register_inventory(sub: Any) -> None:
    models = sub.add_parser("models", help="published models and their versions (over HTTP)")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    mlist = msub.add_parser("list", help="every published model with its versions")
    add_server_args(mlist, token_help="file holding a publisher token (any scope)")
    mlist.set_defaults(handler=_models_list)
    mshow = msub.add_parser("show", help="one published version: manifest hash and artifacts")
    mshow.add_argument("name", help="the model's name")
    mshow.add_argument("version", type=int, help="the version")
    add_server_args(mshow, token_help="file holding a publisher token (any scope)")
    mshow.set_defaults(handler=_models_show)

    devices = sub.add_parser("devices", help="registered devices: list, show, retire (over HTTP)")
    dsub = devices.add_subparsers(dest="devices_command", metavar="ACTION", required=True)
    dlist = dsub.add_parser("list", help="registered devices, by id")
    dlist.add_argument("--fleet", help="only this fleet's devices")
    dlist.add_argument("--search", metavar="TEXT", help="only devices whose id contains TEXT")
    dlist.add_argument("--after", metavar="ID", help="the page after this device id (ids are sorted)")
    dlist.add_argument("--limit", type=positive_int, help="at most this many devices (default 1000)")
    add_server_args(dlist, token_help="file holding a publisher token (any scope)")
    dlist.set_defaults(handler=_devices_list)
    dshow = dsub.add_parser("show", help="one device: identity, last seen, installed versions, failures")
    dshow.add_argument("device_id", help="the device's id (see `devices list`)")
    add_server_args(dshow, token_help="file holding a publisher token (any scope)")
    dshow.set_defaults(handler=_devices_show)
    dret = dsub.add_parser("retire", help="revoke a device's tokens: it can no longer sync or report")
    dret.add_argument("device_id", help="the device's id")
    add_server_args(dret, token_help="file holding a publisher token with scope admin")
    dret.set_defaults(handler=_devices_retire)


def _get(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> Any:
    from sync_service.client import ServiceClient, resolve_server, resolve_token

    with ServiceClient(resolve_server(args.server), resolve_token(args.token_file)) as api:
        return api.json(method, path, **kwargs)


def _emit(args: argparse.Namespace, data: Any, title: str, columns: list[str], rows: list[list[str]]) -> int:
    from packager.cli_common import print_json

    if args.json:
        print_json(data)
    else:
        print_table(title, columns, rows)
    return 0


def _where(args: argparse.Namespace) -> dict[str, Any]:
    from sync_service.client import resolve_server, resolve_token

    return {"server": resolve_server(args.server), "token": resolve_token(args.token_file)}


def _models_list(args: argparse.Namespace) -> int:
    import dataclasses

    from modelsync.api import list_models

    data = [dataclasses.asdict(m) for m in list_models(**_where(args))]
    rows = [[m["name"], ", ".join(str(v) for v in m["versions"]), str(m["latest"])] for m in data]
    return _emit(args, data, "models", ["model", "versions", "latest"], rows)


def _models_show(args: argparse.Namespace) -> int:
    data = _get(args, "GET", f"/v1/models/{args.name}/versions/{args.version}")
    rows = [
        [a["target"], a["precision"], f"{a['length']:,}", " → ".join(a["ep_plan"]["providers"]),
         f"{a['parity']['max_abs_score_diff']:.2g}", a["sha256"]]
        for a in data["artifacts"]
    ]
    title = (f"{data['name']} v{data['version']} (manifest {data['manifest_sha256']}, {data['created']}, "
             f"signed by {', '.join(k[:12] for k in data['publisher_keyids'])})")
    columns = ["target", "precision", "bytes", "providers", "parity max |Δ|", "sha256"]
    return _emit(args, data, title, columns, rows)


def _device_row(d: dict[str, Any]) -> list[str]:
    return [d["device_id"], d["fleet"], d["platform"], d["ort_version"], d["last_seen"],
            "retired" if d["retired"] else "active"]


DEVICE_COLUMNS = ["device", "fleet", "platform", "onnxruntime", "last seen", "state"]


def _devices_list(args: argparse.Namespace) -> int:
    import dataclasses

    from modelsync.api import list_devices

    data = [dataclasses.asdict(d) for d in list_devices(
        fleet=args.fleet, search=args.search, after=args.after, limit=args.limit, **_where(args)
    )]
    return _emit(args, data, "devices", DEVICE_COLUMNS, [_device_row(d) for d in data])


def _devices_show(args: argparse.Namespace) -> int:
    data = _get(args, "GET", f"/v1/devices/{args.device_id}")
    rows = [[k, str(v)] for k, v in zip(DEVICE_COLUMNS, _device_row(data), strict=True)]
    rows += [[f"installed {m}", f"v{v}"] for m, v in sorted(data["installed"].items())]
    rows += [[f"failures: {r}", str(n)] for r, n in sorted(data["failures"].items())]
    return _emit(args, data, f"device {data['device_id']}", ["", ""], rows)


def _devices_retire(args: argparse.Namespace) -> int:
    data = _get(args, "POST", f"/v1/devices/{args.device_id}/retire")
    if args.json:
        from packager.cli_common import print_json

        print_json(data)
    else:
        print(f"retired {data['device_id']} of fleet {data['fleet']}: its tokens are revoked")
    return 0
