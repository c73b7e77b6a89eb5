"""The one definition of modelsync's signed documents: root, model manifest, channel index.

Producer (packager, sync_service) and consumer (device_sim, and the TypeScript client by
way of tests/vectors/) all follow this file. It imports nothing heavy: a device must not
load a trainer to check a signature.

Envelope: ``{"signed": {...}, "signatures": [{"keyid": K, "sig": S}]}`` where ``S`` is the
hex Ed25519 signature over ``canonical_bytes(signed)`` (RFC 8785) and ``K`` the hex SHA-256
of the raw 32-byte public key. Signatures are always checked over the ``signed`` object
exactly as received, never over a re-serialised model, so unknown fields a newer producer
adds are covered by the signature too.

Structure and signatures only. The trust policy (root v(N+1) chain, index rollback,
expiry, freeze) is the device's, in device_sim/trust.py and the TypeScript client's
core/trust.ts, numbered in docs/device.md.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from packager.behaviour import BehaviourProfile
from packager.errors import (
    BadSignatureError,
    ExpiredError,
    FormatError,
    ThresholdError,
    UnknownKeyError,
    WrongTypeError,
)

SPEC_VERSION = "1.0"
# The largest manifest.json a packager writes and a device reads (docs/packager.md,
# docs/device.md 3.1): a manifest is metadata and golden vectors, tens of KiB; the root and
# index have caps of their own on the device (1 MiB, 8 MiB).
MAX_MANIFEST_BYTES = 1 << 20

Role = Literal["root", "publisher", "index", "offline"]
# The roles every root names. ``offline`` signs the index snapshots inside offline packs
# (docs/offline.md); it is optional, so roots written before it existed stay valid, and a
# device whose root lacks it refuses packs and nothing else.
ROLES: tuple[Role, ...] = ("root", "publisher", "index")
OPTIONAL_ROLES: tuple[Role, ...] = ("offline",)
Target = Literal["android-nnapi", "ios-coreml", "cpu"]
TARGETS: tuple[Target, ...] = ("android-nnapi", "ios-coreml", "cpu")
Precision = Literal["fp32", "fp16", "int8"]

Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
KeyId = Sha256Hex


# --------------------------------------------------------------------------- canonical bytes


def canonical_bytes(obj: Any) -> bytes:
    """RFC 8785 bytes of a JSON value; signing and verifying both call this and only this."""
    try:
        return rfc8785.dumps(obj)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise FormatError(f"cannot canonicalise document: {exc}") from exc


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def public_raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def keyid_of(key: Ed25519PublicKey | bytes) -> str:
    raw = key if isinstance(key, bytes) else public_raw(key)
    return sha256_hex(raw)


def format_time(moment: datetime) -> str:
    """ISO-8601 UTC with a ``Z``, whole seconds: the only time format in signed documents."""
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    try:
        if not text.endswith("Z"):
            raise ValueError("must end in Z")
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise FormatError(f"bad timestamp {text!r}: expected YYYY-MM-DDTHH:MM:SSZ") from exc


def utcnow() -> datetime:
    return datetime.now(UTC)


def expiry_in(delta: timedelta, now: datetime | None = None) -> str:
    return format_time((now or utcnow()) + delta)


# --------------------------------------------------------------------------- schemas


class _Doc(BaseModel):
    # Unknown fields are kept (they are signed) but ignored by this version.
    model_config = ConfigDict(extra="allow", frozen=True)


class Signature(_Doc):
    keyid: KeyId
    sig: str = Field(pattern=r"^[0-9a-f]{128}$")


class Envelope(_Doc):
    signed: dict[str, Any]
    signatures: list[Signature]


class PublicKey(_Doc):
    keytype: Literal["ed25519"] = "ed25519"
    scheme: Literal["ed25519"] = "ed25519"
    public: str = Field(pattern=r"^[0-9a-f]{64}$", description="raw 32-byte key, hex")


class RoleKeys(_Doc):
    keyids: list[KeyId] = Field(min_length=1)
    threshold: int = Field(ge=1)


class Root(_Doc):
    type: Literal["root"] = Field("root", alias="_type")
    spec_version: str = SPEC_VERSION
    version: int = Field(ge=1)
    expires: str
    keys: dict[KeyId, PublicKey]
    # Any role name is accepted and ones this version does not know are ignored, so a
    # newer root's extra roles do not stop an older device's root walk.
    roles: dict[str, RoleKeys]

    def role_keys(self, role: Role) -> tuple[dict[str, Ed25519PublicKey], int]:
        if role not in self.roles:
            raise FormatError(f"root v{self.version} defines no {role!r} role")
        spec = self.roles[role]
        keys = {
            kid: Ed25519PublicKey.from_public_bytes(bytes.fromhex(self.keys[kid].public))
            for kid in spec.keyids
            if kid in self.keys
        }
        return keys, spec.threshold


class Feature(_Doc):
    name: str
    dtype: Literal["float32"] = "float32"
    description: str = ""


class TensorSpec(_Doc):
    name: str
    dtype: Literal["float32", "float16", "int64"]
    shape: list[int | None]
    meaning: str = ""


class ModelCard(_Doc):
    family: str = Field(description="isolation_forest | autoencoder | pca | lightgbm | sklearn")
    framework: str
    framework_version: str
    features: list[Feature] = Field(min_length=1)
    input: TensorSpec
    outputs: list[TensorSpec]
    threshold: float = Field(description="decision threshold on `score`: below it is an anomaly")
    training_data_sha256: Sha256Hex | None = None
    description: str = ""


class Quantization(_Doc):
    applied: bool
    method: str | None = Field(None, description="dynamic | qdq-static | float16")
    reason: str = Field("", description="why it was or was not applied")


class ProviderPlan(_Doc):
    provider: str = Field(description="NNAPIExecutionProvider | CoreMLExecutionProvider | ...")
    supported_nodes: int
    total_nodes: int
    partitions: int
    recommended: bool
    note: str = ""


class EpPlan(_Doc):
    providers: list[str] = Field(description="providers in the order a device should ask for them")
    analysis: list[ProviderPlan] = []
    cpu_recommended: bool
    summary: str


class Parity(_Doc):
    rows: int
    label_agreement: float
    max_abs_score_diff: float
    mean_abs_score_diff: float
    spearman: float


class GoldenTolerance(_Doc):
    score_atol: float = Field(ge=0)
    max_label_mismatches: int = Field(0, ge=0)


class Compressed(_Doc):
    encoding: Literal["zstd"] = "zstd"
    level: int
    length: int = Field(ge=0)
    sha256: Sha256Hex


class Artifact(_Doc):
    target: Target
    path: str = Field(description="file name inside the bundle: '<sha256>.ort'")
    sha256: Sha256Hex
    length: int = Field(ge=1)
    format: Literal["ort", "onnx"] = "ort"
    precision: Precision
    ort_version: str = Field(description="onnxruntime version that wrote the file")
    optimization_style: Literal["Fixed", "Runtime"]
    input_shape: list[int | None]
    quantization: Quantization
    ep_plan: EpPlan
    parity: Parity
    golden_tolerance: GoldenTolerance
    compressed: Compressed | None = None


class Reference(_Doc):
    """The scikit-learn object the artifacts were checked against (joblib). Devices never
    unpickle it from the network; it is for `modelsync device parity` and trusted fallbacks."""

    path: str
    sha256: Sha256Hex
    length: int = Field(ge=1)
    format: Literal["joblib"] = "joblib"


RowSource = Literal["calibration", "given", "model-statistics", "tree-leaves"]


class GoldenSelection(_Doc):
    """How the golden rows were chosen (docs/packager.md, "Rows without calibration"); the
    parity rows come from the same source. Informational: a device checks the rows, not
    this record."""

    source: RowSource = Field(
        description="calibration: the --calibration rows; given: rows the caller passed; "
        "model-statistics / tree-leaves: drawn by the packager from the fitted model"
    )
    normal: int = Field(ge=0, description="rows the reference calls normal")
    anomalous: int = Field(ge=0, description="rows the reference calls anomalous")
    boundary: int = Field(0, ge=0, description="rows a float32 step either side of the threshold, in pairs")
    boundary_steps: int = Field(
        1, ge=1, description="float32 steps between the widest pair's rows in the feature they differ in"
    )
    note: str = ""


class GoldenVectors(_Doc):
    inputs: list[list[float]] = Field(min_length=1)
    label: list[int]
    score: list[float]
    selection: GoldenSelection | None = None  # absent in bundles written before it existed


class ModelManifest(_Doc):
    type: Literal["model-manifest"] = Field("model-manifest", alias="_type")
    spec_version: str = SPEC_VERSION
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    version: int = Field(ge=1)
    created: str
    model: ModelCard
    artifacts: list[Artifact] = Field(min_length=1)
    reference: Reference | None = None
    golden: GoldenVectors
    behaviour: BehaviourProfile | None = None  # absent in bundles written before it existed

    def artifact_for(self, target: str) -> Artifact | None:
        return next((a for a in self.artifacts if a.target == target), None)


class FileRef(_Doc):
    path: str = Field(description="URL path relative to /v1/, e.g. 'blobs/<sha256>'")
    length: int = Field(ge=1)
    sha256: Sha256Hex


class Rollout(_Doc):
    percent: float = Field(ge=0, le=100)
    salt: str = Field(min_length=1)


class IndexEntry(_Doc):
    model: str
    version: int = Field(ge=1)
    manifest: FileRef
    rollout: Rollout
    urgent: bool = False


class ReportAfter(_Doc):
    rows: int = Field(ge=1, le=1_000_000)
    hours: float = Field(gt=0, le=720, allow_inf_nan=False)


class ShadowEntry(IndexEntry):
    """A candidate a device holds and runs beside its active model (docs/behaviour.md
    "Shadow runs"), reporting agreement after ``report_after`` rows or hours."""

    report_after: ReportAfter


class ChannelIndex(_Doc):
    type: Literal["channel-index"] = Field("channel-index", alias="_type")
    spec_version: str = SPEC_VERSION
    fleet: str
    channel: str
    version: int = Field(ge=1)
    expires: str
    # Per model, newest first: a device takes the first entry whose rollout includes it.
    models: dict[str, list[IndexEntry]]
    # Apart from ``models``, so a client that predates shadows never installs one.
    shadows: dict[str, list[ShadowEntry]] = Field(default_factory=dict)


class OfflineIndex(_Doc):
    """The channel index as an offline pack carries it (docs/offline.md): the same entries,
    signed by the ``offline`` role, valid from ``valid_from`` to ``expires``. A distinct
    ``_type`` and role, so a pack's long-lived snapshot can never be served as an online
    index, nor an online index passed off as a pack's."""

    type: Literal["offline-index"] = Field("offline-index", alias="_type")
    spec_version: str = SPEC_VERSION
    fleet: str
    channel: str
    # The online index version the snapshot was taken from: the same counter, so a pack
    # and the network can never move a device backwards past each other.
    version: int = Field(ge=1)
    valid_from: str
    expires: str
    pack_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    models: dict[str, list[IndexEntry]]


