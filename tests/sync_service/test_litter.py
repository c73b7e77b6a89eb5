"""Litter of killed processes is swept (issue 8, item 10): the local blob store's
``.tmp-*`` temporaries (write_atomic_with's, never renamed), upload directories, zstd scratch
directories and S3 multipart uploads never completed — at start-up and periodically, only
once older than ``stale_temp_s`` (a younger one may be another replica's write)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
from fastapi import FastAPI

from packager.fsutil import TMP_MARK
from sync_service.core.config import Settings
from sync_service.main import create_app
from sync_service.storage.local import LocalStorage
from sync_service.storage.s3 import S3Storage
from sync_service.storage.sweep import sweep_litter
from tests.sync_service.live import serve_in_thread
from tests.sync_service.s3_server import new_bucket

HOUR = 3600.0


def _litter(path: Path, age_s: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"half a blob")
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def test_start_up_sweeps_old_temporaries_only(settings: Settings) -> None:
    blobs = settings.resolved_blob_dir
    sha = "ab" * 32
    kept_blob = _litter(blobs / "blobs" / sha, 10 * HOUR)  # a real (old) blob: never litter
    old = [
        _litter(blobs / "blobs" / f"{sha}{TMP_MARK}123-cafe0001", 2 * HOUR),
        _litter(blobs / "zstd" / f"{sha}{TMP_MARK}77-beef0002", 2 * HOUR),
        _litter(blobs / "deltas" / f"{sha}-{sha}{TMP_MARK}9-00000003", 2 * HOUR),
    ]
    young = _litter(blobs / "blobs" / f"{sha}{TMP_MARK}456-f00d0004", 60)
    upload = settings.data_dir / "uploads" / "bundle-abc"
    _litter(upload / "upload.tar", 2 * HOUR)
    os.utime(upload, (time.time() - 2 * HOUR,) * 2)

    app = create_app(settings)
    app.state.engine.dispose()
    assert not any(p.exists() for p in old)
    assert not upload.exists()
    assert young.exists() and kept_blob.read_bytes() == b"half a blob"


def test_litter_is_swept_periodically(settings: Settings) -> None:
    fast = settings.model_copy(update={"stale_temp_s": 1.0, "sweep_interval_s": 0.2})
    app: FastAPI = create_app(fast)
    with serve_in_thread(app) as url:
        # Left behind after start-up, as by a writer killed while the service runs.
        tmp = _litter(fast.resolved_blob_dir / "blobs" / f"{'cd' * 32}{TMP_MARK}1-00000005", 5.0)
        deadline = time.monotonic() + 60
        while tmp.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not tmp.exists()
        assert httpx.get(f"{url}/healthz").status_code == 200
    app.state.engine.dispose()


def test_zstd_scratch_directories_are_swept(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "blobs")
    scratch = tmp_path / "tmp"
    old = _litter(scratch / "modelsync-zstd-x1" / "z", 2 * HOUR).parent
    os.utime(old, (time.time() - 2 * HOUR,) * 2)
    other = _litter(scratch / "someone-elses-x2" / "z", 2 * HOUR).parent
    os.utime(other, (time.time() - 2 * HOUR,) * 2)
    assert sweep_litter(storage, tmp_path / "data", HOUR, scratch=scratch) == 1
    assert not old.exists() and other.exists()


def test_s3_multipart_leftovers_are_aborted(s3_endpoint: str) -> None:
    bucket, client = new_bucket(s3_endpoint)
    storage = S3Storage(bucket, prefix="svc", endpoint_url=s3_endpoint, region="us-east-1")
    started = client.create_multipart_upload(Bucket=bucket, Key="svc/blobs/" + "ef" * 32)
    client.upload_part(
        Bucket=bucket, Key=started["Key"], UploadId=started["UploadId"], PartNumber=1, Body=b"x" * 1024
    )
    elsewhere = client.create_multipart_upload(Bucket=bucket, Key="other-service/object")
    # moto dates every multipart upload 2010-11-10, so "young" cannot be shown on it; the
    # age comparison is LocalStorage's, tested above.
    assert storage.sweep(HOUR) == 1
    left = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [u["UploadId"] for u in left] == [elsewhere["UploadId"]]
