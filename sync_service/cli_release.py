"""``modelsync release create|set|halt|resume|promote|list|status|rollback|audit`` against a sync service.

A release is named by its id or by fleet, channel (and model, when a channel releases
several): the newest release there in the state the action applies to.

Token and server as for ``publish`` (sync_service/client.py). ``rollback`` runs on the
release engineer's machine: it re-signs an old bundle's manifest under a new, higher version
with the offline publisher key, publishes it (the artifacts are the old ones, so the service
stores nothing but the new manifest and devices holding them download nothing else), and
releases it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from packager.errors import UsageError
from sync_service.cli_common import add_server_args, positive_int, print_table


def _common(parser: argparse.ArgumentParser) -> None:
    add_server_args(parser, token_help="file holding a publisher token (scope release)")


def _percent(value: str) -> float:
    try:
        p = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 0 <= p <= 100:
        raise argparse.ArgumentTypeError(f"percent must be within 0..100, got {value}")
    return p


def _selector(parser: argparse.ArgumentParser) -> None:
    """A release named by its id, or by fleet and channel (and model, when several)."""
    parser.add_argument(
        "release_id", type=positive_int, nargs="?", metavar="RELEASE_ID",
        help="the release's id (see `release list`); or name it with --fleet/--channel",
    )
    parser.add_argument("--fleet", help="the fleet whose channel holds the release")
    parser.add_argument("--channel", default="stable", help="the channel (default: stable)")
    parser.add_argument("--model", help="the model, when the channel releases several")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _phases(text: str) -> list[dict[str, Any]]:
    """``5:1h,25:30m,100`` → [{percent, hold_s}, …] (the last phase's hold is not used)."""
    out = []
    for part in text.split(","):
        percent, _, hold = part.strip().partition(":")
        try:
            value = float(percent)
            if not hold:
                seconds = 60
            elif hold[-1] in _UNITS:
                seconds = int(float(hold[:-1]) * _UNITS[hold[-1]])
            else:
                seconds = int(hold)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not PERCENT[:HOLD]: {part!r} (e.g. 5:1h)") from None
        out.append({"percent": value, "hold_s": max(1, seconds)})
    if len(out) < 2:
        raise argparse.ArgumentTypeError("a phased ramp has at least two phases, e.g. 10:1h,100")
    return out


def register_release(sub: Any) -> None:
    release = sub.add_parser(
        "release", help="staged rollouts: create, set, halt, resume, promote, rollback, list, status, "
        "behaviour, audit"
    )
    verbs = release.add_subparsers(dest="release_command", metavar="ACTION", required=True)

    create = verbs.add_parser("create", help="release a published model version to a fleet's channel")
    create.add_argument("--fleet", required=True, help="the fleet to release to")
    create.add_argument("--channel", default="stable", help="the fleet's channel (default: stable)")
    create.add_argument("--model", required=True, help="the published model's name")
    create.add_argument("--version", type=positive_int, required=True, help="the published version")
    create.add_argument(
        "--percent", type=_percent, help="share of devices, 0..100 (with --phases: the first phase's)"
    )
    create.add_argument("--urgent", action="store_true", help="devices should install without waiting")
    gate = create.add_argument_group("behaviour gate (docs/behaviour.md): any of these turns it on")
    gate.add_argument("--behaviour-gate", action="store_true", help="judge the candidate's field behaviour")
    gate.add_argument("--gate-rate-ratio", type=float, metavar="X",
                      help="halt above X times the incumbent's anomaly rate, or below 1/X (default 2)")
    gate.add_argument("--gate-psi", type=float, metavar="P", help="halt above this score PSI (default 0.25)")
    gate.add_argument("--gate-min-devices", type=positive_int, metavar="N",
                      help="judge once N devices report (default 10)")
    gate.add_argument("--gate-min-rows", type=positive_int, metavar="N",
                      help="…and they scored N rows (default 1000)")
    gate.add_argument("--gate-min-agreement", type=float, metavar="A",
                      help="a shadow release halts below this label agreement, 0..1 (default 0.9)")
    gate.add_argument("--gate-min-rank-correlation", type=float, metavar="R",
                      help="a shadow release halts below this score rank correlation (default: not judged)")
    create.add_argument("--shadow", action="store_true",
                        help="devices run it beside their model, act on nothing it says, report agreement; "
                        "`release promote ID` makes it a normal release")
    create.add_argument("--report-rows", type=positive_int, metavar="N",
                        help="with --shadow: report agreement after N rows (default 1000)…")
    create.add_argument("--report-hours", type=float, metavar="H", help="…or H hours (default 24)")
    create.add_argument(
        "--phases", type=_phases, metavar="P:HOLD,…",
        help="a phased ramp, e.g. 5:1h,25:1h,100 (percent:hold; s, m, h or d): each next phase once the "
        "hold is over and the gates pass; --percent defaults to the first",
    )
    _common(create)
    create.set_defaults(handler=_create)

    behaving = verbs.add_parser("behaviour", help="the candidate's field behaviour beside the incumbent's")
    _selector(behaving)
    _common(behaving)
    behaving.set_defaults(handler=_behaviour)

    setp = verbs.add_parser("set", help="raise or lower a release's rollout percent")
    _selector(setp)
    setp.add_argument("--percent", type=_percent, required=True, help="the new share of devices, 0..100")
    _common(setp)
    setp.set_defaults(handler=_set)

    halt = verbs.add_parser("halt", help="stop a rollout: the release leaves the index")
    _selector(halt)
    halt.add_argument("--reason", required=True, help="why, in one line (kept with the release)")
    _common(halt)
    halt.set_defaults(handler=_halt)

    resume = verbs.add_parser("resume", help="resume a halted release")
    _selector(resume)
    _common(resume)
    resume.set_defaults(handler=_resume)

    promote = verbs.add_parser(
        "promote", help="make shadow release ID a normal one; or release the version active on one "
        "channel to another (--fleet --from --to, e.g. beta → stable)"
    )
    promote.add_argument("shadow_id", nargs="?", type=positive_int, metavar="ID",
                         help="a shadow release: its devices install the candidate they hold")
    promote.add_argument("--fleet", help="the fleet of both channels")
    promote.add_argument("--from", dest="source", metavar="CHANNEL",
                         help="the channel whose active release is copied")
    promote.add_argument("--to", dest="dest", metavar="CHANNEL",
                         help="the channel to release to")
    promote.add_argument("--model", help="the model, when the source channel releases several")
    promote.add_argument("--percent", type=_percent,
                         help="share of devices (default: the shadow's; between channels 100)")
    promote.add_argument("--urgent", action="store_true", help="devices should install without waiting")
    _common(promote)
    promote.set_defaults(handler=_promote)

    listing = verbs.add_parser("list", help="releases, newest first")
    listing.add_argument("--fleet", help="only this fleet's releases")
    listing.add_argument("--channel", help="only this channel's releases")
    listing.add_argument("--state", choices=("active", "halted", "superseded"), help="only in this state")
    _common(listing)
    listing.set_defaults(handler=_list)

    status = verbs.add_parser("status", help="devices in the rollout, on each version, failures")
    _selector(status)
    _common(status)
    status.set_defaults(handler=_status)

    audit = verbs.add_parser("audit", help="who changed which release, when, and the index version signed")
    audit.add_argument("--fleet", help="only this fleet's releases")
    audit.add_argument("--channel", help="only this channel's releases")
    audit.add_argument("--release", dest="audit_release", type=positive_int, help="only this release")
    audit.add_argument("--limit", type=positive_int, default=50, help="newest N changes (default 50)")
    _common(audit)
    audit.set_defaults(handler=_audit)

    rollback = verbs.add_parser(
        "rollback", help="re-release an old bundle's artifacts as a new, higher version"
    )
    rollback.add_argument("--fleet", required=True, help="the fleet to release to")
    rollback.add_argument("--channel", default="stable", help="the fleet's channel (default: stable)")
    rollback.add_argument("--model", required=True, help="the model's name")
    rollback.add_argument("--from-bundle", type=Path, required=True, help="the old bundle directory")
    rollback.add_argument(
        "--key", type=Path, action="append", required=True,
        help="publisher private key (repeat for a threshold)",
    )
    rollback.add_argument(
        "--version", type=positive_int, required=True, help="the new version, above every earlier one"
    )
    rollback.add_argument("--percent", type=_percent, default=100.0, help="share of devices (default 100)")
    rollback.add_argument("--urgent", action="store_true", help="devices should install without waiting")
    rollback.add_argument(
        "--out", type=Path, help="keep the re-signed bundle here (default: a temporary directory)"
    )
    rollback.add_argument("--passphrase-env", help="environment variable holding the keys' passphrase")
    _common(rollback)
    rollback.set_defaults(handler=_rollback)


# --------------------------------------------------------------------------- plumbing


def _client(args: argparse.Namespace) -> Any:
    from sync_service.client import ServiceClient, resolve_server, resolve_token

    return ServiceClient(resolve_server(args.server), resolve_token(args.token_file))


def _where(args: argparse.Namespace) -> dict[str, Any]:
    """The ``server`` and ``token`` keywords of modelsync.api, from the flags."""
    from sync_service.client import resolve_server, resolve_token

    return {"server": resolve_server(args.server), "token": resolve_token(args.token_file)}


def _release_id(args: argparse.Namespace, states: tuple[Any, ...]) -> int:
    from modelsync.api import find_release

    if args.release_id is not None:
        if args.fleet:
            raise UsageError("name the release by RELEASE_ID or by --fleet/--channel, not both")
        return int(args.release_id)
    if not args.fleet:
        raise UsageError("name the release: RELEASE_ID, or --fleet FLEET [--channel CHANNEL] [--model M]")
    found = find_release(fleet=args.fleet, channel=args.channel, model=args.model, states=states,
                         **_where(args))
    return found.id


def _print_release(args: argparse.Namespace, release: dict[str, Any], verb: str) -> int:
    if args.json:
        print(json.dumps(release, indent=2))
        return 0
    from packager.cli_common import console

    reason = f" ({release['halt_reason']})" if release.get("halt_reason") else ""
    console().print(
        f"release {release['id']} {verb}: {release['model']} v{release['version']} on "
        f"{release['fleet']}/{release['channel']} at {release['percent']:g}%, {release['state']}{reason}",
        highlight=False,
    )
    return 0


def _create_body(args: argparse.Namespace, channel: str, model: str, version: int) -> dict[str, Any]:
    return {"fleet": args.fleet, "channel": channel, "model": model, "version": version,
            "percent": args.percent, "urgent": args.urgent}


def _create(args: argparse.Namespace) -> int:
    from modelsync.api import release

    bounds = {k: v for k, v in (("max_rate_ratio", args.gate_rate_ratio), ("max_psi", args.gate_psi),
                                ("min_devices", args.gate_min_devices), ("min_rows", args.gate_min_rows),
                                ("min_agreement", args.gate_min_agreement),
                                ("min_rank_correlation", args.gate_min_rank_correlation))
              if v is not None}
    if (args.report_rows or args.report_hours) and not args.shadow:
        raise UsageError("--report-rows and --report-hours are for --shadow releases")
    after = ({"rows": args.report_rows or 1000, "hours": args.report_hours or 24.0}
             if args.report_rows or args.report_hours else None)
    gate = bounds if bounds or args.behaviour_gate else None
    percent = args.percent
    if percent is None:
        if not args.phases:
            raise UsageError("give --percent, or --phases (the release starts at the first phase)")
        percent = args.phases[0]["percent"]
    created = release(fleet=args.fleet, channel=args.channel, model=args.model, version=args.version,
                      percent=percent, urgent=args.urgent, behaviour_gate=gate, phases=args.phases,
                      shadow=args.shadow, report_after=after, **_where(args))
    return _print_release(args, created.raw, "created in shadow mode" if args.shadow else "created")


def _set(args: argparse.Namespace) -> int:
    from modelsync.api import set_percent

    updated = set_percent(args.percent, release_id=_release_id(args, ("active",)), **_where(args))
    return _print_release(args, updated.raw, "updated")


def _halt(args: argparse.Namespace) -> int:
    from modelsync.api import halt

    halted = halt(args.reason, release_id=_release_id(args, ("active",)), **_where(args))
    return _print_release(args, halted.raw, "halted")


def _resume(args: argparse.Namespace) -> int:
    from modelsync.api import resume

    resumed = resume(release_id=_release_id(args, ("halted",)), **_where(args))
    return _print_release(args, resumed.raw, "resumed")


def _promote(args: argparse.Namespace) -> int:
    from modelsync.api import promote, promote_shadow

    if args.shadow_id is not None:
        if args.fleet or args.source or args.dest or args.model:
            raise UsageError("promote a shadow release by ID alone, or a channel's by --fleet --from --to")
        promoted = promote_shadow(args.shadow_id, percent=args.percent, **_where(args))
        return _print_release(args, promoted.raw, "promoted from shadow")
    if not (args.fleet and args.source and args.dest):
        raise UsageError("name a shadow release ID, or --fleet, --from and --to")
    args.percent = 100.0 if args.percent is None else args.percent
    created = promote(fleet=args.fleet, source=args.source, dest=args.dest, model=args.model,
                      percent=args.percent, urgent=args.urgent, **_where(args))
    return _print_release(args, created.raw, f"created (promoted from {args.source})")


def _list(args: argparse.Namespace) -> int:
    from modelsync.api import list_releases

    releases = [r.raw for r in list_releases(fleet=args.fleet, channel=args.channel, state=args.state,
                                             **_where(args))]
    if args.json:
        print(json.dumps(releases, indent=2))
        return 0
    from rich.table import Table

    from packager.cli_common import console

    table = Table(title="releases")
    for column in ("id", "fleet/channel", "model", "version", "percent", "state", "halt reason"):
        table.add_column(column)
    for r in releases:
        table.add_row(
            str(r["id"]), f"{r['fleet']}/{r['channel']}", r["model"], str(r["version"]),
            f"{r['percent']:g}%", r["state"], r.get("halt_reason") or "",
        )
    console().print(table)
    return 0


def _audit(args: argparse.Namespace) -> int:
    params = {"fleet": args.fleet, "channel": args.channel, "release": args.audit_release,
              "limit": min(args.limit, 1000)}
    with _client(args) as api:
        events = api.json("GET", "/v1/audit", params={k: v for k, v in params.items() if v is not None})
    if args.json:
        print(json.dumps(events, indent=2))
        return 0
    rows = [
        [e["at"], e["actor"], e["action"], str(e["release_id"]), f"{e['model']} v{e['version']}",
         f"{e['fleet']}/{e['channel']}", "" if e["index_version"] is None else str(e["index_version"]),
         ", ".join(f"{k}={v}" for k, v in e["detail"].items())]
        for e in events
    ]
    print_table("release changes, newest first",
                ["at", "who", "action", "release", "model", "fleet/channel", "index", "detail"], rows)
    return 0


def _status(args: argparse.Namespace) -> int:
    from modelsync.api import status as release_status

    status = release_status(release_id=_release_id(args, ("active", "halted", "superseded")),
                            **_where(args)).raw
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    from rich.table import Table

    from packager.cli_common import console

    r = status["release"]
    table = Table(title=f"release {r['id']}: {r['model']} v{r['version']} on {r['fleet']}/{r['channel']}")
    table.add_column("")
    table.add_column("", justify="right")
    state = r["state"] + (" (by the health gate)" if status["halted_by_health_gate"] else "")
    rows = [
        ("state", state),
        ("rollout", f"{r['percent']:g}%"),
        ("devices in rollout", f"{status['devices_in_rollout']} of {status['devices_registered']}"),
        ("installs", str(status["installs"])),
        ("reporting / failing devices", f"{status['reporting_devices']} / {status['failing_devices']}"),
        ("failure rate", f"{status['failure_rate']:.1%}"),
    ]
    rows += [(f"devices on v{v}", str(n)) for v, n in status["devices_by_version"].items()]
    rows += [(f"failures: {reason}", str(n)) for reason, n in status["failures_by_reason"].items()]
    schedule = r.get("schedule")
    if schedule:
        steps = " → ".join(f"{p['percent']:g}%" for p in schedule["phases"])
        rows.append(("phase", f"{schedule['phase']} of {schedule['of']} ({steps})"))
        if not schedule["done"]:
            rows.append(("next", f"{schedule['next_percent']:g}% judged at {schedule['next_judgement']}"))
    if r.get("halt_reason"):
        rows.append(("halt reason", r["halt_reason"]))
    for row in rows:
        table.add_row(*row)
    console().print(table)
    return 0


def _behaviour(args: argparse.Namespace) -> int:
    rid = _release_id(args, ("active", "halted", "superseded"))
    with _client(args) as api:
        body = api.json("GET", f"/v1/releases/{rid}/behaviour")
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    from rich.table import Table

    from packager.cli_common import console

    table = Table(title=f"release {rid}: {body['model']} v{body['version']}, reports since {body['since']}")
    for column in ("", "devices", "rows", "anomaly rate", "p50 ms", "p95 ms", "providers"):
        table.add_column(column, justify="left" if column in ("", "providers") else "right")
    for label, v in (("candidate", body["candidate"]), ("incumbent", body["incumbent"])):
        if v is not None:
            table.add_row(f"{label} v{v['version']}", str(v["devices"]), f"{v['rows']:,}",
                          f"{v['anomaly_rate']:.2%}", f"{v['latency_p50_ms']:.2f}",
                          f"{v['latency_p95_ms']:.2f}",
                          ", ".join(f"{p} ({n})" for p, n in v["providers"].items()))
    if body["reference"] is not None:
        table.add_row("reference", "", "", f"{body['reference']['anomaly_rate']:.2%}", "", "", "")
    console().print(table)
    sh = body.get("shadow")
    if sh is not None and sh["rows"]:
        corr = "—" if sh["rank_correlation"] is None else f"{sh['rank_correlation']:.3f}"
        console().print(f"shadow: {sh['devices']} devices, {sh['rows']:,} rows scored by both; label "
                        f"agreement {sh['agreement']:.2%}, anomaly rate {sh['shadow_anomaly_rate']:.2%} "
                        f"against "
                        f"{sh['active_anomaly_rate']:.2%} active, rank correlation {corr}", highlight=False)
    gate = body["gate"]
    figures = []
    if gate["rate_ratio"] is not None:
        figures.append(f"rate ×{gate['rate_ratio']:.2f}")
    if gate["psi"] is not None:
        figures.append(f"PSI {gate['psi']:.3f}")
    verdict = ("no behaviour gate" if gate["bounds"] is None else gate["breach"]
               or (f"waiting: {gate['waiting']}" if gate["waiting"] else "within its bounds"))
    console().print(f"against the {gate['baseline']}: {', '.join(figures) or '—'}; {verdict}")
    return 0


# --------------------------------------------------------------------------- rollback


def resign_bundle(
    source: Path, dest: Path, *, model: str, version: int, keys: list[Any]
) -> dict[str, Any]:
    """Write ``dest``: ``source``'s files with its manifest re-signed as ``version``. Returns
    the new signed manifest. The artifacts are copied byte for byte (same sha256)."""
    from packager.keys import read_json
    from packager.manifest import ModelManifest, format_time, parse_envelope, sign, utcnow

    manifest_path = source / "manifest.json"
    if not manifest_path.is_file():
        raise UsageError(f"{source} has no manifest.json: is it a bundle written by `modelsync package`?")
    envelope = parse_envelope(read_json(manifest_path))
    try:
        old = ModelManifest.model_validate(envelope.signed)
    except ValueError as exc:
        raise UsageError(f"{manifest_path}: not a model manifest ({exc})") from None
    if old.name != model:
        raise UsageError(f"{source} holds model {old.name!r}, not {model!r}")
    if version <= old.version:
        raise UsageError(
            f"the rollback version must be above the old bundle's v{old.version} "
            f"(devices never install a lower version), got {version}"
        )
    signed = dict(envelope.signed)
    signed["version"] = version
    signed["created"] = format_time(utcnow())
    signed["rollback_of"] = old.version  # signed too: says where these artifacts came from
    dest.mkdir(parents=True, exist_ok=True)
    for p in sorted(source.iterdir()):
        if p.is_file() and p.name != "manifest.json":
            shutil.copyfile(p, dest / p.name)
    (dest / "manifest.json").write_text(json.dumps(sign(signed, keys), indent=2) + "\n", encoding="utf-8")
    return signed


def _rollback(args: argparse.Namespace) -> int:
    from packager.cli_common import console as make_console
    from packager.cli_common import passphrase_from
    from packager.keys import load_private_key

    passphrase = passphrase_from(args)
    keys = [load_private_key(k, passphrase) for k in args.key]
    console = make_console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="modelsync-rollback-") as tmp:
        out = args.out or Path(tmp) / "bundle"
        resign_bundle(args.from_bundle, out, model=args.model, version=args.version, keys=keys)
        with _client(args) as api:
            with console.status(f"publishing {args.model} v{args.version} (old artifacts, new manifest)"):
                code, published = api.publish(out)
            release = api.json(
                "POST", "/v1/releases", json=_create_body(args, args.channel, args.model, args.version)
            )
    if args.json:
        print(json.dumps({"published": published, "release": release}, indent=2))
        return 0
    console.print(
        f"published {published['name']} v{published['version']} "
        f"({'new' if code == 201 else 'already stored'}, manifest {published['manifest_sha256'][:12]}…)"
    )
    return _print_release(args, release, "created")
