"""Model in, parity-checked ORT artifacts out: the packager's conversion pipeline.

``build`` is what ``modelsync package`` (packager.bundle) calls:

1. convert the model to one fp32 ONNX graph on the artifact contract (packager.convert);
2. settle the rows parity is measured on (given, or drawn from the calibration rows'
   ranges, or from the model's own statistics) and the reference's outputs on them;
3. per target: the reduced-precision variant where one applies (packager.quantize), the
   ORT file and EP plan (packager.ort_targets), and parity of *that file* against the
   reference, gated (packager.parity).

Precision policy: a target's default precision is its reduced one where the graph has
weights (int8 for cpu and android-nnapi, fp16 for ios-coreml) and fp32 otherwise. A
reduced variant that misses its parity gate falls back to fp32 for that target and the
manifest's ``quantization.reason`` says what missed by how much; if the caller demanded
the precision (``precision={"cpu": "int8"}``) the ParityError is raised instead. The fp32
artifact itself always has to pass; nothing is packaged below it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from packager.errors import PackagingError, ParityError, UnsupportedModelError, UsageError
from packager.manifest import TARGETS, EpPlan, Feature, ModelCard, Parity, Quantization, TensorSpec

DEFAULT_PARITY_ROWS = 2000


@dataclass(frozen=True)
class BuiltArtifact:
    target: str  # android-nnapi | ios-coreml | cpu
    path: Path  # the .ort file in workdir
    precision: str  # fp32 | fp16 | int8
    ort_version: str
    optimization_style: str  # Fixed | Runtime
    input_shape: list[int | None]
    quantization: Quantization
    ep_plan: EpPlan
    parity: Parity


@dataclass(frozen=True)
class BuildResult:
    card: ModelCard
    artifacts: list[BuiltArtifact]
    reference: Any
    onnx_fp32: Path

    def reference_outputs(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(label int64, score) of the reference; the score is float32-rounded, as float64."""
        from packager.parity import reference_outputs

        label, score = reference_outputs(self.reference, np.asarray(X, dtype=np.float32))
        return label, score.astype(np.float32).astype(np.float64)


