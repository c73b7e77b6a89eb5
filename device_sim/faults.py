"""A fault-injecting httpx transport: the bad networks a field device meets.

    transport = FaultyTransport(inner, FaultPlan(cut=0.3, flip=0.1, latency=0.05), rng=random.Random(7))
    httpx.AsyncClient(transport=transport)     # or httpx.Client: both interfaces are implemented

Per request, with the plan's probabilities: a burst of 5xx answers, a server that never
answers (the request waits out its own read timeout, then ``httpx.ReadTimeout``), added
latency, and on the body: a connection cut at a random byte offset
(``httpx.RemoteProtocolError``, as an incomplete body raises), one flipped bit, a bandwidth
cap. Everything is drawn from the given ``random.Random`` so a failing trial replays.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx

SLICE = 1024  # bandwidth caps deliver the body in slices this big


@dataclass(frozen=True)
class FaultPlan:
    cut: float = 0.0  # probability that a body is cut at a random offset
    flip: float = 0.0  # probability that one bit of a body is flipped
    error: float = 0.0  # probability that a burst of 5xx answers starts
    burst: int = 3  # answers in a burst
    hang: float = 0.0  # probability that the server never answers
    latency: float = 0.0  # seconds before each answer
    bandwidth: float | None = None  # bytes per second for bodies

    @classmethod
    def random(cls, rng: random.Random, *, max_latency: float = 0.01,
               min_bandwidth: float = 50_000) -> FaultPlan:
        """A random mix of faults for trial runs."""
        return cls(
            cut=rng.choice([0.0, 0.3, 0.7]),
            flip=rng.choice([0.0, 0.0, 0.2]),
            error=rng.choice([0.0, 0.2]),
            burst=rng.randint(1, 4),
            hang=rng.choice([0.0, 0.0, 0.1]),
            latency=rng.uniform(0, max_latency),
            bandwidth=rng.choice([None, min_bandwidth, 4 * min_bandwidth]),
        )


@dataclass
class FaultLog:
    cuts: int = 0
    flips: int = 0
    errors: int = 0
    hangs: int = 0
    requests: int = 0
    events: list[str] = field(default_factory=list)


@dataclass
class _BodyFault:
    cut_at: int | None
    flip_at: int | None
    flip_bit: int


class FaultyTransport(httpx.AsyncBaseTransport, httpx.BaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport | httpx.BaseTransport, plan: FaultPlan,
                 rng: random.Random | None = None) -> None:
        self.inner = inner
        self.plan = plan
        self.rng = rng or random.Random()
        self.log = FaultLog()
        self._burst_left = 0

    # ------------------------------------------------------------------ decisions

    def _before(self, request: httpx.Request) -> str | None:
        self.log.requests += 1
        if self._burst_left:
            self._burst_left -= 1
            return "error"
        if self.rng.random() < self.plan.error:
            self._burst_left = self.plan.burst - 1
            return "error"
        if self.rng.random() < self.plan.hang:
            return "hang"
        return None

    def _body_fault(self, length_hint: int) -> _BodyFault:
        span = length_hint if length_hint > 0 else 4096  # unknown length: somewhere early
        cut = self.rng.randrange(span) if self.rng.random() < self.plan.cut else None
        flip = self.rng.randrange(span) if self.rng.random() < self.plan.flip else None
        return _BodyFault(cut, flip, self.rng.randrange(8))

    def _record(self, what: str, request: httpx.Request) -> None:
        setattr(self.log, what, getattr(self.log, what) + 1)
        self.log.events.append(f"{what} {request.method} {request.url.path}")

    @staticmethod
    def _read_timeout(request: httpx.Request) -> float | None:
        timeout = request.extensions.get("timeout", {})
        value = timeout.get("read") if isinstance(timeout, dict) else None
        return float(value) if value is not None else None

    def _error_response(self, request: httpx.Request) -> httpx.Response:
        self._record("errors", request)
        status = self.rng.choice([500, 502, 503, 504])
        return httpx.Response(status, json={"detail": "injected fault", "code": "injected"}, request=request)

    def _length_hint(self, response: httpx.Response) -> int:
        try:
            return int(response.headers.get("content-length", "0"))
        except ValueError:
            return 0

    # ------------------------------------------------------------------ async

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not isinstance(self.inner, httpx.AsyncBaseTransport):
            raise TypeError("inner transport is not async")
        fault = self._before(request)
        if fault == "error":
            return self._error_response(request)
        if fault == "hang":
            self._record("hangs", request)
            wait = self._read_timeout(request)
            await asyncio.sleep(wait if wait is not None else 1e9)
            raise httpx.ReadTimeout("injected: the server never answered", request=request)
        if self.plan.latency:
            await asyncio.sleep(self.plan.latency)
        response = await self.inner.handle_async_request(request)
        body = self._body_fault(self._length_hint(response))
        stream = _AsyncFaultStream(self, request, response.stream, body)  # type: ignore[arg-type]
        return httpx.Response(response.status_code, headers=response.headers, stream=stream,
                              extensions=response.extensions, request=request)

    async def aclose(self) -> None:
        if isinstance(self.inner, httpx.AsyncBaseTransport):
            await self.inner.aclose()

    # ------------------------------------------------------------------ sync

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if not isinstance(self.inner, httpx.BaseTransport):
            raise TypeError("inner transport is not sync")
        fault = self._before(request)
        if fault == "error":
            return self._error_response(request)
        if fault == "hang":
            self._record("hangs", request)
            wait = self._read_timeout(request)
            time.sleep(wait if wait is not None else 3600)
            raise httpx.ReadTimeout("injected: the server never answered", request=request)
        if self.plan.latency:
            time.sleep(self.plan.latency)
        response = self.inner.handle_request(request)
        body = self._body_fault(self._length_hint(response))
        stream = _SyncFaultStream(self, request, response.stream, body)  # type: ignore[arg-type]
        return httpx.Response(response.status_code, headers=response.headers, stream=stream,
                              extensions=response.extensions, request=request)

    def close(self) -> None:
        if isinstance(self.inner, httpx.BaseTransport):
            self.inner.close()

    # ------------------------------------------------------------------ body faults

    def _mangle(self, request: httpx.Request, chunk: bytes, offset: int,
                body: _BodyFault) -> tuple[bytes, bool]:
        """The chunk as delivered, and whether the connection dies after it."""
        end = offset + len(chunk)
        if body.flip_at is not None and offset <= body.flip_at < end:
            i = body.flip_at - offset
            chunk = chunk[:i] + bytes([chunk[i] ^ (1 << body.flip_bit)]) + chunk[i + 1 :]
            self._record("flips", request)
        if body.cut_at is not None and body.cut_at < end:
            self._record("cuts", request)
            return chunk[: body.cut_at - offset], True
        return chunk, False

    def _slices(self, chunk: bytes) -> list[bytes]:
        if self.plan.bandwidth is None:
            return [chunk]
        return [chunk[i : i + SLICE] for i in range(0, len(chunk), SLICE)]


class _AsyncFaultStream(httpx.AsyncByteStream):
    def __init__(self, owner: FaultyTransport, request: httpx.Request, inner: httpx.AsyncByteStream,
                 body: _BodyFault) -> None:
        self.owner, self.request, self.inner, self.body = owner, request, inner, body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        offset = 0
        async for raw in self.inner:
            for piece in self.owner._slices(raw):
                if self.owner.plan.bandwidth:
                    await asyncio.sleep(len(piece) / self.owner.plan.bandwidth)
                chunk, dead = self.owner._mangle(self.request, piece, offset, self.body)
                offset += len(piece)
                if chunk:
                    yield chunk
                if dead:
                    raise httpx.RemoteProtocolError("injected: peer closed connection mid-body",
                                                    request=self.request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class _SyncFaultStream(httpx.SyncByteStream):
    def __init__(self, owner: FaultyTransport, request: httpx.Request, inner: httpx.SyncByteStream,
                 body: _BodyFault) -> None:
        self.owner, self.request, self.inner, self.body = owner, request, inner, body

    def __iter__(self) -> Iterator[bytes]:
        offset = 0
        for raw in self.inner:
            for piece in self.owner._slices(raw):
                if self.owner.plan.bandwidth:
                    time.sleep(len(piece) / self.owner.plan.bandwidth)
                chunk, dead = self.owner._mangle(self.request, piece, offset, self.body)
                offset += len(piece)
                if chunk:
                    yield chunk
                if dead:
                    raise httpx.RemoteProtocolError("injected: peer closed connection mid-body",
                                                    request=self.request)

    def close(self) -> None:
        self.inner.close()
