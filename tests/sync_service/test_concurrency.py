"""Bursts bigger than the worker threadpool and the connection pool must queue, not deadlock.

Before sessions were gated (sync_service/api/deps.py, app.state.db_slots), 100+ simultaneous
registrations held every pooled connection while waiting for a thread to validate their
responses, and the rest failed with 500 after the pool's 30 s timeout.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest


async def _burst(base: str, token: str, n: int) -> Counter[object]:
    async def one(client: httpx.AsyncClient, i: int) -> object:
        try:
            r = await client.post(
                f"{base}/v1/devices/register",
                json={"device_id": f"burst-{i}", "platform": "linux"},
                headers={"Authorization": f"Bearer {token}"},
            )
            return r.status_code
        except httpx.HTTPError as exc:  # a timeout here is the deadlock this test guards
            return type(exc).__name__

    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(timeout=20, limits=limits) as client:
        return Counter(await asyncio.gather(*(one(client, i) for i in range(n))))


@pytest.mark.slow
def test_burst_of_registrations_beyond_pool_and_threads_all_succeed(
    live_server: str, enrollment_token: str
) -> None:
    outcome = asyncio.run(_burst(live_server, enrollment_token, 150))
    assert outcome == Counter({201: 150})
