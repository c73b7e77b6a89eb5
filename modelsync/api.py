"""modelsync's publisher-side operations as Python functions, for CI jobs and registry
hooks that should not shell out: what ``modelsync publish``, ``release`` and ``models`` /
``devices list`` do, and the CLI calls these.

Each function takes ``server`` and ``token``; left out, they come from where the CLI finds
them (``MODELSYNC_SERVER`` / ``MODELSYNC_TOKEN`` or ``~/.config/modelsync/config.toml``).
A refusal raises ``modelsync.ApiError`` (``status``, ``code``, ``detail``, ``exit_code``);
an unreachable server ``modelsync.UnreachableError``; both are ``ModelSyncError``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from packager.errors import NotFoundError, UsageError

ReleaseState = Literal["active", "halted", "superseded"]

__all__ = [
    "DeviceSummary",
    "ModelSummary",
    "Published",
    "Release",
    "ReleaseStatus",
    "find_release",
    "halt",
    "list_devices",
    "list_models",
    "list_releases",
    "promote",
    "publish",
    "release",
    "resume",
    "set_percent",
    "status",
]


@dataclass(frozen=True)
class Published:
    name: str
    version: int
    manifest_sha256: str
    created: bool  # False: this exact manifest was already published (nothing changed)
    raw: dict[str, Any]  # the server's whole answer


@dataclass(frozen=True)
class Release:
    id: int
    fleet: str
    channel: str
    model: str
    version: int
    percent: float
    state: ReleaseState
    urgent: bool
    halt_reason: str | None
    raw: dict[str, Any]  # the server's whole answer (docs/protocol.md)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Release:
        return cls(id=body["id"], fleet=body["fleet"], channel=body["channel"], model=body["model"],
                   version=body["version"], percent=body["percent"], state=body["state"],
                   urgent=body["urgent"], halt_reason=body.get("halt_reason"), raw=body)


@dataclass(frozen=True)
class ReleaseStatus:
    release: Release
    devices_registered: int
    devices_in_rollout: int
    devices_by_version: dict[int, int]
    installs: int
    failure_rate: float
    failures_by_reason: dict[str, int]
    raw: dict[str, Any]


@dataclass(frozen=True)
class ModelSummary:
    name: str
    versions: list[int]
    latest: int


@dataclass(frozen=True)
class DeviceSummary:
    device_id: str
    fleet: str
    platform: str
    app_version: str
    ort_version: str
    registered: str
    last_seen: str
    retired: bool  # no valid token: retired, or re-registered under another id


def _client(server: str | None, token: str | None) -> Any:
    from sync_service.client import ServiceClient, resolve_server, resolve_token

    return ServiceClient(resolve_server(server), token or resolve_token())


def publish(
    bundle: str | Path,
    *,
    server: str | None = None,
    token: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Published:
    """Upload a bundle directory written by ``modelsync package`` (scope ``publish``)."""
    with _client(server, token) as api:
        code, body = api.publish(Path(bundle), on_progress=on_progress)
    return Published(body["name"], body["version"], body["manifest_sha256"], created=code == 201, raw=body)


def release(
    *,
    fleet: str,
    model: str,
    version: int,
    percent: float,
    channel: str = "stable",
    urgent: bool = False,
    behaviour_gate: dict[str, Any] | None = None,
    phases: list[dict[str, Any]] | None = None,
    shadow: bool = False,
    report_after: dict[str, Any] | None = None,
    server: str | None = None,
    token: str | None = None,
) -> Release:
    """Release a published version to ``percent`` of a fleet's channel (scope ``release``);
    ``behaviour_gate`` (``{max_rate_ratio, max_psi, min_agreement, min_rank_correlation,
    min_devices, min_rows}``, any subset) halts it when the candidate behaves unlike the
    incumbent; ``shadow``: devices run it beside their model, acting on nothing it says, and
    report agreement after ``report_after`` (``{rows, hours}``) (docs/behaviour.md)."""
    body: dict[str, Any] = {"fleet": fleet, "channel": channel, "model": model, "version": version,
                            "percent": percent, "urgent": urgent}
    if shadow:
        body["mode"] = "shadow"
        if report_after is not None:
            body["report_after"] = report_after
    if behaviour_gate is not None:
        body["behaviour_gate"] = behaviour_gate
    if phases is not None:
        body["phases"] = phases  # [{percent, hold_s}, …]: the service ramps (docs/behaviour.md)
    with _client(server, token) as api:
        return Release.from_json(api.json("POST", "/v1/releases", json=body))


def list_releases(
    *,
    fleet: str | None = None,
    channel: str | None = None,
    state: ReleaseState | None = None,
    server: str | None = None,
    token: str | None = None,
) -> list[Release]:
    """Releases, newest first; a fleet or channel that does not exist is NotFoundError."""
    params = {k: v for k, v in (("fleet", fleet), ("channel", channel), ("state", state)) if v}
    with _client(server, token) as api:
        if fleet:
            _check_channel(api, fleet, channel)
        return [Release.from_json(r) for r in api.json("GET", "/v1/releases", params=params)]


def _check_channel(api: Any, fleet: str, channel: str | None) -> None:
    info = api.json("GET", f"/v1/fleets/{fleet}")
    if channel is not None and channel not in info["channels"]:
        raise NotFoundError(
            f"fleet {fleet!r} has no channel {channel!r}; its channels: {', '.join(info['channels'])}"
        )


def find_release(
    *,
    fleet: str,
    channel: str = "stable",
    model: str | None = None,
    states: tuple[ReleaseState, ...] = ("active",),
    server: str | None = None,
    token: str | None = None,
) -> Release:
    """The newest release of ``model`` (any, if the channel releases one) on fleet/channel
    in one of ``states``."""
    with _client(server, token) as api:
        return Release.from_json(_find(api, fleet, channel, model, states))


def _find(api: Any, fleet: str, channel: str, model: str | None, states: tuple[str, ...]) -> dict[str, Any]:
    _check_channel(api, fleet, channel)
    found = [
        r for r in api.json("GET", "/v1/releases", params={"fleet": fleet, "channel": channel})
        if r["state"] in states and (model is None or r["model"] == model)
    ]
    models = sorted({r["model"] for r in found})
    if len(models) > 1:
        raise UsageError(f"{fleet}/{channel} releases several models ({', '.join(models)}): name the model")
    if not found:
        what = f" of {model}" if model else ""
        raise NotFoundError(f"no {' or '.join(states)} release{what} on {fleet}/{channel}")
    return max(found, key=lambda r: int(r["id"]))


def _release_id(api: Any, release_id: int | None, fleet: str | None, channel: str, model: str | None,
                states: tuple[str, ...]) -> int:
    """The id given, or that of the newest release in ``states`` on fleet/channel."""
    if release_id is not None:
        return release_id
    return int(_find(api, _need(fleet), channel, model, states)["id"])


def set_percent(
    percent: float,
    *,
    release_id: int | None = None,
    fleet: str | None = None,
    channel: str = "stable",
    model: str | None = None,
    server: str | None = None,
    token: str | None = None,
) -> Release:
    """Raise or lower a rollout, named by id or by fleet/channel (its active release)."""
    with _client(server, token) as api:
        rid = _release_id(api, release_id, fleet, channel, model, ("active",))
        return Release.from_json(api.json("PATCH", f"/v1/releases/{rid}", json={"percent": percent}))


def halt(
    reason: str,
    *,
    release_id: int | None = None,
    fleet: str | None = None,
    channel: str = "stable",
    model: str | None = None,
    server: str | None = None,
    token: str | None = None,
) -> Release:
    """Stop a rollout (the release leaves the index), by id or fleet/channel."""
    with _client(server, token) as api:
        rid = _release_id(api, release_id, fleet, channel, model, ("active",))
        return Release.from_json(api.json("POST", f"/v1/releases/{rid}/halt", json={"reason": reason}))


def resume(
    *,
    release_id: int | None = None,
    fleet: str | None = None,
    channel: str = "stable",
    model: str | None = None,
    server: str | None = None,
    token: str | None = None,
) -> Release:
    """Resume a halted release, by id or fleet/channel (its newest halted release)."""
    with _client(server, token) as api:
        rid = _release_id(api, release_id, fleet, channel, model, ("halted",))
        return Release.from_json(api.json("POST", f"/v1/releases/{rid}/resume"))


def promote(
    *,
    fleet: str,
    source: str,
    dest: str,
    model: str | None = None,
    percent: float = 100.0,
    urgent: bool = False,
    server: str | None = None,
    token: str | None = None,
) -> Release:
    """Release the version active on channel ``source`` to channel ``dest`` of one fleet."""
    if source == dest:
        raise UsageError("source and destination name the same channel")
    with _client(server, token) as api:
        _check_channel(api, fleet, dest)
        active = _find(api, fleet, source, model, ("active",))
        body = {"fleet": fleet, "channel": dest, "model": active["model"], "version": active["version"],
                "percent": percent, "urgent": urgent}
        return Release.from_json(api.json("POST", "/v1/releases", json=body))


def promote_shadow(
    release_id: int, *, percent: float | None = None, server: str | None = None, token: str | None = None,
) -> Release:
    """Turn a shadow release into a normal one (same devices; they install what they hold)."""
    body = {} if percent is None else {"percent": percent}
    with _client(server, token) as api:
        return Release.from_json(api.json("POST", f"/v1/releases/{release_id}/promote", json=body))


def status(
    *,
    release_id: int | None = None,
    fleet: str | None = None,
    channel: str = "stable",
    model: str | None = None,
    server: str | None = None,
    token: str | None = None,
) -> ReleaseStatus:
    """A rollout's figures: devices in it, on each version, failures; by id or fleet/channel."""
    with _client(server, token) as api:
        rid = _release_id(api, release_id, fleet, channel, model, ("active", "halted", "superseded"))
        body = api.json("GET", f"/v1/releases/{rid}/status")
    return ReleaseStatus(
        release=Release.from_json(body["release"]),
        devices_registered=body["devices_registered"],
        devices_in_rollout=body["devices_in_rollout"],
        devices_by_version={int(v): n for v, n in body["devices_by_version"].items()},
        installs=body["installs"],
        failure_rate=body["failure_rate"],
        failures_by_reason=dict(body["failures_by_reason"]),
        raw=body,
    )


def _need(fleet: str | None) -> str:
    if not fleet:
        raise UsageError("name the release: its id, or its fleet (and channel, model)")
    return fleet


def list_models(*, server: str | None = None, token: str | None = None) -> list[ModelSummary]:
    """Every published model with its versions (any publisher token)."""
    with _client(server, token) as api:
        rows = api.json("GET", "/v1/models")
    return [ModelSummary(m["name"], list(m["versions"]), m["latest"]) for m in rows]


def list_devices(
    *,
    fleet: str | None = None,
    search: str | None = None,
    after: str | None = None,
    limit: int | None = None,
    server: str | None = None,
    token: str | None = None,
) -> list[DeviceSummary]:
    """Registered devices by id (any publisher token); ``fleet`` must exist; ``search``: ids
    containing it; ``after``: the page after this id; ``limit``: at most this many (1000)."""
    wanted = {"fleet": fleet, "q": search, "after": after, "limit": limit}
    params = {k: v for k, v in wanted.items() if v is not None}
    with _client(server, token) as api:
        rows = api.json("GET", "/v1/devices", params=params)
    return [DeviceSummary(**{f: d[f] for f in DeviceSummary.__dataclass_fields__}) for d in rows]
