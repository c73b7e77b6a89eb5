"""One behaviour suite for every storage backend: a local directory and S3 (moto's server
mode over real HTTP). Then what only S3 does: multipart uploads and presigned URLs."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from sync_service.storage import BlobNotFound, Storage, StorageError
from sync_service.storage.local import LocalStorage
from sync_service.storage.s3 import S3Storage
from tests.sync_service.s3_server import new_bucket

MiB = 1024 * 1024


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path / "blobs")
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket, _ = new_bucket(endpoint)
    return S3Storage(bucket, prefix="pfx", endpoint_url=endpoint, region="us-east-1")


def test_put_get_size_exists_remove(storage: Storage, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"hello world")
    assert not storage.exists("blobs/a")
    storage.put("blobs/a", src)
    assert src.read_bytes() == b"hello world"  # the source is left in place
    assert storage.exists("blobs/a")
    assert storage.get("blobs/a") == b"hello world"
    assert storage.size("blobs/a") == 11
    storage.remove("blobs/a")
    assert not storage.exists("blobs/a")
    storage.remove("blobs/a")  # removing a missing key is fine


def test_missing_key_is_blob_not_found(storage: Storage) -> None:
    with pytest.raises(BlobNotFound):
        storage.get("blobs/missing")
    with pytest.raises(BlobNotFound):
        storage.size("blobs/missing")
    with pytest.raises(BlobNotFound), storage.open("blobs/missing"):
        pass


def test_put_bytes_overwrites_whole(storage: Storage) -> None:
    storage.put_bytes("zstd/x", b"first version")
    storage.put_bytes("zstd/x", b"second")
    assert storage.get("zstd/x") == b"second"


def test_open_and_iter_range(storage: Storage) -> None:
    data = bytes(range(256)) * 64
    storage.put_bytes("blobs/r", data)
    with storage.open("blobs/r") as fh:
        assert fh.read() == data
    assert b"".join(storage.iter_range("blobs/r", 100, 299, chunk=64)) == data[100:300]
    assert b"".join(storage.iter_range("blobs/r", len(data) - 1, len(data) - 1)) == data[-1:]


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "blobs/../x", "blobs", "Blobs/x y"])
def test_bad_keys_are_refused(storage: Storage, key: str) -> None:
    with pytest.raises(StorageError, match="invalid storage key"):
        storage.put_bytes(key, b"x")


def test_check(storage: Storage) -> None:
    storage.check()


def test_check_fails_when_unreachable(tmp_path: Path, s3_endpoint: str) -> None:
    local = LocalStorage(tmp_path / "gone")
    local.root.rmdir()
    with pytest.raises(StorageError):
        local.check()
    with pytest.raises(StorageError, match="not reachable"):
        S3Storage("no-such-bucket", endpoint_url=s3_endpoint, region="us-east-1").check()


def test_local_put_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "blobs")
    src = tmp_path / "src"
    src.write_bytes(b"x" * 1000)
    store.put("blobs/k", src)
    assert [p.name for p in (tmp_path / "blobs" / "blobs").iterdir()] == ["k"]


def test_s3_multipart_upload(s3_endpoint: str, tmp_path: Path) -> None:
    bucket, client = new_bucket(s3_endpoint)
    # S3's smallest part is 5 MiB: 11 MiB in 5 MiB parts is 3 parts.
    store = S3Storage(
        bucket,
        endpoint_url=s3_endpoint,
        region="us-east-1",
        multipart_threshold=5 * MiB,
        multipart_chunk=5 * MiB,
    )
    src = tmp_path / "big"
    data = bytes(range(256)) * (11 * MiB // 256)
    src.write_bytes(data)
    store.put("blobs/big", src)
    head = client.head_object(Bucket=bucket, Key="blobs/big")
    assert head["ETag"].strip('"').endswith("-3")  # the multipart ETag names its part count
    assert store.size("blobs/big") == len(data)
    assert (
        b"".join(store.iter_range("blobs/big", 5 * MiB - 10, 5 * MiB + 9))
        == data[5 * MiB - 10 : 5 * MiB + 10]
    )


def test_s3_presigned_url_downloads_over_http(s3_endpoint: str) -> None:
    bucket, _ = new_bucket(s3_endpoint)
    store = S3Storage(bucket, endpoint_url=s3_endpoint, region="us-east-1")
    store.put_bytes("blobs/p", b"presigned payload")
    url = store.presigned_url("blobs/p", 60)
    assert url is not None and "X-Amz-Signature" in url
    r = httpx.get(url)
    assert r.status_code == 200 and r.content == b"presigned payload"
