"""ORT files per target: they load in onnxruntime, say who wrote them, and carry an EP plan."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from packager.convert import to_onnx
from packager.ort_targets import to_ort
from packager.runtime import run_artifact
from tests.packager import trained


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("onnx")
    paths = {}
    for name, model in (("iforest", trained.iforest()), ("autoencoder", trained.autoencoder())):
        paths[name] = d / f"{name}.onnx"
        onnx.save(to_onnx(model).onnx, paths[name])
    return paths


@pytest.mark.parametrize(
    ("target", "style"), [("cpu", "Fixed"), ("android-nnapi", "Runtime"), ("ios-coreml", "Runtime")]
)
def test_ort_file_loads_and_records_its_writer(
    onnx_files: dict[str, Path], tmp_path: Path, target: str, style: str
) -> None:
    art = to_ort(onnx_files["iforest"], tmp_path / "m.ort", target)
    data = art.path.read_bytes()
    assert data[4:8] == b"ORTM"  # flatbuffer file identifier of the ORT format
    assert art.ort_version == ort.__version__ and art.optimization_style == style
    session = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["label", "score"]
    assert art.ep_plan.providers[-1] == "CPUExecutionProvider"
    assert art.ep_plan.summary


@pytest.mark.parametrize("target", ["android-nnapi", "ios-coreml"])
def test_tree_ensemble_plan_recommends_cpu_plainly(
    onnx_files: dict[str, Path], tmp_path: Path, target: str
) -> None:
    art = to_ort(onnx_files["iforest"], tmp_path / "m.ort", target)
    plan = art.ep_plan
    assert plan.providers == ["CPUExecutionProvider"] and plan.cpu_recommended
    (analysis,) = plan.analysis
    assert analysis.provider.startswith("NNAPI" if target == "android-nnapi" else "CoreML")
    assert analysis.total_nodes >= 5 and not analysis.recommended
    assert "TreeEnsembleRegressor" in analysis.note
    assert art.input_shape == [None, 12]  # no fixed batch for a provider that is not used


@pytest.mark.parametrize("target", ["android-nnapi", "ios-coreml"])
def test_neural_plan_fixes_the_batch_for_the_npu(
    onnx_files: dict[str, Path], tmp_path: Path, target: str
) -> None:
    art = to_ort(onnx_files["autoencoder"], tmp_path / "m.ort", target)
    plan = art.ep_plan
    (analysis,) = plan.analysis
    assert plan.providers == [analysis.provider, "CPUExecutionProvider"] and not plan.cpu_recommended
    assert analysis.recommended and analysis.partitions == 1
    assert analysis.supported_nodes / analysis.total_nodes > 0.75
    assert art.input_shape == [1, 12]
    session = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 12]
    # run_artifact feeds a fixed-batch file row by row and matches the dynamic graph
    X = trained.holdout()[:7]
    label, score = run_artifact(art.path, X)
    ref_label, ref_score = run_artifact(onnx_files["autoencoder"], X)
    np.testing.assert_array_equal(label, ref_label)
    np.testing.assert_allclose(score, ref_score, rtol=1e-5, atol=1e-5)


def test_cpu_plan_needs_no_analysis(onnx_files: dict[str, Path], tmp_path: Path) -> None:
    art = to_ort(onnx_files["autoencoder"], tmp_path / "m.ort", "cpu")
    assert art.ep_plan.providers == ["CPUExecutionProvider"] and art.ep_plan.analysis == []
    assert art.input_shape == [None, 12]
