"""The project's error tree, drawn in one place.

    ModelSyncError                  anything modelsync raises on purpose; the CLI prints it
    ├── UsageError                  bad arguments, missing or unreadable input files
    ├── KeyLoadError                a key file that is missing, malformed, encrypted without
    │                               a passphrase, or decrypted with the wrong one
    ├── PackagingError              the model cannot be packaged
    │   ├── UnsupportedModelError   no converter for this estimator
    │   └── ParityError             a converted model missed its parity gate (says by how much)
    ├── BundleError                 a bundle on disk is malformed or does not match its manifest
    └── VerificationError           a signed document or artifact failed a trust check
        ├── FormatError             not a well-formed envelope / document
        ├── WrongTypeError          `_type` is not the one expected
        ├── UnknownKeyError         only keys outside the role signed it
        ├── BadSignatureError       a role key's signature does not verify
        ├── ThresholdError          fewer valid role signatures than the threshold
        ├── ExpiredError            `expires` is in the past
        └── RollbackError           a version lower than the trusted one

Device-side checks (device_sim/errors.py) extend VerificationError with their own leaves;
the TypeScript client uses the same class names.
"""

from __future__ import annotations


class ModelSyncError(Exception):
    """Base of every error modelsync raises deliberately."""

    # The snake_case reason a device report carries (device_sim/errors.py draws that tree).
    code: str = "error"


class UsageError(ModelSyncError):
    pass


class KeyLoadError(ModelSyncError):
    pass


class PackagingError(ModelSyncError):
    pass


class UnsupportedModelError(PackagingError):
    pass


class ParityError(PackagingError):
    pass


class BundleError(ModelSyncError):
    pass


class VerificationError(ModelSyncError):
    code = "verification"


class FormatError(VerificationError):
    code = "format"


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
