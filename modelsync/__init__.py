"""modelsync from Python: publish bundles, release and promote them, read rollouts, models
and devices, without a shell (modelsync/api.py; docs/cli.md, "Python API").

    from modelsync import publish, release, status
    published = publish("bundle-v2")
    release(fleet="field", model=published.name, version=published.version, percent=10)
    print(status(fleet="field").devices_by_version)
"""

from __future__ import annotations

from modelsync.api import (
    DeviceSummary,
    ModelSummary,
    Published,
    Release,
    ReleaseStatus,
    find_release,
    halt,
    list_devices,
    list_models,
    list_releases,
    promote,
    promote_shadow,
    publish,
    release,
    resume,
    set_percent,
    status,
)
from packager.errors import ModelSyncError, NotFoundError, UnreachableError, UsageError
from sync_service.client import ApiError

__all__ = [
    "ApiError",
    "DeviceSummary",
    "ModelSummary",
    "ModelSyncError",
    "NotFoundError",
    "Published",
    "Release",
    "ReleaseStatus",
    "UnreachableError",
    "UsageError",
    "find_release",
    "halt",
    "list_devices",
    "list_models",
    "list_releases",
    "promote",
    "promote_shadow",
    "publish",
    "release",
    "resume",
    "set_percent",
    "status",
]
