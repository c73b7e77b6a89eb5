"""The packager's error tree, drawn in one place, with each class's ``code``.

    ModelSyncError                  error              anything modelsync raises on purpose;
    │                                                  the CLI prints it in one line
    ├── UsageError                  usage              bad arguments, missing or unreadable
    │                                                  input files
    ├── KeyLoadError                key_load           a key file that is missing, malformed,
    │                                                  encrypted without a passphrase, or
    │                                                  decrypted with the wrong one
    ├── PackagingError              packaging          the model cannot be packaged
    │   ├── UnsupportedModelError   unsupported_model  no converter for this estimator
    │   └── ParityError             parity             a converted model missed its parity gate
    │                                                  (says by how much)
    ├── BundleError                 bundle             a bundle on disk is malformed or does not
    │                                                  match its manifest
    ├── UnreachableError            unreachable        a server cannot be reached, or answered
    │                                                  with a server error
    ├── NotFoundError               not_found          a local thing the command names is absent
    ├── ConflictError               conflict           it exists already, or its state forbids
    │                                                  the change
    └── VerificationError           verification       a signed document or artifact failed a
        │                                              trust check
        ├── FormatError             format             not a well-formed envelope / document
        │   └── PackFormatError     pack_format        an offline pack's container is broken
        │                                              (cut, overlong, bad header or member)
        ├── WrongTypeError          wrong_type         `_type` is not the one expected
        ├── UnknownKeyError         unknown_key        only keys outside the role signed it
        ├── BadSignatureError       bad_signature      a role key's signature does not verify
        ├── ThresholdError          threshold          fewer valid role signatures than the
        │                                              threshold
        ├── ExpiredError            expired            `expires` is in the past
        └── RollbackError           rollback           a version lower than the trusted one

``code`` is the snake_case reason a device report carries (docs/device.md, Error classes);
the verification codes are the ones devices have always reported, and ``error`` and
``verification`` are the TypeScript client's (react-native-stub/src/core/errors.ts). Device
checks (device_sim/errors.py) extend VerificationError with their own leaves and codes; the
sync service maps these classes to HTTP answers in sync_service/api/errors.py, not by
``code``.

Each class also carries the ``exit_code`` the CLI ends with (packager/exit_codes.py, the
table in docs/cli.md); subclasses inherit their base's unless they name their own.
"""

from __future__ import annotations

from packager import exit_codes


class ModelSyncError(Exception):
    """Base of every error modelsync raises deliberately."""

    code: str = "error"
    exit_code: int = exit_codes.INTERNAL


class UsageError(ModelSyncError):
    code = "usage"
    exit_code = exit_codes.USAGE


class KeyLoadError(ModelSyncError):
    code = "key_load"
    exit_code = exit_codes.USAGE


class PackagingError(ModelSyncError):
    code = "packaging"
    exit_code = exit_codes.USAGE


class UnsupportedModelError(PackagingError):
    code = "unsupported_model"


class ParityError(PackagingError):
    code = "parity"
    exit_code = exit_codes.VERIFICATION


class BundleError(ModelSyncError):
    code = "bundle"
    exit_code = exit_codes.VERIFICATION


class VerificationError(ModelSyncError):
    code = "verification"
    exit_code = exit_codes.VERIFICATION


class FormatError(VerificationError):
    code = "format"


class PackFormatError(FormatError):
    """An offline pack's container is not one: bad magic, a header that does not parse, a
    file cut short or longer than it says, a member that does not decompress to its
    declared length (packager/offline_pack.py)."""

    code = "pack_format"


class WrongTypeError(VerificationError):
    code = "wrong_type"


class UnknownKeyError(VerificationError):
    code = "unknown_key"


class BadSignatureError(VerificationError):
    code = "bad_signature"


class ThresholdError(VerificationError):
    code = "threshold"


class ExpiredError(VerificationError):
    code = "expired"


class RollbackError(VerificationError):
    code = "rollback"


class UnreachableError(ModelSyncError):
    """A server cannot be reached or answered with a server error (5xx)."""

    code = "unreachable"
    exit_code = exit_codes.UNREACHABLE


class NotFoundError(ModelSyncError):
    """A local thing the command names does not exist (a state directory, a model)."""

    code = "not_found"
    exit_code = exit_codes.NOT_FOUND


class ConflictError(ModelSyncError):
    """The thing exists already, or its state forbids the change (see --force)."""

    code = "conflict"
    exit_code = exit_codes.CONFLICT


def exit_code_of(exc: BaseException) -> int:
    """The exit code for ``exc``: its class's ``exit_code``, INTERNAL for anything else."""
    code = getattr(exc, "exit_code", None) if isinstance(exc, ModelSyncError) else None
    return code if isinstance(code, int) else exit_codes.INTERNAL
