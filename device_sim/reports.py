"""The device's report queue on the wire (docs/device.md "Reports"): queued events, oldest
first, in batches of up to 500 to POST /v1/devices/{id}/reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from device_sim.errors import DownloadError
from device_sim.store import Store
from device_sim.transfer import Http

REPORT_BATCH = 500
# What the service answers a batch it will never take as sent (invalid, too large).
REFUSED_STATUSES = frozenset({413, 422})


async def flush_reports(http: Http, store: Store, device_id: str) -> int:
    """Send queued events, oldest first, in batches; each batch leaves the queue on 200."""
    sent = 0
    while True:
        batch = list(store.queued(REPORT_BATCH))
        if not batch:
            return sent
        sent += await _send_batch(http, store, device_id, batch)


async def _send_batch(http: Http, store: Store, device_id: str,
                      batch: list[tuple[Path, dict[str, Any]]]) -> int:
    """The service takes a batch whole or not at all, so one event it will never accept
    (a 422: say, a behaviour report for a version it no longer knows) would hold every
    later report back for good. A batch refused with 422 or 413 is halved until the
    refused events stand alone; those are dropped and counted (``reports_refused``).
    Any other failure raises and leaves the batch queued for the next sync."""
    try:
        await http.post_json(f"/v1/devices/{device_id}/reports",
                             {"events": [event for _, event in batch]}, "reports")
    except DownloadError as exc:
        if exc.status not in REFUSED_STATUSES:
            raise
        if len(batch) > 1:
            half = len(batch) // 2
            return (await _send_batch(http, store, device_id, batch[:half])
                    + await _send_batch(http, store, device_id, batch[half:]))
        store.refuse_report(batch[0][0], batch[0][1], str(exc))
        return 0
    store.dequeue([p for p, _ in batch])
    return len(batch)
