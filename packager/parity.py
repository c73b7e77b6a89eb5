"""Does a converted model answer like its scikit-learn reference? Figures and a gate.

``measure`` runs the artifact (ONNX or ORT file, onnxruntime CPU) and the reference on
the same rows and reports label agreement, max and mean |score difference| and the
Spearman rank correlation of the scores. ``check_parity`` refuses a result that misses
any threshold, saying which figure missed and by how much.

Default thresholds per precision (``DEFAULT_THRESHOLDS``):

* fp32: the graph computes the reference's formula in float32, so the only differences
  are float32 rounding: labels must agree on 99.9% of rows (a row whose score sits
  within rounding of 0 may flip) and scores within 1e-5 + 1e-5 x (largest |reference
  score|), Spearman >= 0.9999. Tree ensembles converted by us meet far stricter figures
  (tests hold IsolationForest to identical labels and 1e-6).
* fp16: ~3 significant digits through every layer: labels 98%, scores within
  0.02 + 0.01 x scale, Spearman >= 0.99.
* int8: weights and activations on 256 levels: labels 95%, scores within 0.1 + 0.05 x
  scale, Spearman >= 0.95. Enough to rank anomalies; the manifest records the measured
  figures so nobody has to take these on trust.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from packager.errors import ParityError
from packager.manifest import Parity
from packager.runtime import run_artifact


@dataclass(frozen=True)
class Thresholds:
    min_label_agreement: float
    score_atol: float
    score_rtol: float  # times the largest |reference score| on the rows checked
    min_spearman: float

    def allowed_score_diff(self, reference_scores: np.ndarray) -> float:
        scale = float(np.max(np.abs(reference_scores))) if reference_scores.size else 0.0
        return self.score_atol + self.score_rtol * scale


DEFAULT_THRESHOLDS: dict[str, Thresholds] = {
    "fp32": Thresholds(min_label_agreement=0.999, score_atol=1e-5, score_rtol=1e-5, min_spearman=0.9999),
    "fp16": Thresholds(min_label_agreement=0.98, score_atol=0.02, score_rtol=0.01, min_spearman=0.99),
    "int8": Thresholds(min_label_agreement=0.95, score_atol=0.1, score_rtol=0.05, min_spearman=0.95),
}


@dataclass(frozen=True)
class ParityResult:
    parity: Parity  # the figures, as the manifest records them
    allowed_score_diff: float  # what the thresholds allowed on these rows
    reference_scores: np.ndarray
    artifact_scores: np.ndarray


def reference_outputs(reference: Any, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(label int64, score float64) from the reference object."""
    names = getattr(reference, "feature_names_in_", None)
    if names is not None:
        # fitted on a DataFrame: hand it one, as it was trained (and without its warning)
        import pandas as pd

        X = pd.DataFrame(np.asarray(X), columns=list(names))
    label = np.asarray(reference.predict(X)).astype(np.int64)
    score = np.asarray(reference.decision_function(X), dtype=np.float64).reshape(-1)
    return label, score


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        # A constant vector has no ranking; identical constants agree perfectly.
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(spearmanr(a, b).statistic)


def _at_float32_resolution(ref: np.ndarray, got: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Artifact scores within a few float32 ulps of the reference are ranked as the reference.

    Artifacts output float32: reference scores that differ only below float32 resolution
    (a saturated classifier's 1 - 1e-9 against 1 - 2e-9) would otherwise be ranked by
    rounding noise. Snapping both sides to a grid instead (the first version) still split
    rows sitting near a grid line: a tanh-based LightGBM artifact whose every score was
    within 1.8 ulps missed Spearman 0.9999 at 0.998 that way. A deviation above the
    resolution still reorders the ranking as it did.
    """
    if ref.size == 0:
        return ref, got
    resolution = 4.0 * float(np.spacing(np.float32(np.max(np.abs(ref)))))
    return ref, np.where(np.abs(got - ref) <= resolution, ref, got)


def compare(
    ref_label: np.ndarray,
    ref_score: np.ndarray,
    label: np.ndarray,
    score: np.ndarray,
    thresholds: Thresholds,
) -> ParityResult:
    ref_score = np.asarray(ref_score, dtype=np.float64)
    score64 = np.asarray(score, dtype=np.float64)
    diff = np.abs(score64 - ref_score)
    parity = Parity(
        rows=int(ref_label.shape[0]),
        label_agreement=float(np.mean(np.asarray(label) == np.asarray(ref_label))),
        max_abs_score_diff=float(diff.max()) if diff.size else 0.0,
        mean_abs_score_diff=float(diff.mean()) if diff.size else 0.0,
        spearman=spearman(*_at_float32_resolution(ref_score, score64)),
    )
    return ParityResult(parity, thresholds.allowed_score_diff(ref_score), ref_score, score64)


def measure(path: Path, reference: Any, X: np.ndarray, thresholds: Thresholds) -> ParityResult:
    X = np.asarray(X, dtype=np.float32)
    ref_label, ref_score = reference_outputs(reference, X)
    label, score = run_artifact(path, X)
    return compare(ref_label, ref_score, label, score, thresholds)


def check_parity(result: ParityResult, thresholds: Thresholds, what: str = "artifact") -> None:
    """Raise ParityError naming the first figure that missed and by how much."""
    p = result.parity
    allowed = thresholds.allowed_score_diff(result.reference_scores)
    if p.rows == 0:
        raise ParityError(f"{what}: parity checked on 0 rows")
    if p.label_agreement < thresholds.min_label_agreement:
        raise ParityError(
            f"{what}: label agreement {p.label_agreement:.4f} < required "
            f"{thresholds.min_label_agreement:.4f} "
            f"(missed by {thresholds.min_label_agreement - p.label_agreement:.4f}) on {p.rows} rows"
        )
    if not p.max_abs_score_diff <= allowed:
        raise ParityError(
            f"{what}: max |score diff| {p.max_abs_score_diff:.3g} > allowed {allowed:.3g} "
            f"(missed by {p.max_abs_score_diff - allowed:.3g}) on {p.rows} rows"
        )
    if not p.spearman >= thresholds.min_spearman:
        raise ParityError(
            f"{what}: Spearman rank correlation {p.spearman:.5f} < required {thresholds.min_spearman:.5f} "
            f"(missed by {thresholds.min_spearman - p.spearman:.5f}) on {p.rows} rows"
        )
