"""The links a simulated device may have (wifi; metered cellular; lossy), as fault plans
for ``device_sim.faults.FaultyTransport``, and the radio that an offline window switches off."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx

from device_sim.faults import FaultPlan


@dataclass(frozen=True)
class NetProfile:
    name: str
    plan: FaultPlan
    metered: bool = False


PROFILES: dict[str, NetProfile] = {
    "wifi": NetProfile("wifi", FaultPlan(latency=0.005)),
    "cellular": NetProfile("cellular", FaultPlan(latency=0.06, bandwidth=400_000), metered=True),
    # Cuts and 5xx bursts only: a flipped bit in a signed document is reported by the
    # device as an install failure, which is not what a lossy link should look like to
    # the health gate (faults.py's flip is exercised by the device's own fault tests).
    "lossy": NetProfile("lossy", FaultPlan(cut=0.15, error=0.05, burst=2, latency=0.12, bandwidth=150_000)),
}
NETWORK_MIX = {"wifi": 0.7, "cellular": 0.2, "lossy": 0.1}


class OfflineSwitch(httpx.AsyncBaseTransport):
    """The radio: while ``offline()`` says so, nothing leaves the device."""

    def __init__(self, inner: httpx.AsyncBaseTransport, offline: Callable[[], bool]) -> None:
        self.inner, self.offline = inner, offline

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.offline():
            raise httpx.ConnectError("offline (simulated window)", request=request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:  # the shared pool is closed by the fleet, not per device
        return None