def load_model(path: Path) -> Any:
    """Unpickle a model file the release engineer trusts (joblib or plain pickle)."""
    import pickle

    import joblib

    path = Path(path)
    if not path.exists():
        raise UsageError(f"model file not found: {path}")
    if not path.is_file():
        raise UsageError(f"model path is not a file: {path}")
    try:
        model = joblib.load(path)
    except (pickle.UnpicklingError, EOFError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise UsageError(f"cannot read model file {path}: not a joblib/pickle file ({exc})") from exc
    except (ModuleNotFoundError, AttributeError) as exc:
        raise UnsupportedModelError(f"model file {path} needs code that is not installed: {exc}") from exc
    except OSError as exc:
        raise UsageError(f"cannot read model file {path}: {exc}") from exc
    if model is None or isinstance(model, (dict, list, tuple, str, bytes, int, float, np.ndarray)):
        raise UnsupportedModelError(f"model file {path} holds a {type(model).__name__}, not a model")
    return model


def run_artifact(path: Path, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(label, score) from an ONNX/ORT file on onnxruntime's CPU provider.

    A file whose batch is fixed (NNAPI artifacts: [1, n]) is fed one row at a time.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    X = np.ascontiguousarray(X, dtype=np.float32)
    batch = session.get_inputs()[0].shape[0]
    if isinstance(batch, int) and batch > 0:
        labels, scores = [], []
        for i in range(0, X.shape[0], batch):
            chunk = X[i : i + batch]
            if chunk.shape[0] < batch:  # pad the last chunk, keep only the real rows
                chunk = np.vstack([chunk, np.repeat(chunk[-1:], batch - chunk.shape[0], axis=0)])
            lab, sco = session.run(["label", "score"], {"input": chunk})
            n = min(batch, X.shape[0] - i)
            labels.append(lab[:n])
            scores.append(sco[:n])
        if not labels:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        return np.concatenate(labels).astype(np.int64), np.concatenate(scores)
    label, score = session.run(["label", "score"], {"input": X})
    return np.asarray(label, dtype=np.int64), np.asarray(score)


def _rows(name: str, rows: np.ndarray, n_features: int) -> np.ndarray:
    matrix = np.asarray(rows, dtype=np.float32)
    if matrix.ndim != 2:
        raise UsageError(f"{name} must be a 2-D array (rows x features), got shape {matrix.shape}")
    if matrix.shape[1] != n_features:
        raise UsageError(f"{name} has {matrix.shape[1]} features, the model expects {n_features}")
    if matrix.shape[0] == 0:
        raise UsageError(f"{name} has no rows")
    return matrix


def rows_from_ranges(
    low: np.ndarray, high: np.ndarray, base: np.ndarray | None, n: int, seed: int = 0
) -> np.ndarray:
    """Half uniform over [low, high] per feature, half real rows with small noise
    (1% of each feature's range): the first probe the whole space, the second the
    neighbourhood of real data, where the threshold sits."""
    rng = np.random.default_rng(seed)
    span = np.where(high > low, high - low, 1.0)
    uniform = rng.uniform(low, low + span, size=(n - n // 2, low.shape[0]))
    if base is None or base.shape[0] == 0:
        centre = rng.uniform(low, low + span, size=(n // 2, low.shape[0]))
    else:
        centre = base[rng.integers(0, base.shape[0], size=n // 2)]
    perturbed = centre + rng.normal(0.0, 0.01, size=centre.shape) * span
    return np.vstack([uniform, perturbed]).astype(np.float32)


def model_ranges(reference: Any) -> tuple[np.ndarray, np.ndarray]:
    """Feature ranges a model itself reveals, when no rows are given."""
    from sklearn.ensemble import IsolationForest

    from packager.detectors import IsolationForestDetector, _ReconstructionDetector

    if isinstance(reference, _ReconstructionDetector):
        mean, scale = reference.scaler_.mean_, reference.scaler_.scale_
        return mean - 4 * scale, mean + 4 * scale
    forest = reference.model_ if isinstance(reference, IsolationForestDetector) else reference
    if isinstance(forest, IsolationForest):
        n = forest.n_features_in_
        low, high = np.full(n, np.inf), np.full(n, -np.inf)
        for tree, feats in zip(forest.estimators_, forest.estimators_features_, strict=True):
            split = tree.tree_.children_left != -1
            f = np.asarray(feats)[tree.tree_.feature[split]]
            np.minimum.at(low, f, tree.tree_.threshold[split])
            np.maximum.at(high, f, tree.tree_.threshold[split])
        low, high = np.where(np.isfinite(low), low, 0.0), np.where(np.isfinite(high), high, 1.0)
        pad = 0.1 * np.maximum(high - low, 1e-3)
        return low - pad, high + pad
    raise UsageError(
        f"{type(reference).__name__}: pass calibration rows or parity rows to check parity against"
    )


_model_ranges = model_ranges  # the name packager.package imported first


def _card(conv: Any) -> ModelCard:
    n = len(conv.feature_names)
    return ModelCard(
        family=conv.family,
        framework=conv.framework,
        framework_version=conv.framework_version,
        features=[Feature(name=name) for name in conv.feature_names],
        input=TensorSpec(
            name="input",
            dtype="float32",
            shape=[None, n],
            meaning="one row per observation, features in the order listed",
        ),
        outputs=[
            TensorSpec(name="label", dtype="int64", shape=[None], meaning="-1 anomaly, 1 normal (predict)"),
            TensorSpec(
                name="score",
                dtype="float32",
                shape=[None],
                meaning="decision_function: below the threshold (0) is anomalous",
            ),
        ],
        threshold=conv.threshold,
        training_data_sha256=conv.training_data_sha256,
        description=f"{conv.family} detector exported by modelsync",
    )


def build(
    model: Any,
    *,
    targets: Sequence[str],
    workdir: Path,
    feature_names: Sequence[str] | None = None,
    calibration: np.ndarray | None = None,
    parity_rows: np.ndarray | None = None,
    progress: Callable[[str], None] | None = None,
    precision: Mapping[str, str] | None = None,
    thresholds: Mapping[str, Any] | None = None,
) -> BuildResult:
    """Convert, quantize, convert to ORT and parity-check ``model`` for each target.

    ``precision`` demands a precision per target (e.g. ``{"cpu": "int8"}``): a demanded
    reduced precision that cannot be made or misses parity raises instead of falling back.
    ``thresholds`` overrides packager.parity.DEFAULT_THRESHOLDS per precision.
    """
    import onnx

    from packager.convert import to_onnx
    from packager.parity import DEFAULT_THRESHOLDS, check_parity, compare, reference_outputs
    from packager.quantize import (
        METHOD_FOR_TARGET,
        PRECISION_FOR_METHOD,
        check_calibration,
        make_variant,
        not_applicable_reason,
        quantizable,
    )

    say = progress or (lambda _msg: None)
    wanted = list(dict.fromkeys(targets))
    if not wanted:
        raise UsageError("no targets given")
    unknown = [t for t in wanted if t not in TARGETS]
    if unknown:
        raise UsageError(f"unknown target(s) {unknown}; choose from {list(TARGETS)}")
    demanded = dict(precision or {})
    for t, p in demanded.items():
        if t not in wanted or p not in ("fp32", "fp16", "int8"):
            raise UsageError(f"bad precision demand {t}={p}")
    limits = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    workdir = Path(workdir)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create work directory {workdir}: {exc}") from exc

    say("converting to ONNX")
    conv = to_onnx(model, feature_names)
    n = len(conv.feature_names)
    onnx_fp32 = workdir / "model.fp32.onnx"
    onnx.save(conv.onnx, onnx_fp32)

    calib = (
        check_calibration(_rows("calibration data", calibration, n), conv.feature_names)
        if calibration is not None
        else None
    )
    if parity_rows is not None:
        rows = _rows("parity rows", parity_rows, n)
        if not np.isfinite(rows).all():
            raise UsageError("parity rows contain NaN/inf")
    elif calib is not None:
        rows = rows_from_ranges(calib.min(axis=0), calib.max(axis=0), calib, DEFAULT_PARITY_ROWS)
    else:
        low, high = model_ranges(conv.reference)
        rows = rows_from_ranges(low, high, None, DEFAULT_PARITY_ROWS)

    say(f"reference outputs on {rows.shape[0]} parity rows")
    ref_label, ref_score = reference_outputs(conv.reference, rows)

    def gate(path: Path, precision_name: str, what: str) -> Parity:
        label, score = run_artifact(path, rows)
        result = compare(ref_label, ref_score, label, score, limits[precision_name])
        check_parity(result, limits[precision_name], what)
        return result.parity

    has_weights = quantizable(conv.onnx)
    artifacts: list[BuiltArtifact] = []
    from packager.ort_targets import to_ort

    for target in wanted:
        method = METHOD_FOR_TARGET[target]
        reduced = PRECISION_FOR_METHOD[method]
        want = demanded.get(target)
        if want not in (None, "fp32", reduced):
            raise UsageError(f"{target} offers {reduced} or fp32, not {want}")
        fp32_record = Quantization(applied=False, method=None, reason=not_applicable_reason(conv.onnx))
        chosen: BuiltArtifact | None = None
        if has_weights and want != "fp32":
            if method == "qdq-static" and calib is None:
                if want == reduced:
                    raise PackagingError(f"{target}: static INT8 needs calibration rows")
                fp32_record = Quantization(
                    applied=False, method=method, reason="no calibration rows for static INT8; shipped fp32"
                )
            else:
                say(f"{target}: {reduced} variant ({method})")
                variant = workdir / f"model.{target}.{reduced}.onnx"
                record = make_variant(target, onnx_fp32, variant, calib)
                built = to_ort(variant, workdir / f"model.{target}.{reduced}.ort", target)
                try:
                    parity = gate(built.path, reduced, f"{target} {reduced}")
                    chosen = BuiltArtifact(
                        target,
                        built.path,
                        reduced,
                        built.ort_version,
                        built.optimization_style,
                        built.input_shape,
                        record,
                        built.ep_plan,
                        parity,
                    )
                except ParityError as exc:
                    if want == reduced:
                        raise
                    say(f"{target}: {reduced} missed parity, falling back to fp32")
                    fp32_record = Quantization(
                        applied=False, method=method, reason=f"{reduced} missed parity ({exc}); shipped fp32"
                    )
        elif want is not None and want != "fp32":
            raise PackagingError(f"{target}: {want} demanded but not applicable: {fp32_record.reason}")
        elif has_weights:
            fp32_record = Quantization(applied=False, method=None, reason="fp32 demanded")
        if chosen is None:
            say(f"{target}: fp32 ORT")
            built = to_ort(onnx_fp32, workdir / f"model.{target}.fp32.ort", target)
            parity = gate(built.path, "fp32", f"{target} fp32")
            chosen = BuiltArtifact(
                target,
                built.path,
                "fp32",
                built.ort_version,
                built.optimization_style,
                built.input_shape,
                fp32_record,
                built.ep_plan,
                parity,
            )
        artifacts.append(chosen)
        say(f"{target}: done ({chosen.precision}, parity max |diff| {chosen.parity.max_abs_score_diff:.2g})")

    return BuildResult(card=_card(conv), artifacts=artifacts, reference=conv.reference, onnx_fp32=onnx_fp32)
