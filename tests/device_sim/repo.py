"""A repository server for the device's tests, as an httpx transport.

It speaks the device half of docs/protocol.md (roots, index with ETag/304, blobs with
Range and zstd, bsdiff4 deltas, register, reports) and serves whatever documents a test
puts in it: honest ones signed with the right test keys, or an attacker's forgeries. It is
a fake of the server (and of the attacker), never of the device code under test.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

import bsdiff4
import httpx
import zstandard

from tests.device_sim.forge import Keys, doc_bytes, entry, index_doc, manifest_doc, ort_model, root_doc, sha


@dataclass
class Repo:
    keys: Keys = field(default_factory=Keys)
    roots: dict[int, bytes] = field(default_factory=dict)
    index: bytes | None = None
    blobs: dict[str, bytes] = field(default_factory=dict)
    zstd: bool = True
    deltas: bool = True
    honour_range: bool = True
    reports: list[dict[str, Any]] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)
    fleet: str = "f1"
    down: bool = False
    reports_status: int = 200

    def __post_init__(self) -> None:
        if not self.roots:
            self.roots[1] = doc_bytes(root_doc(self.keys))

    # ------------------------------------------------------------------ publishing

    def add_blob(self, data: bytes) -> str:
        self.blobs[sha(data)] = data
        return sha(data)

    def publish(self, name: str, version: int, model: bytes, *, index_version: int,
                targets: tuple[str, ...] = ("cpu", "android-nnapi"), percent: float = 100.0,
                urgent: bool = False, manifest_kw: dict[str, Any] | None = None,
                extra_entries: list[dict[str, Any]] | None = None, **index_kw: Any) -> bytes:
        """Sign a manifest for ``model`` on ``targets`` and an index naming it; return the manifest."""
        mbytes = doc_bytes(manifest_doc(self.keys, name, version, dict.fromkeys(targets, model),
                                        **(manifest_kw or {})))
        self.add_blob(mbytes)
        self.add_blob(model)
        entries = [entry(name, version, mbytes, percent=percent, urgent=urgent), *(extra_entries or [])]
        self.set_index(index_doc(self.keys, entries, version=index_version, fleet=self.fleet, **index_kw))
        return mbytes

    def set_index(self, doc: dict[str, Any]) -> None:
        self.index = doc_bytes(doc)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(lambda request: self.handle(request))  # tests may swap handle

    # ------------------------------------------------------------------ serving

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        path = request.url.path
        if m := re.fullmatch(r"/v1/root/(\d+)\.json", path):
            body = self.roots.get(int(m.group(1)))
            return _resp(200, body) if body else _err(404, "not_found")
        if request.method == "POST" and path == "/v1/devices/register":
            body = json.loads(request.content)
            if request.headers.get("authorization") != "Bearer mse_good":
                return _err(401, "unauthorized")
            return httpx.Response(201, json={"device_token": "msd_" + body["device_id"], "fleet": self.fleet,
                                             "device_id": body["device_id"]})
        if not (request.headers.get("authorization") or "").startswith("Bearer msd_"):
            return _err(401, "unauthorized")
        if m := re.fullmatch(r"/v1/channels/([^/]+)/index", path):
            if self.index is None:
                return _err(404, "unknown_channel")
            etag = f'"{hashlib.sha256(self.index).hexdigest()}"'
            if request.headers.get("if-none-match") == etag:
                return httpx.Response(304, headers={"ETag": etag})
            return _resp(200, self.index, {"ETag": etag})
        if m := re.fullmatch(r"/v1/blobs/([0-9a-f]{64})/delta", path):
            return self._delta(m.group(1), request.url.params.get("from", ""))
        if m := re.fullmatch(r"/v1/blobs/([0-9a-f]{64})", path):
            return self._blob(m.group(1), request)
        if m := re.fullmatch(r"/v1/devices/([^/]+)/reports", path):
            if self.reports_status != 200:
                return _err(self.reports_status, "unavailable")
            events = json.loads(request.content)["events"]
            self.reports.extend(events)
            return httpx.Response(200, json={"accepted": len(events), "duplicates": 0})
        return _err(404, "not_found")

    def _blob(self, digest: str, request: httpx.Request) -> httpx.Response:
        data = self.blobs.get(digest)
        if data is None:
            return _err(404, "not_found")
        rng = request.headers.get("range")
        if rng and self.honour_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                return httpx.Response(416, headers={"Content-Range": f"bytes */{len(data)}"})
            return _resp(206, data[start:], {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"})
        if self.zstd and "zstd" in request.headers.get("accept-encoding", ""):
            return _resp(200, zstandard.ZstdCompressor(level=3).compress(data), {"Content-Encoding": "zstd"})
        return _resp(200, data)

    def _delta(self, digest: str, base: str) -> httpx.Response:
        if not self.deltas or digest not in self.blobs or base not in self.blobs:
            return _err(404, "no_delta")
        patch = bsdiff4.diff(self.blobs[base], self.blobs[digest])
        return _resp(200, patch, {"X-Delta-Format": "bsdiff4", "X-Delta-From": base})


def _resp(status: int, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    """A response whose body is still to be streamed, as from a real connection."""
    return httpx.Response(status, stream=httpx.ByteStream(body),
                          headers={"Content-Length": str(len(body)), **(headers or {})})


def _err(status: int, code: str) -> httpx.Response:
    return httpx.Response(status, json={"detail": code.replace("_", " "), "code": code})


__all__ = ["Repo", "ort_model"]
