"""Blob storage: one interface (base.py), a local directory and S3 behind it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sync_service.errors import BlobNotFound, ServiceConfigError, StorageError
from sync_service.storage.base import Storage, blob_key, delta_key

if TYPE_CHECKING:
    from sync_service.core.config import Settings

__all__ = ["BlobNotFound", "Storage", "StorageError", "blob_key", "delta_key", "make_storage"]


def make_storage(settings: Settings) -> Storage:
    if settings.storage_backend == "s3":
        from sync_service.storage.s3 import S3Storage

        if not settings.s3_bucket:
            raise ServiceConfigError("storage backend s3 needs MODELSYNC_S3_BUCKET")
        return S3Storage(
            settings.s3_bucket,
            prefix=settings.s3_prefix,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            multipart_threshold=settings.s3_multipart_threshold,
            multipart_chunk=settings.s3_multipart_chunk,
        )
    from sync_service.storage.local import LocalStorage

    return LocalStorage(settings.resolved_blob_dir)
