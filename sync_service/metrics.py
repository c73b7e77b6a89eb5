"""Prometheus metrics: one registry for the process, one pure-ASGI middleware that counts
every request by route template (never by raw path: bounded label sets) and the bytes
each response carried, by kind (``blob``, ``zstd``, ``delta``, ``index``).

Counters the service bumps itself, through the typed ``count_*`` functions below (label
words as Literal types, so a misspelt label is a type error, not a new time series):
publishes, report events, halts, index versions signed. The 304 ratio is
exported ready-made (``modelsync_index_not_modified_ratio``) and can also be computed in
PromQL from ``modelsync_index_responses_total``.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sync_service.models import ReportKind

PublishOutcome = Literal["created", "unchanged", "rejected"]
HaltedBy = Literal["operator", "health_gate"]
SignCause = Literal["change", "first", "freshness"]

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "modelsync_http_requests_total",
    "HTTP requests by route template, method and status code.",
    ["route", "method", "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "modelsync_http_request_duration_seconds",
    "Time to the last response byte, by route template.",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
    registry=REGISTRY,
)
BYTES_SERVED = Counter(
    "modelsync_bytes_served_total",
    "Response body bytes by kind: blob (identity), zstd, delta, index.",
    ["kind"],
    registry=REGISTRY,
)
INDEX_RESPONSES = Counter(
    "modelsync_index_responses_total",
    "Channel-index answers by status (200 full body, 304 not modified).",
    ["status"],
    registry=REGISTRY,
)
PUBLISHES = Counter(
    "modelsync_publishes_total",
    "Bundle uploads by outcome (created, unchanged, rejected).",
    ["outcome"],
    registry=REGISTRY,
)
REPORT_EVENTS = Counter(
    "modelsync_report_events_total",
    "Device report events by kind; duplicates (retried event ids) counted apart.",
    ["kind", "outcome"],
    registry=REGISTRY,
)
HALTS = Counter(
    "modelsync_release_halts_total",
    "Releases halted, by who halted them (operator or health_gate).",
    ["by"],
    registry=REGISTRY,
)
INDEX_SIGNED = Counter(
    "modelsync_index_versions_signed_total",
    "Channel-index versions signed, by cause (change, first, freshness: re-signed near expiry).",
    ["cause"],
    registry=REGISTRY,
)


def count_publish(outcome: PublishOutcome) -> None:
    PUBLISHES.labels(outcome).inc()


def count_reports(kinds: list[ReportKind], duplicates: int) -> None:
    for kind in kinds:
        REPORT_EVENTS.labels(kind, "received").inc()
    if duplicates:
        REPORT_EVENTS.labels("any", "duplicate").inc(duplicates)


def count_halt(by: HaltedBy) -> None:
    HALTS.labels(by).inc()


def count_index_signed(cause: SignCause) -> None:
    INDEX_SIGNED.labels(cause).inc()


def _not_modified_ratio() -> float:
    ok = INDEX_RESPONSES.labels("200")._value.get()
    not_modified = INDEX_RESPONSES.labels("304")._value.get()
    total = ok + not_modified
    return float(not_modified / total) if total else 0.0


NOT_MODIFIED_RATIO = Gauge(
    "modelsync_index_not_modified_ratio",
    "Share of channel-index answers that were 304 since the process started.",
    registry=REGISTRY,
)
NOT_MODIFIED_RATIO.set_function(_not_modified_ratio)

INDEX_ROUTE = "/v1/channels/{channel}/index"
BLOB_ROUTE = "/v1/blobs/{sha256}"
DELTA_ROUTE = "/v1/blobs/{sha256}/delta"


def exposition() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def bytes_kind(route: str, headers: list[tuple[bytes, bytes]]) -> str | None:
    if route == INDEX_ROUTE:
        return "index"
    if route == DELTA_ROUTE:
        return "delta"
    if route == BLOB_ROUTE:
        for name, value in headers:
            if name.lower() == b"content-encoding" and value.strip().lower() == b"zstd":
                return "zstd"
        return "blob"
    return None


def _route_of(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class MetricsMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware): the index check is the hot path and this layer
    must cost microseconds."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state: dict[str, Any] = {"status": 500, "kind": None, "bytes": 0}

        async def observe(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                state["kind"] = bytes_kind(_route_of(scope), message.get("headers", []))
            elif message["type"] == "http.response.body":
                state["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            route = _route_of(scope)
            method = scope.get("method", "")
            status = state["status"]
            REQUESTS.labels(route, method, str(status)).inc()
            LATENCY.labels(route, method).observe(time.perf_counter() - start)
            if state["kind"] is not None and state["bytes"]:
                BYTES_SERVED.labels(state["kind"]).inc(state["bytes"])
            if route == INDEX_ROUTE and status in (200, 304):
                INDEX_RESPONSES.labels(str(status)).inc()