SIGNED_TYPES: dict[str, type[_Doc]] = {
    "root": Root,
    "model-manifest": ModelManifest,
    "channel-index": ChannelIndex,
    "offline-index": OfflineIndex,
}
ROLE_FOR_TYPE: dict[str, Role] = {
    "root": "root",
    "model-manifest": "publisher",
    "channel-index": "index",
    "offline-index": "offline",
}


# --------------------------------------------------------------------------- sign / verify


def sign(signed: Mapping[str, Any], keys: Iterable[Ed25519PrivateKey]) -> dict[str, Any]:
    """Wrap ``signed`` in an envelope signed by every key given."""
    body = dict(signed)
    data = canonical_bytes(body)
    sigs = [
        {"keyid": keyid_of(k.public_key()), "sig": k.sign(data).hex()}
        for k in keys
    ]
    return {"signed": body, "signatures": sigs}


def parse_envelope(raw: Any) -> Envelope:
    if not isinstance(raw, dict):
        raise FormatError("document is not a JSON object")
    try:
        return Envelope.model_validate(raw)
    except ValidationError as exc:
        raise FormatError(f"malformed envelope: {first_error(exc)}") from exc


def check_signatures(
    envelope: Envelope, keys: Mapping[str, Ed25519PublicKey], threshold: int, what: str
) -> int:
    """Count distinct role keys whose signature verifies; raise unless >= threshold.

    Which error: a role key whose signature fails is BadSignatureError (the document or
    signature was altered); signatures only from keys outside the role is UnknownKeyError;
    too few valid ones is ThresholdError.
    """
    data = canonical_bytes(envelope.signed)
    valid: set[str] = set()
    bad: list[str] = []
    unknown: list[str] = []
    for s in envelope.signatures:
        key = keys.get(s.keyid)
        if key is None:
            unknown.append(s.keyid)
            continue
        try:
            key.verify(bytes.fromhex(s.sig), data)
            valid.add(s.keyid)
        except InvalidSignature:
            bad.append(s.keyid)
    if len(valid) >= threshold:
        return len(valid)
    if bad:
        raise BadSignatureError(f"{what}: signature by key {bad[0][:12]}… does not verify")
    if unknown and not valid:
        raise UnknownKeyError(
            f"{what}: signed only by keys outside the role ({unknown[0][:12]}…)"
        )
    raise ThresholdError(f"{what}: {len(valid)} valid signature(s), threshold is {threshold}")


