"""Content-addressed downloads: GET /v1/blobs/{sha256} (Range, zstd, presigned redirect)
and GET /v1/blobs/{sha256}/delta?from= (bsdiff4). docs/protocol.md, "Devices"."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, RedirectResponse, Response, StreamingResponse
from sqlmodel import Session

from sync_service import crud
from sync_service.api.deps import Principal, ReaderDep, SessionDep, SettingsDep, StorageDep
from sync_service.api.openapi import refusals
from sync_service.errors import NotFound, RangeNotSatisfiable
from sync_service.index_fast_path import etag_matches
from sync_service.storage import Storage, blob_key, delta_key
from sync_service.transfer import (
    UnsatisfiableRange,
    accepts_zstd,
    ensure_delta,
    ensure_zstd,
    parse_range,
    zstd_key,
)

router = APIRouter(prefix="/v1/blobs", tags=["devices"])

Sha = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$", description="sha256 of the blob")]
IMMUTABLE = "public, max-age=31536000, immutable"
CHUNK = 256 * 1024


def _allowed_length(session: Session, principal: Principal, sha256: str) -> int:
    """The blob's length if this caller may read it; 404 otherwise (nothing leaked)."""
    blob = crud.get_blob(session=session, sha256=sha256)
    if blob is not None and principal.is_device:
        assert principal.fleet_id is not None
        if not crud.blob_released_to_fleet(session=session, sha256=sha256, fleet_id=principal.fleet_id):
            blob = None
    if blob is None:
        raise NotFound(f"no blob {sha256}", code="blob_not_found")
    return blob.length


def _stream(storage: Storage, key: str, start: int, end: int) -> StreamingResponse:
    body = storage.iter_range(key, start, end, CHUNK)
    return StreamingResponse(body, media_type="application/octet-stream")


_BLOB_RESPONSES: dict[int | str, dict[str, Any]] = {
    206: {"description": "partial content (one Range)", "content": {"application/octet-stream": {}}},
    304: {"description": "If-None-Match matched"},
    307: {"description": "redirect to a presigned download URL (S3 backend)"},
    **refusals(
        {
            NotFound: "unknown, or not released to the device's fleet",
            RangeNotSatisfiable: "Range starts at or beyond the end",
        }
    ),
}


@router.get(
    "/{sha256}",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}, **_BLOB_RESPONSES},
)
async def get_blob(
    sha256: Sha,
    request: Request,
    principal: ReaderDep,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
) -> Response:
    length = await run_in_threadpool(_allowed_length, session, principal, sha256)
    # Done with the database: a download to a slow device must not hold a pooled connection.
    await run_in_threadpool(session.close)
    key = blob_key(sha256)
    etag = f'"{sha256}"'
    headers = {"ETag": etag, "Cache-Control": IMMUTABLE, "Accept-Ranges": "bytes", "Vary": "Accept-Encoding"}
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None and etag_matches(if_none_match, etag):  # a list, weak compare
        return Response(status_code=304, headers=headers)

    if settings.storage_backend == "s3" and settings.s3_presigned_downloads:
        url = storage.presigned_url(key, settings.s3_presign_expires_s)
        if url is not None:
            # The URL expires: the redirect itself must not be cached like the blob.
            return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})

    range_header = request.headers.get("range")
    try:
        byte_range = parse_range(range_header, length)
    except UnsatisfiableRange:
        raise RangeNotSatisfiable(
            f"range {range_header} is beyond the blob's {length} bytes",
            length=length,
        ) from None
    if byte_range is not None:
        response = _stream(storage, key, byte_range.start, byte_range.end)
        response.status_code = 206
        response.headers.update(headers)
        response.headers["Content-Range"] = f"bytes {byte_range.start}-{byte_range.end}/{length}"
        response.headers["Content-Length"] = str(byte_range.end - byte_range.start + 1)
        return response

    if range_header is None and accepts_zstd(request.headers.get("accept-encoding")):
        size = await run_in_threadpool(ensure_zstd, storage, sha256)
        zpath = storage.local_path(zstd_key(sha256))
        headers = {**headers, "Content-Encoding": "zstd"}
        del headers["Accept-Ranges"]  # ranges apply to the identity body only
        if zpath is not None:
            return FileResponse(zpath, headers=headers, media_type="application/octet-stream")
        response = _stream(storage, zstd_key(sha256), 0, size - 1)
        response.headers.update({**headers, "Content-Length": str(size)})
        return response

    path = storage.local_path(key)
    if path is not None and range_header is None:  # else FileResponse would act on the ignored Range
        return FileResponse(path, headers=headers, media_type="application/octet-stream")
    response = _stream(storage, key, 0, length - 1)
    response.headers.update({**headers, "Content-Length": str(length)})
    return response


@router.get(
    "/{sha256}/delta",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "a BSDIFF4 patch"},
        **refusals({NotFound: "no delta smaller than the zstd blob, or either blob unknown/not allowed"}),
    },
)
async def get_delta(
    sha256: Sha,
    principal: ReaderDep,
    session: SessionDep,
    storage: StorageDep,
    from_sha: Annotated[str, Query(alias="from", pattern=r"^[0-9a-f]{64}$")],
) -> Response:
    await run_in_threadpool(_allowed_length, session, principal, sha256)
    await run_in_threadpool(_allowed_length, session, principal, from_sha)
    await run_in_threadpool(session.close)  # as in get_blob: no connection held while streaming
    if from_sha == sha256:
        raise NotFound("a blob needs no delta from itself", code="delta_not_useful")
    delta_size = await run_in_threadpool(ensure_delta, storage, from_sha, sha256)
    zstd_size = await run_in_threadpool(ensure_zstd, storage, sha256)
    if delta_size is None or delta_size >= zstd_size:
        raise NotFound(
            f"no delta from {from_sha[:12]}… smaller than the compressed blob ({zstd_size} bytes)",
            code="delta_not_useful",
        )
    headers = {
        "X-Delta-Format": "bsdiff4",
        "X-Delta-From": from_sha,
        "ETag": f'"{from_sha}-{sha256}"',
        "Cache-Control": IMMUTABLE,
    }
    key = delta_key(from_sha, sha256)
    path = storage.local_path(key)
    if path is not None:
        return FileResponse(path, headers=headers, media_type="application/octet-stream")
    response = _stream(storage, key, 0, delta_size - 1)
    response.headers.update({**headers, "Content-Length": str(delta_size)})
    return response
