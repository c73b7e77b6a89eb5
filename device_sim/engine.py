"""Inference engines: the original ``inference_engine.py`` for the device.

    engine = create_inference_engine("model.ort", EngineType.ONNX)
    result = engine.predict(features)        # numpy or pandas -> Prediction(labels, scores)
    engine.get_metrics().p95_ms

Every engine returns what the artifacts' contract promises (packager): ``labels`` int64,
-1 anomaly / 1 normal, as scikit-learn's ``predict``; ``scores`` float32, scikit-learn's
``decision_function`` (negative is anomalous).

Errors (all ModelSyncError, so the CLI prints one line)::

    EngineError             an engine cannot serve
    ├── ModelLoadError      the model file is missing, corrupt or not loadable
    └── InputError          features of the wrong shape or with NaN / inf

The ONNX engine asks onnxruntime for providers in the order given (the manifest's EP plan:
NNAPI, CoreML, CUDA, TensorRT, then CPU), keeps those this build has, and says which it
dropped (``engine.provider_fallback``, and a log warning). scikit-learn is imported only
when the SKLEARN engine is asked for: a device does not load a trainer.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort
from prometheus_client import CollectorRegistry

from device_sim.engine_config import EngineConfig, load_config
from device_sim.engine_metrics import InferenceMetrics, LatencyRecorder, instruments
from packager.errors import ModelSyncError

if TYPE_CHECKING:
    from packager.manifest import Artifact, ModelManifest

log = logging.getLogger(__name__)


class EngineError(ModelSyncError):
    pass


class ModelLoadError(EngineError):
    pass


class InputError(EngineError):
    pass


class EngineType(enum.StrEnum):
    ONNX = "onnx"
    SKLEARN = "sklearn"


CPU = "CPUExecutionProvider"
# Short names (ONNX_PROVIDER) and the spellings a manifest may use -> onnxruntime's names.
PROVIDER_NAMES: dict[str, str] = {
    "cpu": CPU,
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "nnapi": "NnapiExecutionProvider",
    "cpuexecutionprovider": CPU,
    "cudaexecutionprovider": "CUDAExecutionProvider",
    "tensorrtexecutionprovider": "TensorrtExecutionProvider",
    "coremlexecutionprovider": "CoreMLExecutionProvider",
    "nnapiexecutionprovider": "NnapiExecutionProvider",
}


def canonical_provider(name: str) -> str:
    return PROVIDER_NAMES.get(name.strip().lower(), name.strip())


@dataclass(frozen=True)
class ProviderChoice:
    requested: list[str]
    chosen: list[str]
    missing: list[str]

    @property
    def note(self) -> str | None:
        if not self.missing:
            return None
        return (
            f"{', '.join(self.missing)} not in this onnxruntime build; "
            f"running on {', '.join(self.chosen)}"
        )


def resolve_providers(
    requested: Sequence[str] | None, available: Sequence[str] | None = None
) -> ProviderChoice:
    """Keep the requested order, drop what this build lacks, always end with CPU."""
    have = list(available if available is not None else ort.get_available_providers())
    wanted: list[str] = []
    for name in requested or [CPU]:
        canon = canonical_provider(name)
        if canon not in wanted:
            wanted.append(canon)
    chosen = [p for p in wanted if p in have]
    missing = [p for p in wanted if p not in have]
    if CPU not in chosen:
        chosen.append(CPU)
    return ProviderChoice(requested=wanted, chosen=chosen, missing=missing)


@dataclass(frozen=True)
class Prediction:
    labels: np.ndarray  # int64, -1 anomaly / 1 normal
    scores: np.ndarray  # float32, negative is anomalous

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def anomalies(self) -> int:
        return int((self.labels == -1).sum())


def as_matrix(features: Any, feature_names: Sequence[str] | None, n_features: int | None) -> np.ndarray:
    """float32 [N, F] from numpy, a list or a pandas DataFrame (columns put in manifest order)."""
    if hasattr(features, "columns") and hasattr(features, "to_numpy"):
        if feature_names:
            missing = [c for c in feature_names if c not in features.columns]
            if missing:
                raise InputError(f"features lack column(s) {', '.join(missing[:5])}")
            features = features[list(feature_names)]
        features = features.to_numpy()
    try:
        x = np.asarray(features, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InputError(f"features are not numeric: {exc}") from None
    if x.ndim == 1:
        x = x.reshape(1, -1)
    if x.ndim != 2:
        raise InputError(f"features must be 2-D [rows, features], got shape {list(x.shape)}")
    if n_features is not None and x.shape[1] != n_features:
        raise InputError(f"expected {n_features} features per row, got {x.shape[1]}")
    if x.shape[0] and not np.isfinite(x).all():
        row, col = (int(v) for v in np.argwhere(~np.isfinite(x))[0])
        raise InputError(f"non-finite value at row {row}, feature {col}")
    return np.ascontiguousarray(x)


class InferenceEngine(ABC):
    engine_type: EngineType
    provider: str = "cpu"

    def __init__(
        self,
        *,
        feature_names: Sequence[str] | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.feature_names = list(feature_names) if feature_names else None
        self._recorder = LatencyRecorder()
        self._instruments = instruments(registry)
        self.registry = registry

    @property
    @abstractmethod
    def n_features(self) -> int | None: ...

    @abstractmethod
    def _run(self, x: np.ndarray) -> Prediction: ...

    def predict(self, features: Any) -> Prediction:
        x = as_matrix(features, self.feature_names, self.n_features)
        start = time.perf_counter()
        try:
            result = self._run(x)
        except Exception:
            self._recorder.record_error()
            self._instruments.total.labels(self.engine_type.value, "error").inc()
            raise
        elapsed = time.perf_counter() - start
        self._recorder.record(elapsed, len(x))
        self._instruments.duration.labels(self.engine_type.value, self.provider).observe(elapsed)
        self._instruments.total.labels(self.engine_type.value, "success").inc()
        return result

    def get_metrics(self) -> InferenceMetrics:
        return self._recorder.snapshot()

    def describe(self) -> str:
        return f"{self.engine_type.value} on {self.provider}"


def _is_ort_format(data: bytes) -> bool:
    # ORT-format files are FlatBuffers with the file identifier "ORTM" at bytes 4..8.
    return len(data) >= 8 and data[4:8] == b"ORTM"


class OnnxEngine(InferenceEngine):
    engine_type = EngineType.ONNX

    def __init__(
        self,
        model: str | Path | bytes,
        *,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        profiling: bool | str | Path = False,
        feature_names: Sequence[str] | None = None,
        registry: CollectorRegistry | None = None,
        session: ort.InferenceSession | None = None,
    ) -> None:
        super().__init__(feature_names=feature_names, registry=registry)
        self.source = "<bytes>" if isinstance(model, bytes) else str(model)
        choice = resolve_providers(providers)
        self.requested_providers = choice.requested
        self.provider_fallback = choice.note
        if choice.note:
            log.warning("%s: %s", self.source, choice.note)
        self.session = session or self._load(model, choice.chosen, threads, profiling)
        self.providers: list[str] = list(self.session.get_providers())
        self.provider = self.providers[0]
        inp = self.session.get_inputs()[0]
        self._input_name = inp.name
        # The contract is float32 in; an fp16 graph that kept a float16 input is fed float16.
        self._input_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        shape = list(inp.shape)
        # An NPU-friendly artifact may fix the batch at 1: run it row by row.
        self.fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        self._n_features = shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None
        outs = [o.name for o in self.session.get_outputs()]
        self._label_out, self._score_out = _pick_outputs(outs, self.source)

    @staticmethod
    def _load(
        model: str | Path | bytes, providers: list[str], threads: int | None, profiling: bool | str | Path
    ) -> ort.InferenceSession:
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        if profiling:
            opts.enable_profiling = True
            if not isinstance(profiling, bool):
                opts.profile_file_prefix = str(profiling)
        where = "<bytes>" if isinstance(model, bytes) else str(model)
        try:
            data = model if isinstance(model, bytes) else Path(model).read_bytes()
        except OSError as exc:
            raise ModelLoadError(f"cannot read model {where}: {exc.strerror}") from None
        if _is_ort_format(data):
            opts.add_session_config_entry("session.load_model_format", "ORT")
        try:
            return ort.InferenceSession(data, sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped pybind errors
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(f"onnxruntime cannot load {where}: {first[:300]}") from None

    @property
    def n_features(self) -> int | None:
        return self._n_features

    def _run(self, x: np.ndarray) -> Prediction:
        names = [self._label_out, self._score_out]
        x = x.astype(self._input_dtype, copy=False)
        if self.fixed_batch == 1 and x.shape[0] != 1:
            labels = np.empty(x.shape[0], dtype=np.int64)
            scores = np.empty(x.shape[0], dtype=np.float32)
            for i in range(x.shape[0]):
                lab, sc = self.session.run(names, {self._input_name: x[i : i + 1]})
                labels[i] = np.asarray(lab).ravel()[0]
                scores[i] = np.asarray(sc, dtype=np.float32).ravel()[0]
            return Prediction(labels, scores)
        lab, sc = self.session.run(names, {self._input_name: x})
        return Prediction(
            np.asarray(lab).astype(np.int64, copy=False).ravel(),
            np.asarray(sc, dtype=np.float32).ravel(),
        )

    def end_profiling(self) -> str:
        """Stop profiling and return the JSON file onnxruntime wrote."""
        return str(self.session.end_profiling())


def _pick_outputs(outs: list[str], source: str) -> tuple[str, str]:
    if "label" in outs and "score" in outs:
        return "label", "score"
    # skl2onnx's own IsolationForest converter names them label / scores.
    if "label" in outs and "scores" in outs:
        return "label", "scores"
    if len(outs) >= 2:
        return outs[0], outs[1]
    raise ModelLoadError(f"{source}: expected outputs 'label' and 'score', found {outs}")


class SklearnEngine(InferenceEngine):
    """The scikit-learn reference (joblib). Loading a pickle runs code: only ever from a
    file whose sha256 a signed manifest vouches for (pass ``expected_sha256``)."""

    engine_type = EngineType.SKLEARN
    provider = "sklearn"

    def __init__(
        self,
        model: str | Path | Any,
        *,
        expected_sha256: str | None = None,
        feature_names: Sequence[str] | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        super().__init__(feature_names=feature_names, registry=registry)
        if isinstance(model, str | Path):
            self.source = str(model)
            self.estimator = load_reference(Path(model), expected_sha256)
        else:
            self.source = type(model).__name__
            self.estimator = model
        self._n_features = getattr(self.estimator, "n_features_in_", None)

    @property
    def n_features(self) -> int | None:
        return int(self._n_features) if self._n_features is not None else None

    def _run(self, x: np.ndarray) -> Prediction:
        return reference_predict(self.estimator, x)


def load_reference(path: Path, expected_sha256: str | None) -> Any:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"cannot read reference {path}: {exc.strerror}") from None
    if expected_sha256 is not None:
        got = hashlib.sha256(data).hexdigest()
        if got != expected_sha256:
            raise ModelLoadError(
                f"reference {path.name}: sha256 {got[:12]}… does not match the manifest's "
                f"{expected_sha256[:12]}…; refusing to unpickle it"
            )
    import io

    import joblib  # lazy: pulls in scikit-learn only when the reference is wanted

    try:
        return joblib.load(io.BytesIO(data))
    except Exception as exc:  # unpickling raises anything
        raise ModelLoadError(f"cannot load reference {path.name}: {type(exc).__name__}: {exc}") from None


def reference_predict(estimator: Any, x: np.ndarray) -> Prediction:
    """Labels and scores from a scikit-learn style object, as the artifacts define them."""
    labels = np.asarray(estimator.predict(x)).astype(np.int64).ravel()
    if hasattr(estimator, "decision_function"):
        scores = estimator.decision_function(x)
    else:
        scores = estimator.score_samples(x)
    return Prediction(labels, np.asarray(scores, dtype=np.float32).ravel())


@dataclass(frozen=True)
class Candidate:
    name: str
    load: Callable[[], InferenceEngine]


class FallbackEngine(InferenceEngine):
    """The new ONNX model, else the previous one, else the scikit-learn reference.

    A candidate that fails to load, or raises while predicting, is skipped for good and
    the reason kept in ``failures``; the next one serves the same request. The device keeps
    answering as long as any candidate works."""

    def __init__(self, candidates: Sequence[Candidate], *, registry: CollectorRegistry | None = None) -> None:
        if not candidates:
            raise EngineError("fallback engine needs at least one candidate")
        super().__init__(registry=registry)
        self._pending = list(candidates)
        self._lock = threading.Lock()
        self.failures: list[tuple[str, str]] = []
        self.active: InferenceEngine
        self.active_name: str
        self._advance()

    def _advance(self) -> None:
        while self._pending:
            cand = self._pending.pop(0)
            try:
                engine = cand.load()
            except ModelSyncError as exc:
                self._fail(cand.name, str(exc))
                continue
            self.active, self.active_name = engine, cand.name
            return
        tried = "; ".join(f"{n}: {r}" for n, r in self.failures)
        raise EngineError(f"no engine could serve ({tried})")

    def _fail(self, name: str, reason: str) -> None:
        log.warning("inference engine %s unusable: %s", name, reason)
        self.failures.append((name, reason))

    @property
    def engine_type(self) -> EngineType:  # type: ignore[override]
        return self.active.engine_type

    @property
    def provider(self) -> str:  # type: ignore[override]
        return self.active.provider

    @property
    def n_features(self) -> int | None:
        return self.active.n_features

    def predict(self, features: Any) -> Prediction:
        # Each candidate checks the input itself; a bad input is the caller's fault, not
        # a reason to abandon a working model.
        while True:
            with self._lock:
                engine, name = self.active, self.active_name
            try:
                return engine.predict(features)
            except InputError:
                raise
            except Exception as exc:
                with self._lock:
                    if self.active is engine:
                        self._fail(name, f"predict failed: {type(exc).__name__}: {exc}")
                        self._advance()

    def _run(self, x: np.ndarray) -> Prediction:  # pragma: no cover - predict is overridden
        return self.active.predict(x)

    def get_metrics(self) -> InferenceMetrics:
        return self.active.get_metrics()

    def describe(self) -> str:
        return f"{self.active_name} ({self.active.describe()})"


def create_inference_engine(
    path: str | Path | bytes,
    engine_type: EngineType | str | None = None,
    providers: Sequence[str] | None = None,
    threads: int | None = None,
    *,
    profiling: bool | str | Path | None = None,
    feature_names: Sequence[str] | None = None,
    expected_sha256: str | None = None,
    registry: CollectorRegistry | None = None,
    config: EngineConfig | None = None,
) -> InferenceEngine:
    """The README's factory. Unset arguments come from the environment (engine_config)."""
    cfg = config or load_config()
    if engine_type is None:
        engine_type = EngineType.ONNX if cfg.use_onnx else EngineType.SKLEARN
    engine_type = EngineType(engine_type)
    if engine_type is EngineType.SKLEARN:
        if isinstance(path, bytes):
            raise EngineError("the scikit-learn engine loads from a file path")
        return SklearnEngine(
            path, expected_sha256=expected_sha256, feature_names=feature_names, registry=registry
        )
    if providers is None and cfg.provider != "auto":
        providers = [cfg.provider]
    return OnnxEngine(
        path,
        providers=providers,
        threads=threads if threads is not None else (cfg.threads or None),
        profiling=cfg.profiling if profiling is None else profiling,
        feature_names=feature_names,
        registry=registry,
    )


