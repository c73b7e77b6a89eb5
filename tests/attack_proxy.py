"""A man in the middle of our own: a loopback HTTP reverse proxy between a real device and
a real service that forwards honestly until a test gives it a rule, and then forges,
replays, stretches, trickles or inflates answers (tests/device_sim/test_attacks_http.py).

Standard library server (``http.server``, one thread per connection) and httpx upstream.
Every answer closes its connection, so a body may be delimited by the close: endless and
trickled bodies need no length. Honest answers are forwarded byte for byte (``iter_raw``:
a zstd body stays zstd) and recorded, so a test can replay what the service once said.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

# Never forwarded: they describe one connection, not the message (RFC 9110 §7.6.1).
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "content-length",
    "host",
}


@dataclass
class Request:
    method: str
    path: str  # with the query
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    """An answer a rule forges. ``body`` may be an endless iterator: the proxy stops when the
    client hangs up (or after ``cap`` bytes); ``delay`` is slept before each piece."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | Iterable[bytes] = b""
    delay: float = 0.0
    cap: int = 512 * 1024 * 1024
    declare_length: bool = True  # send Content-Length for a bytes body


@dataclass
class Upstream:
    status: int
    headers: list[tuple[str, str]]
    body: bytes  # raw, as sent (still zstd when the service compressed it)


Rule = Callable[[Request], Reply | None]


class AttackProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream_url = upstream
        self.rule: Rule | None = None
        self.log: list[tuple[str, str, int]] = []  # (method, path, status) answered
        self.honest: dict[str, list[bytes]] = {}  # path → bodies the service sent, in order
        self.sent_by_rule = 0  # body bytes written for forged answers
        self._lock = threading.Lock()
        self._client = httpx.Client(base_url=upstream, timeout=30)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="attack-proxy", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> AttackProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()

    def honest_reply(self, request: Request) -> Upstream:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        with self._client.stream(request.method, request.path, headers=headers, content=request.body) as r:
            body = b"".join(r.iter_raw())
            return Upstream(r.status_code, list(r.headers.multi_items()), body)

    def fetch(self, path: str, token: str) -> bytes:
        """What the service answers ``path`` (decoded), asked with ``token``: the attacker's
        own copy of genuine documents."""
        r = self._client.get(
            path, headers={"Authorization": f"Bearer {token}", "Accept-Encoding": "identity"}
        )
        r.raise_for_status()
        return r.content

    def last_honest(self, path: str) -> bytes:
        with self._lock:
            return self.honest[path][-1]

    def _record(self, method: str, path: str, status: int, body: bytes | None) -> None:
        with self._lock:
            self.log.append((method, path, status))
            if body is not None and status == 200:
                self.honest.setdefault(path.split("?")[0], []).append(body)


def _handler(proxy: AttackProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            request = Request(self.command, self.path, dict(self.headers.items()), body)
            rule = proxy.rule
            forged = rule(request) if rule is not None else None
            self.close_connection = True
            if forged is None:
                up = proxy.honest_reply(request)
                self.send_response(up.status)
                for name, value in up.headers:
                    if name.lower() not in HOP_BY_HOP:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(up.body)))
                self.send_header("Connection", "close")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(up.body)
                proxy._record(self.command, self.path, up.status, up.body)
                return
            self.send_response(forged.status)
            for name, value in forged.headers.items():
                self.send_header(name, value)
            if isinstance(forged.body, bytes) and forged.declare_length:
                self.send_header("Content-Length", str(len(forged.body)))
            self.send_header("Connection", "close")
            self.end_headers()
            pieces: Iterable[bytes] = [forged.body] if isinstance(forged.body, bytes) else forged.body
            try:
                for piece in _capped(pieces, forged.cap):
                    if forged.delay:
                        time.sleep(forged.delay)
                    self.wfile.write(piece)
                    self.wfile.flush()
                    with proxy._lock:
                        proxy.sent_by_rule += len(piece)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the device hung up: what the endless and trickled bodies wait for
            proxy._record(self.command, self.path, forged.status, None)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

    return Handler


def _capped(pieces: Iterable[bytes], cap: int) -> Iterator[bytes]:
    sent = 0
    for piece in pieces:
        if sent >= cap:
            return
        yield piece[: cap - sent]
        sent += len(piece)
