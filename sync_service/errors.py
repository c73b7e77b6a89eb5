"""The sync service's error tree. No HTTP here: sync_service/api/errors.py is the one place
that maps these classes to status codes and error bodies.

    ModelSyncError (packager.errors)
    ├── ServiceConfigError          service_config          the service cannot start: settings, keys, storage
    │   └── DatabaseNotMigrated     database_not_migrated   the database is empty or behind the migrations
    ├── StorageError                storage_unavailable     a blob store failed
    ├── DatabaseUnavailable         database_unavailable    the database refused or dropped the connection
    │   └── BlobNotFound            blob_not_found          no object under that key
    └── ServiceError                internal_error          a request or operation is refused
        ├── BadRequest              bad_request             malformed input (tar, headers, query)
        │   └── BundleRejected      bad_bundle              the bundle does not match its manifest
        ├── Unauthorized            unauthorized            missing, unknown or revoked token
        ├── Forbidden               forbidden               valid token, wrong kind, scope, fleet or device
        ├── NotFound                not_found               no such thing, or not the caller's to see
        │   ├── UnknownFleet        unknown_fleet
        │   ├── UnknownChannel      unknown_channel
        │   ├── UnknownModelVersion unknown_model_version
        │   ├── UnknownRelease      unknown_release
        │   └── UnknownModel        unknown_model           the channel's index has no such model
        ├── Conflict                conflict                the current state forbids the change
        │   ├── VersionExists       version_exists          same model version, different manifest
        │   ├── ConcurrentUpload    concurrent_upload       uploads of one version kept colliding
        │   ├── VersionNotNewer     version_not_newer       release versions only go up in a channel
        │   ├── ReleaseSuperseded   release_superseded
        │   ├── NewerReleaseActive  newer_release_active
        │   ├── DeviceInOtherFleet  device_in_other_fleet
        │   ├── NoOfflineKey        no_offline_key          pack export without the offline role's key
        │   └── NothingToPack       nothing_to_pack         the channel (or model) has no release to carry
        ├── PayloadTooLarge         payload_too_large       over an upload or manifest cap
        ├── RangeNotSatisfiable     range_not_satisfiable   a byte range beyond the blob's end
        ├── UnsupportedEncoding     unsupported_encoding    a request body in a content coding we do not read
        └── Unprocessable           unprocessable           well-formed but unusable input

``code`` is the snake_case word the API answers with. The data layer (crud_*.py, the
bundle checks) raises the named leaves, or returns ``None`` for "not there". Where a
request is read (deps, routes) the general classes are raised, often with a narrower code
given at the raise site (``Unauthorized(…, code="invalid_token")``); docs/protocol.md
lists the codes clients see.
"""

from __future__ import annotations

from packager import exit_codes
from packager.errors import ModelSyncError


class ServiceConfigError(ModelSyncError):
    code = "service_config"
    exit_code = exit_codes.USAGE


class DatabaseNotMigrated(ServiceConfigError):
    code = "database_not_migrated"


class StorageError(ModelSyncError):
    code = "storage_unavailable"
    exit_code = exit_codes.UNREACHABLE


class BlobNotFound(StorageError):
    code = "blob_not_found"


class DatabaseUnavailable(ModelSyncError):
    """What sqlalchemy's OperationalError (connection refused or lost, SQLite locked,
    PostgreSQL deadlock) is answered as: 503, worth retrying (sync_service/api/errors.py)."""

    code = "database_unavailable"


class ServiceError(ModelSyncError):
    code = "internal_error"
    exit_code = exit_codes.INTERNAL

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code


class BadRequest(ServiceError):
    code = "bad_request"
    exit_code = exit_codes.USAGE


class BundleRejected(BadRequest):
    code = "bad_bundle"


class Unauthorized(ServiceError):
    code = "unauthorized"
    exit_code = exit_codes.UNAUTHORIZED


class Forbidden(ServiceError):
    code = "forbidden"
    exit_code = exit_codes.UNAUTHORIZED


class NotFound(ServiceError):
    code = "not_found"
    exit_code = exit_codes.NOT_FOUND


class UnknownFleet(NotFound):
    code = "unknown_fleet"


class UnknownChannel(NotFound):
    code = "unknown_channel"


class UnknownModelVersion(NotFound):
    code = "unknown_model_version"


class UnknownRelease(NotFound):
    code = "unknown_release"


class UnknownModel(NotFound):
    code = "unknown_model"


class UnknownRoot(NotFound):
    code = "unknown_root"


class Conflict(ServiceError):
    code = "conflict"
    exit_code = exit_codes.CONFLICT


class VersionExists(Conflict):
    code = "version_exists"


class ConcurrentUpload(Conflict):
    code = "concurrent_upload"


class VersionNotNewer(Conflict):
    code = "version_not_newer"


class ReleaseSuperseded(Conflict):
    code = "release_superseded"


class NewerReleaseActive(Conflict):
    code = "newer_release_active"


class NotShadow(Conflict):
    code = "not_shadow"


class ReleaseHalted(Conflict):
    code = "release_halted"


class DeviceInOtherFleet(Conflict):
    code = "device_in_other_fleet"


class NoOfflineKey(Conflict):
    code = "no_offline_key"


class NothingToPack(Conflict):
    code = "nothing_to_pack"


class ArtifactNotRunnable(Conflict):
    """The service's onnxruntime cannot load or run a stored artifact on its golden vectors
    (it was verified as bytes when published, not run)."""

    code = "artifact_not_runnable"


class PackWindowTooLong(Conflict):
    """A window the request may state (the schema allows a year) but this service's
    ``offline_max_days`` policy forbids."""

    code = "window_too_long"


class PayloadTooLarge(ServiceError):
    code = "payload_too_large"
    exit_code = exit_codes.USAGE


class RangeNotSatisfiable(ServiceError):
    code = "range_not_satisfiable"
    exit_code = exit_codes.USAGE

    def __init__(self, detail: str, *, length: int) -> None:
        super().__init__(detail)
        self.length = length  # the blob's: the answer names it (Content-Range: bytes */LENGTH)


class UnsupportedEncoding(ServiceError):
    code = "unsupported_encoding"


class Unprocessable(ServiceError):
    code = "unprocessable"
    exit_code = exit_codes.USAGE
