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
from typing import TYPE_CHECKING, Any

import numpy as np

from packager.errors import PackagingError, ParityError, UnsupportedModelError, UsageError
from packager.manifest import TARGETS, EpPlan, Feature, ModelCard, Parity, Quantization, TensorSpec
from packager.model_rows import RowSource, draw, plan_rows, rows_from_ranges
from packager.runtime import run_artifact

if TYPE_CHECKING:
    from packager.parity import Thresholds

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
    rows: np.ndarray | None = None  # the parity rows: the golden pool when no calibration is given
    rows_source: RowSource = "calibration"
    rows_note: str = ""

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
    _refuse_non_models(path)
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


ACCEPTED = (
    "a trained model saved with joblib or pickle (.joblib, .pkl): a scikit-learn estimator or "
    "pipeline, a LightGBM model, or a modelsync detector"
)
DATA_SUFFIXES = frozenset({".csv", ".tsv", ".txt", ".npy", ".npz", ".parquet", ".json"})
ONNX_SUFFIXES = frozenset({".onnx", ".ort"})


def _refuse_non_models(path: Path) -> None:
    """The two files a first user most often gives instead of a model, said plainly."""
    suffix = path.suffix.lower()
    if suffix in DATA_SUFFIXES:
        raise UsageError(
            f"{path} looks like data, not a model: `modelsync package` takes {ACCEPTED}; "
            f"representative rows go to --calibration {path.name}"
        )
    if suffix in ONNX_SUFFIXES:
        raise UsageError(
            f"{path} is already an ONNX/ORT model: `modelsync package` takes {ACCEPTED}, and converts "
            "it itself so each artifact's parity can be checked against the original"
        )


def _rows(name: str, rows: np.ndarray, n_features: int) -> np.ndarray:
    matrix = np.asarray(rows, dtype=np.float32)
    if matrix.ndim != 2:
        raise UsageError(f"{name} must be a 2-D array (rows x features), got shape {matrix.shape}")
    if matrix.shape[1] != n_features:
        raise UsageError(f"{name} has {matrix.shape[1]} features, the model expects {n_features}")
    if matrix.shape[0] == 0:
        raise UsageError(f"{name} has no rows")
    return matrix


def model_ranges(reference: Any) -> tuple[np.ndarray, np.ndarray]:
    """Feature ranges a model itself reveals, when no rows are given (packager.model_rows)."""
    plan = plan_rows(reference)
    return plan.low, plan.high


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


@dataclass(frozen=True)
class _Job:
    """What every target's build shares: the fp32 graph, the rows and the reference."""

    conv: Any  # packager.convert.Converted
    onnx_fp32: Path
    calibration: np.ndarray | None
    rows: np.ndarray
    ref_label: np.ndarray
    ref_score: np.ndarray
    limits: Mapping[str, Thresholds]
    workdir: Path
    say: Callable[[str], None]

    def gate(self, path: Path, precision: str, what: str) -> Parity:
        from packager.parity import check_parity, compare

        label, score = run_artifact(path, self.rows)
        result = compare(self.ref_label, self.ref_score, label, score, self.limits[precision])
        check_parity(result, self.limits[precision], what)
        return result.parity

    def artifact(self, target: str, onnx_path: Path, precision: str, record: Quantization) -> BuiltArtifact:
        """ORT file for ``target`` from ``onnx_path``, gated; raises ParityError."""
        from packager.ort_targets import to_ort

        built = to_ort(onnx_path, self.workdir / f"model.{target}.{precision}.ort", target)
        parity = self.gate(built.path, precision, f"{target} {precision}")
        return BuiltArtifact(
            target=target,
            path=built.path,
            precision=precision,
            ort_version=built.ort_version,
            optimization_style=built.optimization_style,
            input_shape=built.input_shape,
            quantization=record,
            ep_plan=built.ep_plan,
            parity=parity,
        )