def select_artifact(manifest: ModelManifest, target: str, quantize: bool = False) -> Artifact:
    """The artifact a device on ``target`` runs: ONNX_QUANTIZE prefers an int8 one where the
    manifest has it, otherwise the full-precision one; no artifact for the target -> cpu."""
    pool = [a for a in manifest.artifacts if a.target == target] or [
        a for a in manifest.artifacts if a.target == "cpu"
    ]
    if not pool:
        raise EngineError(f"manifest {manifest.name} v{manifest.version} has no artifact for {target} or cpu")
    if quantize:
        int8 = [a for a in pool if a.precision == "int8"]
        if int8:
            return int8[0]
        log.info("%s v%s: no int8 artifact for %s; using %s", manifest.name, manifest.version,
                 target, pool[0].precision)
    fp32 = [a for a in pool if a.precision == "fp32"]
    return (fp32 or pool)[0]


def engine_for_bundle(
    manifest: ModelManifest,
    directory: str | Path,
    target: str,
    *,
    config: EngineConfig | None = None,
    registry: CollectorRegistry | None = None,
    previous: tuple[ModelManifest, str | Path] | None = None,
    with_reference: bool = True,
) -> FallbackEngine:
    """A FallbackEngine for an installed (already verified) manifest: its artifact for
    ``target`` with providers in the EP plan's order, then ``previous`` (manifest, dir),
    then the manifest's scikit-learn reference when the directory holds it."""
    cfg = config or load_config()
    names = [f.name for f in manifest.model.features]

    def onnx_candidate(m: ModelManifest, d: str | Path, label: str) -> Candidate:
        art = select_artifact(m, target, cfg.quantize)
        providers = [cfg.provider] if cfg.provider != "auto" else art.ep_plan.providers

        def load() -> InferenceEngine:
            return create_inference_engine(
                Path(d) / art.path, EngineType.ONNX, providers,
                feature_names=names, registry=registry, config=cfg,
            )

        return Candidate(f"{label} v{m.version} {art.target}/{art.precision}", load)

    cands: list[Candidate] = []
    if cfg.use_onnx:
        cands.append(onnx_candidate(manifest, directory, "new"))
        if previous is not None:
            cands.append(onnx_candidate(previous[0], previous[1], "previous"))
    ref = manifest.reference
    if with_reference and ref is not None and (Path(directory) / ref.path).exists():
        ref_path = Path(directory) / ref.path

        def load_ref() -> InferenceEngine:
            return SklearnEngine(ref_path, expected_sha256=ref.sha256, feature_names=names, registry=registry)

        cands.append(Candidate(f"reference v{manifest.version} sklearn", load_ref))
    return FallbackEngine(cands, registry=registry)


class SessionCache:
    """One InferenceSession per artifact sha256, shared by every simulated device in a
    process: a real phone holds one session for its one model; a thousand simulated phones
    with the same artifact need not hold a thousand copies."""

    def __init__(self) -> None:
        self._engines: dict[str, OnnxEngine] = {}
        self._lock = threading.Lock()

    def get(
        self, sha256: str, load: Callable[[], bytes], registry: CollectorRegistry | None = None
    ) -> OnnxEngine:
        with self._lock:
            hit = self._engines.get(sha256)
        if hit is not None:
            return hit
        engine = OnnxEngine(load(), registry=registry)
        with self._lock:
            return self._engines.setdefault(sha256, engine)

    def __len__(self) -> int:
        return len(self._engines)
