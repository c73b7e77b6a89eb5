"""Golden vectors on both sides of the boundary, and rows without calibration (issue 14,
items 3 and 4): every family's bundle holds >= 10 normal rows, >= 8 anomalous and pairs
one float32 step either side of the threshold; a forest or a scaled pipeline packages
without --calibration; an artifact answering "anomalous" for every row fails the golden
check of ``modelsync verify`` and of the device."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from sklearn.covariance import EllipticEnvelope
from sklearn.ensemble import IsolationForest, RandomForestClassifier
from sklearn.neighbors import LocalOutlierFactor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler, StandardScaler
from sklearn.svm import OneClassSVM

from packager.cli import main
from packager.golden import Deviation, _ordered, tolerance_for
from packager.keys import load_private_key, load_root
from packager.manifest import GoldenVectors, ModelManifest, sha256_hex, sign, verify_manifest
from packager.package import build_and_write
from packager.parity import reference_outputs
from tests.packager import trained

Factory = Callable[[], tuple[Any, np.ndarray | None]]


def _x() -> np.ndarray:
    return trained.telemetry().to_numpy()


def _lightgbm() -> tuple[Any, np.ndarray]:
    from lightgbm import LGBMClassifier

    clf = LGBMClassifier(n_estimators=20, num_leaves=8, random_state=0, verbose=-1)
    return clf.fit(_x(), np.where(trained.labels() == 1, -1, 1)), _x()


FAMILIES: dict[str, tuple[Factory, str]] = {
    # family: (model and calibration rows or None, the golden selection's source)
    "isolation_forest": (lambda: (trained.iforest(), None), "tree-leaves"),
    "isolation_forest-calibrated": (lambda: (trained.iforest(), _x()), "calibration"),
    "autoencoder": (lambda: (trained.autoencoder(), _x()), "calibration"),
    "pca": (lambda: (trained.pca(), None), "model-statistics"),
    "lightgbm": (_lightgbm, "calibration"),
    "elliptic_envelope": (
        lambda: (EllipticEnvelope(contamination=0.05, random_state=0).fit(_x()), None), "model-statistics"
    ),
    "local_outlier_factor": (
        lambda: (LocalOutlierFactor(novelty=True, n_neighbors=20).fit(_x()[:600]), _x()[600:1400]),
        "calibration",
    ),
    "one_class_svm": (
        lambda: (OneClassSVM(nu=0.05, gamma="scale").fit(_x()[:500]), _x()[500:1300]), "calibration"
    ),
    "classifier": (
        lambda: (
            RandomForestClassifier(n_estimators=10, max_depth=6, random_state=0).fit(
                _x(), np.where(trained.labels() == 1, -1, 1)
            ),
            _x(),
        ),
        "calibration",
    ),
}


def assert_both_sides(golden: GoldenVectors, reference: Any) -> None:
    """>= 10 normal, >= 8 anomalous, and boundary pairs: rows that differ in one feature,
    by one float32 step (``boundary_steps`` for a reference that computes in float32),
    and that the reference puts on opposite sides; as ``selection`` records."""
    labels = np.asarray(golden.label)
    sel = golden.selection
    assert sel is not None
    assert (labels == 1).sum() >= 10 and (labels == -1).sum() >= 8
    assert (sel.normal, sel.anomalous) == ((labels == 1).sum(), (labels == -1).sum())
    assert sel.boundary >= 2 and sel.boundary % 2 == 0
    x = np.asarray(golden.inputs, dtype=np.float32)
    ref_label, _ = reference_outputs(reference, x)
    assert ref_label.tolist() == golden.label
    pairs = x[len(x) - sel.boundary :].reshape(-1, 2, x.shape[1])
    pair_labels = labels[len(x) - sel.boundary :].reshape(-1, 2)
    for (lo, hi), (l_lo, l_hi) in zip(pairs, pair_labels, strict=True):
        assert (l_lo, l_hi) == (1, -1)
        (j,) = np.flatnonzero(lo != hi)
        gap = abs(int(_ordered(lo[j : j + 1])[0]) - int(_ordered(hi[j : j + 1])[0]))
        assert 1 <= gap <= sel.boundary_steps
        if sel.boundary_steps == 1:  # adjacent float32 values, independently of _ordered
            up, down = np.nextafter(lo[j], np.float32(np.inf)), np.nextafter(lo[j], np.float32(-np.inf))
            assert hi[j] in (up, down)


def _manifest(bundle: Path, keys_dir: Path) -> ModelManifest:
    raw = json.loads((bundle / "manifest.json").read_text())
    return verify_manifest(raw, load_root(keys_dir / "root.json"))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_golden_sets_hold_both_labels_and_the_boundary(family: str, tmp_path: Path, keys_dir: Path) -> None:
    factory, source = FAMILIES[family]
    model, calibration = factory()
    key = load_private_key(keys_dir / "publisher.key")
    out = build_and_write(
        model, name="m", version=1, targets=["cpu"], keys=[key], out_dir=tmp_path / "b",
        calibration=calibration,
    )
    m = _manifest(out, keys_dir)
    assert m.golden.selection is not None and m.golden.selection.source == source
    from packager.convert import as_reference

    assert_both_sides(m.golden, as_reference(model))
    # however loose its tolerance, an artifact answering one label for everything misses
    for art in m.artifacts:
        tol = art.golden_tolerance
        assert tol.max_label_mismatches < min(m.golden.selection.normal, m.golden.selection.anomalous)
    if family in ("isolation_forest", "isolation_forest-calibrated", "pca", "lightgbm", "classifier"):
        assert m.golden.selection.boundary_steps == 1  # computed in float64 or on float32 trees
    if family.startswith("isolation_forest"):
        # our tree converter decides exactly as scikit-learn, a float32 step either side too
        tol = m.artifacts[0].golden_tolerance
        assert (tol.score_atol, tol.max_label_mismatches) == (1e-5, 0)


def test_tolerance_never_allows_as_many_flips_as_a_label_has_rows() -> None:
    scores = [0.05, 0.04, 0.03, 0.02, 0.01, -0.01, -0.02, -0.03]
    g = GoldenVectors(inputs=[[float(i)] for i in range(8)], label=[1] * 5 + [-1] * 3, score=scores)
    tol = tolerance_for(g, "int8", Deviation(0.5, 1), 0.0)  # every row within atol of 0
    assert tol.score_atol >= 2.0 and tol.max_label_mismatches == 2  # 3 anomalous rows - 1
    from packager.errors import BundleError

    with pytest.raises(BundleError, match="cannot tell it from an artifact answering one label"):
        tolerance_for(g, "int8", Deviation(0.5, 3), 0.0)


# ------------------------------------------------------------------ no calibration, CLI


def _cli_package(model: Any, tmp_path: Path, keys_dir: Path, *extra: str) -> tuple[int, Path]:
    joblib.dump(model, tmp_path / "model.joblib")
    out = tmp_path / "bundle"
    rc = main(["package", str(tmp_path / "model.joblib"), "--name", "m", "--version", "1",
               "--key", str(keys_dir / "publisher.key"), "--target", "cpu", "-o", str(out), *extra])
    return rc, out


@pytest.mark.parametrize(
    ("what", "make", "source"),
    [
        ("bare forest", lambda: IsolationForest(n_estimators=20, random_state=0).fit(_x()), "tree-leaves"),
        (
            "scaled forest",
            lambda: make_pipeline(StandardScaler(), IsolationForest(n_estimators=15, random_state=0)).fit(
                _x()
            ),
            "model-statistics",
        ),
        (
            "min-max forest",
            lambda: make_pipeline(MinMaxScaler(), IsolationForest(n_estimators=10, random_state=1)).fit(_x()),
            "model-statistics",
        ),
    ],
)
def test_forests_package_without_flags(
    what: str, make: Callable[[], Any], source: str, tmp_path: Path, keys_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model = make()
    rc, out = _cli_package(model, tmp_path, keys_dir)
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "no --calibration: parity and golden rows drawn from" in printed
    assert "pass --calibration ROWS" in printed
    m = _manifest(out, keys_dir)
    assert m.golden.selection is not None and m.golden.selection.source == source
    assert "IsolationForest" in m.golden.selection.note
    from packager.convert import as_reference

    assert_both_sides(m.golden, as_reference(model))  # the float64 path the artifact follows
    assert main(["verify", str(out), "--root", str(keys_dir / "root.json")]) == 0
    sel = m.golden.selection
    line = f"golden rows: {sel.normal} normal, {sel.anomalous} anomalous, {sel.boundary} at the boundary"
    assert f"{line} (from {source})" in capsys.readouterr().out


def test_a_pipeline_without_statistics_is_refused_naming_calibration(
    tmp_path: Path, keys_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = make_pipeline(FunctionTransformer(np.log1p), IsolationForest(n_estimators=5, random_state=0))
    rc, out = _cli_package(model.fit(np.abs(_x())), tmp_path, keys_dir)
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "Pipeline (FunctionTransformer first)" in err and "pass --calibration" in err
    assert not out.exists()


# ------------------------------------------------------------------ an all-anomalous artifact


def _all_anomalous(model: Any) -> bytes:
    """The model's own graph with its label output replaced by -1 for every row: scores
    stay right, so only the golden labels can catch it."""
    from packager.convert import to_onnx

    graph = to_onnx(model).onnx
    g = graph.graph
    for node in g.node:
        node.output[:] = ["label_true" if o == "label" else o for o in node.output]
    g.initializer.extend(
        [
            helper.make_tensor("zero", TensorProto.INT64, [], [0]),
            helper.make_tensor("one", TensorProto.INT64, [], [1]),
        ]
    )
    g.node.extend([
        helper.make_node("Mul", ["label_true", "zero"], ["label_zero"]),
        helper.make_node("Sub", ["label_zero", "one"], ["label"]),
    ])
    onnx.checker.check_model(graph)
    return graph.SerializeToString()


def _forge(bundle: Path, model: Any, key: Any) -> bytes:
    """Swap the bundle's artifact for the all-anomalous graph and re-sign, as a holder of
    the publisher key could: signatures and hashes check out, only the golden check can
    refuse it."""
    forged = _all_anomalous(model)
    digest = sha256_hex(forged)
    signed = json.loads((bundle / "manifest.json").read_text())["signed"]
    art = signed["artifacts"][0]
    (bundle / art["path"]).unlink()
    (bundle / f"{digest}.onnx").write_bytes(forged)
    art.update(path=f"{digest}.onnx", sha256=digest, length=len(forged), format="onnx", compressed=None)
    (bundle / "manifest.json").write_text(json.dumps(sign(signed, [key])))
    return forged


def test_an_all_anomalous_artifact_fails_verify_and_the_device(
    tmp_path: Path, keys_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from device_sim.errors import GoldenVectorError
    from device_sim.golden import run_golden
    from device_sim.trust import check_golden

    model = IsolationForest(n_estimators=10, random_state=2).fit(_x())
    key = load_private_key(keys_dir / "publisher.key")
    bundle = build_and_write(model, name="m", version=1, targets=["cpu"], keys=[key], out_dir=tmp_path / "b")
    root = str(keys_dir / "root.json")
    assert main(["verify", bundle.as_posix(), "--root", root]) == 0
    forged = _forge(bundle, model, key)
    m = _manifest(bundle, keys_dir)
    assert m.golden.selection is not None and m.golden.selection.normal >= 10
    capsys.readouterr()

    # packager side: modelsync verify, step 5
    from packager import exit_codes

    assert main(["verify", str(bundle), "--root", root]) == exit_codes.VERIFICATION
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "golden label(s) differ from the reference" in err
    assert main(["verify", str(bundle), "--root", root, "--skip-golden"]) == 0  # only golden catches it

    # device side: checks 4.3 and 4.4 on the downloaded bytes
    labels, scores = run_golden(forged, m.golden)
    assert set(labels) == {-1}
    assert np.abs(np.asarray(scores) - m.golden.score).max() <= m.artifacts[0].golden_tolerance.score_atol
    with pytest.raises(GoldenVectorError, match="label mismatches"):
        check_golden(labels, scores, m.golden, m.artifacts[0].golden_tolerance)


# ------------------------------------------------------------------ pools short of a label


def test_a_pool_of_normal_rows_only_still_gets_anomalous_golden_rows() -> None:
    """Calibration rows the model calls all normal (clean data): the pool is widened
    inside its own box until the reference calls enough rows anomalous."""
    from packager.golden import select_golden_rows

    det = trained.iforest()
    label, _ = reference_outputs(det, _x().astype(np.float32))
    clean = _x()[label == 1][:400]

    def ref(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return reference_outputs(det, x)

    g = select_golden_rows(clean, ref, 0.0)
    assert_both_sides(g, det)
    x = np.asarray(g.inputs, dtype=np.float32)
    box = clean.astype(np.float32)
    assert (x >= box.min(axis=0)).all() and (x <= box.max(axis=0)).all()  # never beyond its box


def test_a_model_that_never_says_anomalous_gets_one_clear_error() -> None:
    from packager.errors import UsageError
    from packager.golden import select_golden_rows

    def always_normal(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.ones(len(x), dtype=np.int64), np.full(len(x), 0.5)

    message = r"need 8 rows the model calls anomalous; only 0 found .*--calibration"
    with pytest.raises(UsageError, match=message):
        select_golden_rows(_x()[:200], always_normal, 0.0)