def _typed(envelope: Envelope, expected: str) -> Any:
    got = envelope.signed.get("_type")
    if got != expected:
        raise WrongTypeError(f"expected _type {expected!r}, got {got!r}")
    cls = SIGNED_TYPES[expected]
    try:
        return cls.model_validate(envelope.signed)
    except ValidationError as exc:
        raise FormatError(f"malformed {expected}: {first_error(exc)}") from exc


def first_error(exc: ValidationError) -> str:
    """A validation error as one line: where, then what."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(document)"
    return f"{loc}: {err['msg']}"


def check_expiry(expires: str, now: datetime | None, what: str) -> None:
    """What ``expires`` means: at or after it the document is expired. When a check applies
    is the trust policy's to say (device_sim/trust.py, checks 1.6 and 2.5)."""
    if parse_time(expires) <= (now or utcnow()):
        raise ExpiredError(f"{what} expired at {expires}")


def verify_root_self(raw: Any) -> Root:
    """A root signed by a threshold of its own root keys. Signatures only: whether it is
    new enough or still current is the trust policy's (device_sim/trust.py, checks 1.2, 1.6)."""
    env = parse_envelope(raw)
    root: Root = _typed(env, "root")
    keys, threshold = root.role_keys("root")
    check_signatures(env, keys, threshold, f"root v{root.version}")
    return root


