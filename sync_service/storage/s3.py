"""Blobs in S3 (or any S3-compatible store) through boto3. Large uploads go multipart
(boto3's transfer manager, part size from settings); downloads may be handed to clients
as presigned URLs so the service never proxies the bytes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, cast

from sync_service.errors import BlobNotFound, StorageError
from sync_service.storage.base import Storage, check_key


def _is_missing(exc: Exception) -> bool:
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in {"404", "NoSuchKey", "NotFound"}


class S3Storage(Storage):
    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        multipart_threshold: int = 8 * 1024 * 1024,
        multipart_chunk: int = 8 * 1024 * 1024,
        client: Any = None,
    ) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = client or boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            config=Config(signature_version="s3v4", retries={"max_attempts": 3, "mode": "standard"}),
        )
        self.transfer = TransferConfig(
            multipart_threshold=multipart_threshold, multipart_chunksize=multipart_chunk, use_threads=False
        )

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _fail(self, what: str, key: str, exc: Exception) -> StorageError:
        if _is_missing(exc):
            return BlobNotFound(f"no object {key}")
        return StorageError(f"S3 {what} {self.bucket}/{self._key(key)} failed: {exc}")

    def get(self, key: str) -> bytes:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            return cast(bytes, obj["Body"].read())
        except Exception as exc:
            raise self._fail("get", key, exc) from None

    def open(self, key: str) -> AbstractContextManager[BinaryIO]:
        return self._open(key)

    @contextlib.contextmanager
    def _open(self, key: str) -> Iterator[BinaryIO]:
        # A streaming body cannot seek, so iter_range below asks S3 for the range itself.
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            raise self._fail("get", key, exc) from None
        body = obj["Body"]
        try:
            yield cast(BinaryIO, body)
        finally:
            body.close()

    def iter_range(self, key: str, start: int, end: int, chunk: int = 256 * 1024) -> Iterator[bytes]:
        try:
            obj = self.client.get_object(
                Bucket=self.bucket, Key=self._key(key), Range=f"bytes={start}-{end}"
            )
        except Exception as exc:
            raise self._fail("get", key, exc) from None
        body = obj["Body"]
        try:
            yield from body.iter_chunks(chunk)
        finally:
            body.close()

    def put(self, key: str, source: Path) -> None:
        try:
            self.client.upload_file(str(source), self.bucket, self._key(key), Config=self.transfer)
        except Exception as exc:
            raise self._fail("put", key, exc) from None

    def put_bytes(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except Exception as exc:
            raise self._fail("put", key, exc) from None

    def remove(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            if not _is_missing(exc):
                raise self._fail("delete", key, exc) from None

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except BlobNotFound:
            return False
        return True

    def size(self, key: str) -> int:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return int(head["ContentLength"])
        except Exception as exc:
            raise self._fail("head", key, exc) from None

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        try:
            return cast(
                str,
                self.client.generate_presigned_url(
                    "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)}, ExpiresIn=expires_s
                ),
            )
        except Exception as exc:
            raise self._fail("presign", key, exc) from None

    def sweep(self, older_than_s: float) -> int:
        # A multipart upload of a killed process is never completed or aborted: S3 keeps
        # (and bills) its parts until someone aborts it.
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
        removed = 0
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self.prefix
            )
            for page in pages:
                for upload in page.get("Uploads", []):
                    if upload["Initiated"] < cutoff:
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                        removed += 1
        except Exception as exc:
            raise StorageError(f"S3 sweep of {self.bucket} failed: {exc}") from None
        return removed

    def check(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            raise StorageError(f"S3 bucket {self.bucket} is not reachable: {exc}") from None