def _build_target(job: _Job, target: str, want: str | None, has_weights: bool) -> BuiltArtifact:
    """The target's reduced precision where it applies and passes, else fp32 (see the
    module docstring for the policy)."""
    from packager.quantize import METHOD_FOR_TARGET, PRECISION_FOR_METHOD, make_variant, not_applicable_reason

    method = METHOD_FOR_TARGET[target]
    reduced = PRECISION_FOR_METHOD[method]
    if want not in (None, "fp32", reduced):
        raise UsageError(f"{target} offers {reduced} or fp32, not {want}")
    if not has_weights:
        reason = not_applicable_reason(job.conv.onnx)
        if want == reduced:
            raise PackagingError(f"{target}: {want} demanded but not applicable: {reason}")
        fp32_record = Quantization(applied=False, method=None, reason=reason)
    elif want == "fp32":
        fp32_record = Quantization(applied=False, method=None, reason="fp32 demanded")
    elif method == "qdq-static" and job.calibration is None:
        if want == reduced:
            raise PackagingError(f"{target}: static INT8 needs calibration rows")
        fp32_record = Quantization(
            applied=False, method=method, reason="no calibration rows for static INT8; shipped fp32"
        )
    else:
        job.say(f"{target}: {reduced} variant ({method})")
        variant = job.workdir / f"model.{target}.{reduced}.onnx"
        record = make_variant(target, job.onnx_fp32, variant, job.calibration)
        try:
            return job.artifact(target, variant, reduced, record)
        except ParityError as exc:
            if want == reduced:
                raise
            job.say(f"{target}: {reduced} missed parity, falling back to fp32")
            fp32_record = Quantization(
                applied=False, method=method, reason=f"{reduced} missed parity ({exc}); shipped fp32"
            )
    job.say(f"{target}: fp32 ORT")
    return job.artifact(target, job.onnx_fp32, "fp32", fp32_record)


def _check_request(targets: Sequence[str], precision: Mapping[str, str] | None) -> list[str]:
    wanted = list(dict.fromkeys(targets))
    if not wanted:
        raise UsageError("no targets given")
    unknown = [t for t in wanted if t not in TARGETS]
    if unknown:
        raise UsageError(f"unknown target(s) {unknown}; choose from {list(TARGETS)}")
    for t, p in (precision or {}).items():
        if t not in wanted or p not in ("fp32", "fp16", "int8"):
            raise UsageError(
                f"bad precision demand {t}={p}: give one of the targets built and fp32/fp16/int8"
            )
    return wanted


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
    thresholds: Mapping[str, Thresholds] | None = None,
) -> BuildResult:
    """Convert, quantize, convert to ORT and parity-check ``model`` for each target.

    ``precision`` demands a precision per target (e.g. ``{"cpu": "int8"}``): a demanded
    reduced precision that cannot be made or misses parity raises instead of falling back.
    ``thresholds`` overrides packager.parity.DEFAULT_THRESHOLDS per precision.
    """
    import onnx

    from packager.convert import to_onnx
    from packager.parity import DEFAULT_THRESHOLDS, reference_outputs
    from packager.quantize import check_calibration, quantizable

    say = progress or (lambda _msg: None)
    wanted = _check_request(targets, precision)
    workdir = Path(workdir)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create work directory {workdir}: {exc}") from exc

    # the conversion comes first (about a second, pipelines included) so that a step it
    # cannot convert is named before any complaint about missing rows
    say("converting to ONNX")
    conv = to_onnx(model, feature_names)
    plan = plan_rows(conv.reference) if parity_rows is None and calibration is None else None
    n = len(conv.feature_names)
    onnx_fp32 = workdir / "model.fp32.onnx"
    onnx.save(conv.onnx, onnx_fp32)

    calib = (
        check_calibration(_rows("calibration data", calibration, n), conv.feature_names)
        if calibration is not None
        else None
    )
    source: RowSource = "calibration"
    note = ""
    if parity_rows is not None:
        rows = _rows("parity rows", parity_rows, n)
        if not np.isfinite(rows).all():
            raise UsageError("parity rows contain NaN/inf")
        source = "given"
    elif calib is not None:
        rows = rows_from_ranges(calib.min(axis=0), calib.max(axis=0), calib, DEFAULT_PARITY_ROWS)
    else:
        assert plan is not None
        rows, normal = draw(plan, lambda x: reference_outputs(conv.reference, x), DEFAULT_PARITY_ROWS)
        source, note = plan.source, f"{plan.note} ({normal} normal seeds)"
        say(f"no calibration rows: parity and golden rows drawn from {note}")

    say(f"reference outputs on {rows.shape[0]} parity rows")
    ref_label, ref_score = reference_outputs(conv.reference, rows)
    job = _Job(
        conv=conv,
        onnx_fp32=onnx_fp32,
        calibration=calib,
        rows=rows,
        ref_label=ref_label,
        ref_score=ref_score,
        limits={**DEFAULT_THRESHOLDS, **(thresholds or {})},
        workdir=workdir,
        say=say,
    )
    has_weights = quantizable(conv.onnx)
    artifacts = []
    for target in wanted:
        art = _build_target(job, target, (precision or {}).get(target), has_weights)
        say(f"{target}: done ({art.precision}, parity max |diff| {art.parity.max_abs_score_diff:.2g})")
        artifacts.append(art)
    return BuildResult(
        card=_card(conv), artifacts=artifacts, reference=conv.reference, onnx_fp32=onnx_fp32,
        rows=rows, rows_source=source, rows_note=note,
    )
