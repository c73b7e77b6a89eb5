"""What one ``modelsync device sync`` came to, for scripts and supervisors: an exit code
from ``packager.exit_codes`` (docs/device.md "Exit codes"), the same as a word and a JSON
document, and a line per model saying why nothing was installed when nothing was.

    0  up_to_date  nothing new for this device (each model's reason in ``skipped``)
    10 updated     at least one model installed and activated, nothing refused or failed
    3  refused     a trust check refused a document or a model (verification, stale index)
    7  failed      the network failed: unreachable, cut, or bytes damaged on the way
    2 / 1          the state directory cannot be used / a defect of ours

A refusal outranks a network failure, which outranks an install: a script that sees 10
knows every model the device was offered is now running.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Literal

from device_sim.updater import ModelOutcome, SyncResult
from packager import exit_codes

SyncWord = Literal["up_to_date", "updated", "refused", "failed", "error"]

_WORDS: dict[int, SyncWord] = {
    exit_codes.OK: "up_to_date",
    exit_codes.UPDATED: "updated",
    exit_codes.VERIFICATION: "refused",
    exit_codes.UNREACHABLE: "failed",
    exit_codes.USAGE: "error",
    exit_codes.INTERNAL: "error",
}


def exit_code(result: SyncResult) -> int:
    if result.status == "offline":
        return exit_codes.UNREACHABLE
    if result.status == "stale" or (result.status == "failed" and result.refused):
        return exit_codes.VERIFICATION
    if result.status == "failed" and result.error_code == "slow_retrieval":  # the deadline passed
        return exit_codes.UNREACHABLE
    if result.status == "failed":
        return exit_codes.USAGE if result.error_code == "store" else exit_codes.INTERNAL
    failed = [o for o in result.outcomes if o.outcome == "failed"]
    if any(not o.transport for o in failed):
        return exit_codes.VERIFICATION
    if failed:
        return exit_codes.UNREACHABLE
    return exit_codes.UPDATED if result.installed else exit_codes.OK


def word(code: int) -> SyncWord:
    return _WORDS.get(code, "error")


def _model(o: ModelOutcome) -> dict[str, Any]:
    kind = "transport" if o.transport else ("verification" if o.outcome == "failed" else None)
    return {"model": o.model, "version": o.version, "outcome": o.outcome, "reason": o.reason,
            "failure": kind, "detail": o.detail, "transfer": o.transfer, "wire_bytes": o.wire_bytes}


def as_json(result: SyncResult) -> dict[str, Any]:
    code = exit_code(result)
    return {
        "status": word(code),
        "exit_code": code,
        "sync": result.status,
        "root_version": result.root_version,
        "index_version": result.index_version,
        "models": [_model(o) for o in result.outcomes],
        "skipped": [asdict(s) for s in result.skipped],
        "why_nothing": why_nothing(result),
        "error": None if result.error is None else {"code": result.error_code, "message": result.error},
        "reports_sent": result.reports_sent,
        "wire_bytes": result.wire_bytes,
    }


def why_nothing(result: SyncResult) -> list[str]:
    """One line per model when nothing was installed: skipped (2.6), deferred, refused."""
    if result.installed:
        return []
    if result.status == "stale":
        return [f"the channel index is stale (check 2.5): {result.error}"]
    if result.error is not None:
        return [f"the sync stopped before any model: {result.error_code}: {result.error}"]
    lines = [f"{s.model}: {s.reason}: {s.detail}" for s in result.skipped]
    for o in result.outcomes:
        if o.outcome == "deferred":
            lines.append(f"{o.model} v{o.version}: {o.reason}: {o.detail}")
        elif o.outcome == "failed":
            what = "transport failure" if o.transport else "refused"
            lines.append(f"{o.model} v{o.version}: {what}: {o.reason}: {o.detail}")
    if not lines:
        lines.append("the channel index names no model")
    return lines
