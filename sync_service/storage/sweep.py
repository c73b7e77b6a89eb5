"""Litter a killed process leaves behind, removed at start-up and then periodically
(docs/operations.md, "What the service does on its own"): the blob store's temporaries
(``Storage.sweep``), upload directories under DATA_DIR/uploads, and the zstd scratch
directories of ``sync_service.transfer``. Only what is older than ``stale_temp_s``: the
data directory and the store may be shared by replicas, whose writes in progress are young.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from pathlib import Path

from sync_service.errors import StorageError
from sync_service.storage.base import Storage

log = logging.getLogger("modelsync.sweep")

UPLOAD_PREFIX = "bundle-"
ZSTD_SCRATCH_PREFIX = "modelsync-zstd-"


def _old_directories(parent: Path, prefix: str, older_than_s: float) -> int:
    if not parent.is_dir():
        return 0
    cutoff = time.time() - older_than_s
    removed = 0
    for entry in parent.iterdir():
        try:
            if entry.name.startswith(prefix) and entry.is_dir() and entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        except OSError:
            continue
    return removed


def clean_stale_uploads(uploads: Path, older_than_s: float = 3600) -> int:
    """Temporary upload directories (POST /v1/bundles) of a killed process."""
    return _old_directories(uploads, UPLOAD_PREFIX, older_than_s)


def sweep_litter(storage: Storage, data_dir: Path, older_than_s: float, scratch: Path | None = None) -> int:
    """Everything above, once; how many things were removed. A store that cannot be swept
    now (S3 unreachable) is logged and tried again next time: never fatal."""
    removed = clean_stale_uploads(data_dir / "uploads", older_than_s)
    removed += _old_directories(scratch or Path(tempfile.gettempdir()), ZSTD_SCRATCH_PREFIX, older_than_s)
    try:
        removed += storage.sweep(older_than_s)
    except StorageError as exc:
        log.warning("blob store sweep failed: %s", exc)
    if removed:
        log.info("removed %d stale temporary files or directories", removed)
    return removed


async def sweep_periodically(storage: Storage, data_dir: Path, older_than_s: float, every_s: float) -> None:
    """``sweep_litter`` every ``every_s`` seconds, in a worker thread, until cancelled."""
    while True:
        await asyncio.sleep(every_s)
        try:
            await asyncio.to_thread(sweep_litter, storage, data_dir, older_than_s)
        except Exception:  # a sweep must never take the service down
            log.exception("litter sweep failed")
