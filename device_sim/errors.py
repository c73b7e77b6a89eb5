"""The device's error tree: the same class names and report codes as the TypeScript
client (react-native-stub/src/core/errors.ts; listed in docs/device.md "Error classes").
Every class carries its ``code``, the snake_case ``reason`` a report carries.

    ModelSyncError (packager.errors)                                        error
    ├── VerificationError (packager.errors)  a trust check failed (state left unchanged)
    │   │                                                                   verification
    │   ├── FormatError (packager.errors)        1.1 2.1 3.2                format
    │   │   └── PackFormatError (packager.errors) P.1                       pack_format
    │   ├── WrongTypeError (packager.errors)     1.1 2.1 3.2                wrong_type
    │   ├── UnknownKeyError (packager.errors)    1.1 1.3 1.4 2.2 3.3        unknown_key
    │   ├── BadSignatureError (packager.errors)  1.1 1.3 1.4 2.2 3.3        bad_signature
    │   ├── ThresholdError (packager.errors)     1.1 1.3 1.4 2.2 3.3        threshold
    │   ├── ExpiredError (packager.errors)       1.6                        expired
    │   │   ├── StaleIndexError                  2.5                        stale_index
    │   │   └── StalePackError                   P.2                        stale_pack
    │   ├── RollbackError (packager.errors)      2.4                        rollback
    │   ├── RootChainError                       1.2                        root_chain
    │   ├── WrongChannelError                    2.3                        wrong_channel
    │   ├── MixAndMatchError                     3.1 3.4                    mix_and_match
    │   ├── ModelRollbackError                   3.5                        model_rollback
    │   ├── NoArtifactForTargetError             3.6                        no_artifact_for_target
    │   ├── RuntimeTooOldError                   3.7                        runtime_too_old
    │   ├── LengthMismatchError                  4.1                        length_mismatch
    │   ├── HashMismatchError                    4.2                        hash_mismatch
    │   ├── ArtifactLoadError                    4.3                        artifact_load
    │   └── GoldenVectorError                    4.4                        golden_vector
    ├── DownloadError       a status the protocol does not allow, a cut     download
    │   └── SlowRetrievalError   the sync's overall deadline passed        slow_retrieval
    ├── StoreError          the state directory cannot be read or written   store
    │
    │   Python only (the TypeScript client has no such part):
    ├── NoModelError        nothing installed that can serve a prediction   no_model
    ├── EngineError         an inference engine cannot serve                engine
    │   ├── ModelLoadError  the model file is missing, corrupt, unloadable  model_load
    │   └── InputError      features of the wrong shape or with NaN / inf   input
    ├── ServiceStartError   the local `modelsync serve` did not come up     service_start
    └── DemoError           a demo stage failed                             demo

The verification classes from ``packager.errors`` are the schema layer's; they are the
same objects here, so ``except VerificationError`` catches both kinds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from packager import exit_codes
from packager.errors import (
    BadSignatureError,
    ExpiredError,
    FormatError,
    ModelSyncError,
    PackFormatError,
    RollbackError,
    ThresholdError,
    UnknownKeyError,
    VerificationError,
    WrongTypeError,
)

if TYPE_CHECKING:
    from packager.manifest import ChannelIndex

__all__ = [
    "PERMANENT",
    "ArtifactLoadError",
    "BadSignatureError",
    "DemoError",
    "DownloadError",
    "EngineError",
    "ExpiredError",
    "FormatError",
    "GoldenVectorError",
    "HashMismatchError",
    "InputError",
    "LengthMismatchError",
    "MixAndMatchError",
    "ModelLoadError",
    "ModelRollbackError",
    "ModelSyncError",
    "NoArtifactForTargetError",
    "NoModelError",
    "PackFormatError",
    "RollbackError",
    "RootChainError",
    "RuntimeTooOldError",
    "ServiceStartError",
    "SlowRetrievalError",
    "StaleIndexError",
    "StalePackError",
    "StoreError",
    "ThresholdError",
    "UnknownKeyError",
    "VerificationError",
    "WrongChannelError",
    "WrongTypeError",
    "error_code",
    "is_permanent",
]


# --------------------------------------------------------------------------- trust checks


class RootChainError(VerificationError):
    """check 1.2: the next root is not version N+1, or the chain is too long."""

    code = "root_chain"


class StaleIndexError(ExpiredError):
    """check 2.5: a genuine index that has expired (freeze attack or long offline spell)."""

    code = "stale_index"

    def __init__(self, message: str, index: ChannelIndex) -> None:
        super().__init__(message)
        self.index = index


class StalePackError(ExpiredError):
    """check P.2: an offline pack outside its validity window (not yet valid, or expired)."""

    code = "stale_pack"


class WrongChannelError(VerificationError):
    """check 2.3: an index for another fleet or channel."""

    code = "wrong_channel"


class MixAndMatchError(VerificationError):
    """checks 3.1, 3.4: the manifest is not the one the index entry names."""

    code = "mix_and_match"


class ModelRollbackError(VerificationError):
    """check 3.5: model version lower than the installed one."""

    code = "model_rollback"


class NoArtifactForTargetError(VerificationError):
    """check 3.6"""

    code = "no_artifact_for_target"


class RuntimeTooOldError(VerificationError):
    """check 3.7: the artifact was written by a newer onnxruntime than the device has."""

    code = "runtime_too_old"


class LengthMismatchError(VerificationError):
    """check 4.1: more bytes than declared (endless data), or fewer at the end."""

    code = "length_mismatch"


class HashMismatchError(VerificationError):
    """check 4.2"""

    code = "hash_mismatch"


class ArtifactLoadError(VerificationError):
    """check 4.3: onnxruntime cannot load the artifact."""

    code = "artifact_load"


class GoldenVectorError(VerificationError):
    """check 4.4: the new model misses the manifest's golden vectors."""

    code = "golden_vector"


