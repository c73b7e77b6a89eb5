"""POST /v1/bundles: the body (an uncompressed tar) is streamed to a temporary file under
the data directory, never held whole in memory, and cut off with 413 the moment it passes
the cap; sync_service.bundles does the checks and the storing."""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from packager.errors import ThresholdError, VerificationError
from sync_service.api.deps import PublishDep, SettingsDep
from sync_service.api.openapi import refusals
from sync_service.bundles import IngestResult, ingest
from sync_service.errors import (
    BadRequest,
    DatabaseUnavailable,
    PayloadTooLarge,
    ServiceError,
    StorageError,
    Unprocessable,
    UnsupportedEncoding,
    VersionExists,
)
from sync_service.metrics import count_publish
from sync_service.storage import Storage
from sync_service.storage.sweep import UPLOAD_PREFIX
from sync_service.transfer import POSITION_CAP, byte_position, ensure_zstd

log = logging.getLogger("modelsync.bundles")

router = APIRouter(prefix="/v1", tags=["release engineers"])
_DIGITS = re.compile(r"[0-9]+")


async def _receive(request: Request, dest: Path, cap: int) -> int:
    # The service decompresses no request body, so no upload can be a bomb: a coded body
    # is refused before a byte of it is read, not mistaken for a tar (RFC 9110 §8.4).
    coding = request.headers.get("content-encoding", "identity").strip().lower()
    if coding not in ("", "identity"):
        raise UnsupportedEncoding(
            f"Content-Encoding {coding[:40]!r} is not accepted: send the tar uncompressed"
        )
    declared = request.headers.get("content-length")
    size: int | None = None
    if declared is not None:
        # RFC 9110 §8.6: 1*DIGIT, nothing else (int() would also take "+1", "1_0", " 1 ").
        if not _DIGITS.fullmatch(declared):
            raise BadRequest("Content-Length is not a number", code="bad_content_length")
        size = byte_position(declared)
        if size > cap:
            shown = declared if size < POSITION_CAP else f"{len(declared)}-digit"
            raise PayloadTooLarge(f"bundle of {shown} bytes is over the {cap}-byte upload cap")
    received = 0
    try:
        with dest.open("wb") as out:
            async for chunk in request.stream():
                received += len(chunk)
                if received > cap:
                    raise PayloadTooLarge(f"bundle is over the {cap}-byte upload cap")
                out.write(chunk)
    except ClientDisconnect:
        raise BadRequest("upload interrupted before the end of the body", code="truncated_upload") from None
    if size is not None and received != size:
        raise BadRequest(
            f"received {received} bytes, Content-Length said {declared}", code="truncated_upload"
        )
    return received


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "the identical version was already stored"},
    **refusals(
        {
            BadRequest: "malformed tar or Content-Length, paths outside the bundle, missing/extra "
            "files, hash mismatch, a body cut short",
            ThresholdError: "the manifest's publisher signatures are not trusted",
            VersionExists: "same name and version, different manifest",
            PayloadTooLarge: "over the upload cap",
            UnsupportedEncoding: "a Content-Encoding other than identity: bundles are sent "
            "uncompressed",
            Unprocessable: "malformed manifest",
            StorageError: "the blob store failed",
            DatabaseUnavailable: "the database refused or dropped the connection: retry",
        }
    ),
}


@router.post(
    "/bundles",
    status_code=201,
    responses=_RESPONSES,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def upload_bundle(request: Request, _user: PublishDep, settings: SettingsDep) -> JSONResponse:
    """Upload a signed bundle as an uncompressed POSIX tar (files at top level)."""
    app = request.app
    uploads = settings.data_dir / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=UPLOAD_PREFIX, dir=uploads))
    try:
        tar_path = workdir / "upload.tar"
        await _receive(request, tar_path, settings.upload_max_bytes)
        files = workdir / "files"
        files.mkdir()
        result: IngestResult = await run_in_threadpool(
            ingest,
            tar_path,
            files,
            engine=app.state.engine,
            storage=app.state.storage,
            root=app.state.keys.root,
        )
    except (ServiceError, VerificationError):
        count_publish("rejected")
        raise
    finally:
        await run_in_threadpool(shutil.rmtree, workdir, True)
    count_publish("created" if result.created else "unchanged")
    # Warm the zstd cache after answering, so the first devices of a rollout do not wait
    # for the compression (ensure_zstd is single-flight: early requests join it).
    warm = BackgroundTasks()
    if result.created:
        for sha in dict.fromkeys(a["sha256"] for a in result.artifacts):
            warm.add_task(_warm_zstd, app.state.storage, sha)
    return JSONResponse(result.public(), status_code=201 if result.created else 200, background=warm)


def _warm_zstd(storage: Storage, sha256: str) -> None:
    try:
        ensure_zstd(storage, sha256)
    except Exception as exc:  # a cache: the blob route computes it on demand anyway
        log.warning("could not precompute zstd for %s: %s", sha256[:12], exc)
