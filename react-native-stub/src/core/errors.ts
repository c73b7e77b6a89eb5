/**
 * The client's error tree: the same class names and report codes as the Python device
 * (packager/errors.py, device_sim/errors.py; listed in docs/device.md "Error classes").
 *
 *   ModelSyncError
 *   ├── VerificationError            a trust check failed (state left unchanged)
 *   │   ├── FormatError              1.1 2.1 3.2 P.2   format
 *   │   │   └── PackFormatError      P.1           pack_format
 *   │   ├── WrongTypeError           1.1 2.1 3.2   wrong_type
 *   │   ├── UnknownKeyError          1.1 1.3 1.4 2.2 3.3   unknown_key
 *   │   ├── BadSignatureError        1.1 1.3 1.4 2.2 3.3   bad_signature
 *   │   ├── ThresholdError           1.1 1.3 1.4 2.2 3.3   threshold
 *   │   ├── ExpiredError             1.6           expired
 *   │   │   ├── StaleIndexError      2.5           stale_index
 *   │   │   └── StalePackError       P.2.5         stale_pack
 *   │   ├── RollbackError            2.4           rollback
 *   │   ├── RootChainError           1.2           root_chain
 *   │   ├── WrongChannelError        2.3           wrong_channel
 *   │   ├── MixAndMatchError         3.1 3.4       mix_and_match
 *   │   ├── ModelRollbackError       3.5           model_rollback
 *   │   ├── NoArtifactForTargetError 3.6           no_artifact_for_target
 *   │   ├── RuntimeTooOldError       3.7           runtime_too_old
 *   │   ├── LengthMismatchError      4.1           length_mismatch
 *   │   ├── HashMismatchError        4.2           hash_mismatch
 *   │   ├── ArtifactLoadError        4.3           artifact_load
 *   │   └── GoldenVectorError        4.4           golden_vector
 *   ├── DownloadError                a status the protocol does not allow, a cut connection   download
 *   │   └── SlowRetrievalError       slow_retrieval
 *   └── StoreError                   unreadable or unwritable state   store
 */

export class ModelSyncError extends Error {
  /** snake_case reason carried by reports (docs/device.md). */
  readonly code: string = "error";

  constructor(message: string) {
    super(message);
    // The class name survives minification only if set explicitly: tests and reports use it.
    this.name = new.target.errorName;
  }

  static readonly errorName: string = "ModelSyncError";
}

export class VerificationError extends ModelSyncError {
  static override readonly errorName: string = "VerificationError";
  override readonly code: string = "verification";
}

export class FormatError extends VerificationError {
  static override readonly errorName: string = "FormatError";
  override readonly code: string = "format";
}
/** check P.1: an offline pack's container (magic, header, a member's length, decompression
 * or listed sha256) is broken; the pack is refused as a whole. */
export class PackFormatError extends FormatError {
  static override readonly errorName = "PackFormatError";
  override readonly code = "pack_format";
}
export class WrongTypeError extends VerificationError {
  static override readonly errorName = "WrongTypeError";
  override readonly code = "wrong_type";
}
export class UnknownKeyError extends VerificationError {
  static override readonly errorName = "UnknownKeyError";
  override readonly code = "unknown_key";
}
export class BadSignatureError extends VerificationError {
  static override readonly errorName = "BadSignatureError";
  override readonly code = "bad_signature";
}
export class ThresholdError extends VerificationError {
  static override readonly errorName = "ThresholdError";
  override readonly code = "threshold";
}
export class ExpiredError extends VerificationError {
  static override readonly errorName: string = "ExpiredError";
  override readonly code: string = "expired";
}
export class StaleIndexError extends ExpiredError {
  static override readonly errorName = "StaleIndexError";
  override readonly code = "stale_index";
  /** The genuine (signature-checked) but expired index. */
  readonly index: unknown;
  constructor(message: string, index: unknown) {
    super(message);
    this.index = index;
  }
}
/** check P.2.5: an offline pack's snapshot is outside its validity window. */
export class StalePackError extends ExpiredError {
  static override readonly errorName = "StalePackError";
  override readonly code = "stale_pack";
}
export class RollbackError extends VerificationError {
  static override readonly errorName = "RollbackError";
  override readonly code = "rollback";
}
export class RootChainError extends VerificationError {
  static override readonly errorName = "RootChainError";
  override readonly code = "root_chain";
}
export class WrongChannelError extends VerificationError {
  static override readonly errorName = "WrongChannelError";
  override readonly code = "wrong_channel";
}
export class MixAndMatchError extends VerificationError {
  static override readonly errorName = "MixAndMatchError";
  override readonly code = "mix_and_match";
}
export class ModelRollbackError extends VerificationError {
  static override readonly errorName = "ModelRollbackError";
  override readonly code = "model_rollback";
}
export class NoArtifactForTargetError extends VerificationError {
  static override readonly errorName = "NoArtifactForTargetError";
  override readonly code = "no_artifact_for_target";
}
export class RuntimeTooOldError extends VerificationError {
  static override readonly errorName = "RuntimeTooOldError";
  override readonly code = "runtime_too_old";
}
export class LengthMismatchError extends VerificationError {
  static override readonly errorName = "LengthMismatchError";
  override readonly code = "length_mismatch";
}
export class HashMismatchError extends VerificationError {
  static override readonly errorName = "HashMismatchError";
  override readonly code = "hash_mismatch";
}
export class ArtifactLoadError extends VerificationError {
  static override readonly errorName = "ArtifactLoadError";
  override readonly code = "artifact_load";
}
export class GoldenVectorError extends VerificationError {
  static override readonly errorName = "GoldenVectorError";
  override readonly code = "golden_vector";
}

export class DownloadError extends ModelSyncError {
  static override readonly errorName: string = "DownloadError";
  override readonly code: string = "download";
  readonly status: number | undefined;
  /** The bytes that did arrive cannot be trusted as a prefix (an undecodable zstd stream):
   * a partial file made of them is discarded, not resumed (the Python DownloadError's). */
  readonly damaged: boolean;
  constructor(message: string, status?: number, damaged = false) {
    super(message);
    this.status = status;
    this.damaged = damaged;
  }
}
export class SlowRetrievalError extends DownloadError {
  static override readonly errorName = "SlowRetrievalError";
  override readonly code = "slow_retrieval";
}

export class StoreError extends ModelSyncError {
  static override readonly errorName = "StoreError";
  override readonly code = "store";
}

/** Versions that failed these checks are never retried (docs/device.md, Reports). */
export const PERMANENT_ERRORS = [
  NoArtifactForTargetError,
  RuntimeTooOldError,
  ArtifactLoadError,
  GoldenVectorError,
] as const;

export function isPermanent(err: unknown): boolean {
  return PERMANENT_ERRORS.some((cls) => err instanceof cls);
}

export function errorCode(err: unknown): string {
  return err instanceof ModelSyncError ? err.code : "error";
}