# --------------------------------------------------------------------------- network, state


class DownloadError(ModelSyncError):
    """The network failed us: a status the protocol does not allow, a cut, a timeout.
    ``damaged``: the bytes that did arrive cannot be trusted as a prefix (an undecodable
    zstd stream), so a partial file made of them is discarded rather than resumed."""

    code = "download"
    exit_code = exit_codes.UNREACHABLE

    def __init__(self, message: str, *, damaged: bool = False, status: int | None = None) -> None:
        super().__init__(message)
        self.damaged = damaged
        self.status = status  # the HTTP status that refused the request, when one did


class SlowRetrievalError(DownloadError):
    """The sync's overall deadline passed (a server trickling bytes cannot hold the device)."""

    code = "slow_retrieval"


class StoreError(ModelSyncError):
    """The state directory cannot be read or written (docs/device.md, Error classes)."""

    code = "store"
    exit_code = exit_codes.USAGE


# --------------------------------------------------------------------------- Python only


class NoModelError(ModelSyncError):
    """Nothing installed (yet) that can serve a prediction."""

    code = "no_model"
    exit_code = exit_codes.NOT_FOUND


class EngineError(ModelSyncError):
    """An inference engine cannot serve."""

    code = "engine"
    exit_code = exit_codes.USAGE


class ModelLoadError(EngineError):
    """The model file is missing, corrupt or not loadable."""

    code = "model_load"


class InputError(EngineError):
    """Features of the wrong shape or with NaN / inf: the caller's mistake."""

    code = "input"


class ServiceStartError(ModelSyncError):
    """The local ``modelsync serve`` process did not come up."""

    code = "service_start"
    exit_code = exit_codes.INTERNAL


class DemoError(ModelSyncError):
    """A stage of ``modelsync demo`` failed."""

    code = "demo"
    exit_code = exit_codes.INTERNAL


# Failures of the version itself rather than of this attempt to fetch it: never retried.
PERMANENT: tuple[type[VerificationError], ...] = (
    NoArtifactForTargetError,
    RuntimeTooOldError,
    ArtifactLoadError,
    GoldenVectorError,
)


def is_permanent(exc: BaseException) -> bool:
    """Versions that failed these checks are never retried (docs/device.md, Reports)."""
    return isinstance(exc, PERMANENT)


def error_code(exc: BaseException) -> str:
    """The snake_case reason a report carries for ``exc``."""
    return exc.code if isinstance(exc, ModelSyncError) else "error"