def verify_root_signed_by(trusted: Root, raw: Any) -> Root:
    """A root signed by a threshold of ``trusted``'s root keys and of its own. Signatures
    only: that it is exactly v(N+1) is check 1.2 of the trust policy (device_sim/trust.py)."""
    env = parse_envelope(raw)
    new: Root = _typed(env, "root")
    old_keys, old_threshold = trusted.role_keys("root")
    check_signatures(env, old_keys, old_threshold, f"root v{new.version} (by v{trusted.version} keys)")
    new_keys, new_threshold = new.role_keys("root")
    check_signatures(env, new_keys, new_threshold, f"root v{new.version} (by its own keys)")
    return new


def verify_manifest(raw: Any, root: Root) -> ModelManifest:
    """Publisher threshold; manifests never expire (indexes carry freshness)."""
    env = parse_envelope(raw)
    manifest: ModelManifest = _typed(env, "model-manifest")
    keys, threshold = root.role_keys("publisher")
    check_signatures(env, keys, threshold, f"manifest {manifest.name} v{manifest.version}")
    return manifest


def verify_index(raw: Any, root: Root) -> ChannelIndex:
    """Index threshold. Signatures only: rollback and expiry are the trust policy's
    (device_sim/trust.py, checks 2.4, 2.5), which runs them after this."""
    env = parse_envelope(raw)
    index: ChannelIndex = _typed(env, "channel-index")
    keys, threshold = root.role_keys("index")
    check_signatures(env, keys, threshold, f"channel index {index.fleet}/{index.channel}")
    return index


def verify_offline_index(raw: Any, root: Root) -> OfflineIndex:
    """Offline-role threshold. Signatures only: the validity window, fleet and version are
    the trust policy's (device_sim/trust.py, check P.2)."""
    env = parse_envelope(raw)
    index: OfflineIndex = _typed(env, "offline-index")
    keys, threshold = root.role_keys("offline")
    check_signatures(env, keys, threshold, f"offline index {index.fleet}/{index.channel}")
    return index


def verify_document(raw: Any, root: Root, expected_type: str) -> Any:
    """Generic check by ``_type`` (signatures only): used by the test vectors."""
    env = parse_envelope(raw)
    doc = _typed(env, expected_type)
    keys, threshold = root.role_keys(ROLE_FOR_TYPE[expected_type])
    check_signatures(env, keys, threshold, expected_type)
    return doc
