"""Inference engines: provider fallback, metrics, env config, the fallback chain."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.ensemble import IsolationForest

from device_sim.engine import (
    Candidate,
    EngineError,
    EngineType,
    FallbackEngine,
    InferenceEngine,
    InputError,
    ModelLoadError,
    OnnxEngine,
    Prediction,
    SklearnEngine,
    create_inference_engine,
    reference_predict,
    resolve_providers,
)
from device_sim.engine.config import EngineConfig, load_config
from device_sim.fleet_golden import SessionCache
from packager.errors import UsageError

N_FEATURES = 4
NAMES = ["battery", "cpu", "memory", "storage"]


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return np.random.default_rng(7).normal(size=(400, N_FEATURES)).astype(np.float32)


@pytest.fixture(scope="module")
def forest(data: np.ndarray) -> IsolationForest:
    return IsolationForest(n_estimators=12, random_state=3).fit(data)


def _onnx_bytes(model: IsolationForest, batch: int | None = None) -> bytes:
    onx = to_onnx(
        model,
        initial_types=[("input", FloatTensorType([batch, N_FEATURES]))],
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return bytes(onx.SerializeToString())


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, forest: IsolationForest) -> Path:
    d = tmp_path_factory.mktemp("models")
    (d / "new.onnx").write_bytes(_onnx_bytes(forest))
    (d / "fixed1.onnx").write_bytes(_onnx_bytes(forest, batch=1))
    (d / "corrupt.onnx").write_bytes(b"\x08\x07not a model at all")
    joblib.dump(forest, d / "reference.joblib")
    return d


def _config(**kw: object) -> EngineConfig:
    return EngineConfig.model_validate(kw)


def test_resolve_providers_keeps_order_drops_missing_and_ends_with_cpu() -> None:
    choice = resolve_providers(
        ["NNAPIExecutionProvider", "coreml", "cuda", "cpu", "nnapi"],
        available=["CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    assert choice.requested == [
        "NnapiExecutionProvider", "CoreMLExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider",
    ]
    assert choice.chosen == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choice.missing == ["NnapiExecutionProvider", "CoreMLExecutionProvider"]
    assert choice.note is not None and "NnapiExecutionProvider" in choice.note
    assert resolve_providers(["cuda"], available=["CPUExecutionProvider"]).chosen == ["CPUExecutionProvider"]
    assert resolve_providers(None, available=["CPUExecutionProvider"]).note is None


def test_nnapi_request_falls_back_to_cpu_and_says_so(
    model_dir: Path, data: np.ndarray, forest: IsolationForest, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="device_sim.engine"):
        engine = create_inference_engine(
            model_dir / "new.onnx",
            EngineType.ONNX,
            providers=["NnapiExecutionProvider", "CPUExecutionProvider"],
            config=_config(),
        )
    assert engine.provider == "CPUExecutionProvider"
    assert isinstance(engine, OnnxEngine)
    assert engine.requested_providers[0] == "NnapiExecutionProvider"
    assert engine.provider_fallback is not None and "NnapiExecutionProvider" in engine.provider_fallback
    assert any("NnapiExecutionProvider not in this onnxruntime build" in r.message for r in caplog.records)
    got = engine.predict(data)
    ref = reference_predict(forest, data)
    assert np.array_equal(got.labels, ref.labels)
    assert np.abs(got.scores - ref.scores).max() < 1e-5


def test_metrics_and_prometheus_counters(model_dir: Path, data: np.ndarray) -> None:
    registry = CollectorRegistry()
    engine = create_inference_engine(
        model_dir / "new.onnx", EngineType.ONNX, registry=registry, config=_config()
    )
    for i in range(1, 21):
        engine.predict(data[: i * 10])
    m = engine.get_metrics()
    assert m.total_inferences == 20
    assert m.total_samples == sum(i * 10 for i in range(1, 21))
    assert 0 < m.p50_ms <= m.p95_ms <= m.p99_ms
    assert m.inference_time_ms > 0 and m.throughput_samples_per_sec > 0
    assert registry.get_sample_value(
        "model_inference_total", {"engine_type": "onnx", "status": "success"}
    ) == 20
    assert registry.get_sample_value(
        "model_inference_duration_seconds_count", {"engine_type": "onnx", "provider": "CPUExecutionProvider"}
    ) == 20


def test_bad_input_is_a_precise_error(model_dir: Path, data: np.ndarray) -> None:
    engine = create_inference_engine(model_dir / "new.onnx", EngineType.ONNX, config=_config())
    with pytest.raises(InputError, match="expected 4 features per row, got 3"):
        engine.predict(data[:, :3])
    bad = data[:5].copy()
    bad[2, 1] = np.nan
    with pytest.raises(InputError, match="row 2, feature 1"):
        engine.predict(bad)
    with pytest.raises(InputError, match="not numeric"):
        engine.predict([["a", "b", "c", "d"]])


def test_fixed_batch_of_one_runs_row_by_row(model_dir: Path, data: np.ndarray) -> None:
    fixed = create_inference_engine(model_dir / "fixed1.onnx", EngineType.ONNX, config=_config())
    dynamic = create_inference_engine(model_dir / "new.onnx", EngineType.ONNX, config=_config())
    assert isinstance(fixed, OnnxEngine) and fixed.fixed_batch == 1
    a, b = fixed.predict(data[:37]), dynamic.predict(data[:37])
    assert len(a) == 37
    assert np.array_equal(a.labels, b.labels)
    assert np.allclose(a.scores, b.scores, atol=1e-6)


def test_dataframe_columns_are_put_in_manifest_order(model_dir: Path, data: np.ndarray) -> None:
    engine = create_inference_engine(
        model_dir / "new.onnx", EngineType.ONNX, feature_names=NAMES, config=_config()
    )
    frame = pd.DataFrame(data[:50], columns=NAMES)[list(reversed(NAMES))]
    assert np.array_equal(engine.predict(frame).scores, engine.predict(data[:50]).scores)
    with pytest.raises(InputError, match="lack column"):
        engine.predict(frame.drop(columns=["cpu"]))


def test_env_config(monkeypatch: pytest.MonkeyPatch, model_dir: Path, tmp_path: Path) -> None:
    for var in ("ENABLED", "ENGINE", "PROVIDER", "THREADS", "QUANTIZE", "PROFILING"):
        monkeypatch.delenv(f"ONNX_{var}", raising=False)
    cfg = load_config()
    got = (cfg.use_onnx, cfg.provider, cfg.threads, cfg.quantize, cfg.profiling)
    assert got == (True, "auto", 0, False, False)

    monkeypatch.setenv("ONNX_ENGINE", "sklearn")
    engine = create_inference_engine(model_dir / "reference.joblib")
    assert isinstance(engine, SklearnEngine) and engine.engine_type is EngineType.SKLEARN

    monkeypatch.setenv("ONNX_ENGINE", "onnx")
    monkeypatch.setenv("ONNX_ENABLED", "false")
    assert isinstance(create_inference_engine(model_dir / "reference.joblib"), SklearnEngine)

    monkeypatch.setenv("ONNX_ENABLED", "true")
    monkeypatch.setenv("ONNX_PROVIDER", "cuda")
    monkeypatch.setenv("ONNX_THREADS", "2")
    monkeypatch.setenv("ONNX_PROFILING", "true")
    monkeypatch.chdir(tmp_path)
    engine = create_inference_engine(model_dir / "new.onnx")
    assert isinstance(engine, OnnxEngine)
    assert engine.requested_providers[0] == "CUDAExecutionProvider"
    assert engine.session.get_session_options().intra_op_num_threads == 2
    engine.predict(np.zeros((3, N_FEATURES), dtype=np.float32))
    profile = Path(engine.end_profiling())
    assert profile.exists() and isinstance(json.loads(profile.read_text()), list)

    monkeypatch.setenv("ONNX_THREADS", "many")
    with pytest.raises(UsageError, match="ONNX_THREADS"):
        load_config()
    monkeypatch.setenv("ONNX_THREADS", "1")
    monkeypatch.setenv("ONNX_PROVIDER", "gpu9000")
    with pytest.raises(UsageError, match="ONNX_PROVIDER"):
        load_config()


def _onnx(path: Path) -> Candidate:
    return Candidate(path.name, lambda: OnnxEngine(path))


def test_fallback_corrupt_new_model_serves_previous(model_dir: Path, data: np.ndarray) -> None:
    engine = FallbackEngine([_onnx(model_dir / "corrupt.onnx"), _onnx(model_dir / "new.onnx")])
    assert engine.active_name == "new.onnx"
    assert engine.failures[0][0] == "corrupt.onnx"
    assert "onnxruntime cannot load" in engine.failures[0][1]
    assert len(engine.predict(data)) == len(data)
    assert engine.engine_type is EngineType.ONNX


def test_fallback_without_onnx_serves_sklearn_reference(
    model_dir: Path, data: np.ndarray, forest: IsolationForest
) -> None:
    import hashlib

    sha = hashlib.sha256((model_dir / "reference.joblib").read_bytes()).hexdigest()
    ref = Candidate("reference", lambda: SklearnEngine(model_dir / "reference.joblib", expected_sha256=sha))
    engine = FallbackEngine([_onnx(model_dir / "corrupt.onnx"), _onnx(model_dir / "missing.onnx"), ref])
    assert engine.active_name == "reference"
    assert [n for n, _ in engine.failures] == ["corrupt.onnx", "missing.onnx"]
    assert "cannot read model" in engine.failures[1][1]
    got = engine.predict(data)
    assert np.array_equal(got.labels, forest.predict(data))
    assert engine.engine_type is EngineType.SKLEARN and engine.get_metrics().total_inferences == 1


def test_reference_with_wrong_sha_is_never_unpickled(model_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="refusing to unpickle"):
        SklearnEngine(model_dir / "reference.joblib", expected_sha256="0" * 64)
    with pytest.raises(EngineError, match="no engine could serve"):
        FallbackEngine([_onnx(model_dir / "corrupt.onnx")])


class _Broken(InferenceEngine):
    """A model that loads but fails at run time (as a truncated graph on a real NPU can)."""

    engine_type = EngineType.ONNX

    @property
    def n_features(self) -> int | None:
        return N_FEATURES

    def _run(self, x: np.ndarray) -> Prediction:
        raise RuntimeError("kernel exploded")


def test_fallback_moves_on_when_predict_fails(model_dir: Path, data: np.ndarray) -> None:
    engine = FallbackEngine([Candidate("broken", _Broken), _onnx(model_dir / "new.onnx")])
    assert engine.active_name == "broken"
    assert len(engine.predict(data)) == len(data)
    assert engine.active_name == "new.onnx"
    assert "kernel exploded" in engine.failures[0][1]
    with pytest.raises(InputError):  # the caller's mistake does not burn the working model
        engine.predict(data[:, :2])
    assert engine.active_name == "new.onnx"


def test_session_cache_shares_one_session_per_sha(model_dir: Path) -> None:
    cache = SessionCache()
    loads: list[int] = []

    def load() -> bytes:
        loads.append(1)
        return (model_dir / "new.onnx").read_bytes()

    a, b = cache.get("a" * 64, load), cache.get("a" * 64, load)
    assert a is b and len(loads) == 1 and len(cache) == 1


def test_onnx_engine_does_not_import_sklearn(model_dir: Path) -> None:
    code = (
        "import sys, numpy as np\n"
        "from device_sim.engine import create_inference_engine, EngineType\n"
        f"e = create_inference_engine({str(model_dir / 'new.onnx')!r}, EngineType.ONNX)\n"
        f"e.predict(np.zeros((2, {N_FEATURES}), dtype=np.float32))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'joblib', 'scipy')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_engine_for_bundle_follows_the_ep_plan_and_falls_back(
    small_bundle: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import shutil

    from device_sim.engine import artifact_or_cpu, engine_for_bundle
    from packager.telemetry import generate_telemetry
    from packager.verify import load_manifest_unverified

    manifest = load_manifest_unverified(small_bundle)
    rows = generate_telemetry(50, seed=99).frame
    engine = engine_for_bundle(manifest, small_bundle, "android-nnapi", config=_config())
    assert engine.active_name.startswith("new v1 android-nnapi")
    assert len(engine.predict(rows)) == 50

    # the new artifact missing on disk: the previous version (here the same bundle) serves
    broken = tmp_path / "broken"
    shutil.copytree(small_bundle, broken)
    (broken / artifact_or_cpu(manifest, "cpu").path).write_bytes(b"truncated")
    engine = engine_for_bundle(
        manifest, broken, "cpu", previous=(manifest, small_bundle), config=_config()
    )
    assert engine.active_name.startswith("previous v1 cpu") and engine.failures
    # no ONNX at all: the reference, verified by its sha256 first
    engine = engine_for_bundle(manifest, small_bundle, "cpu", config=_config(enabled=False))
    assert engine.engine_type is EngineType.SKLEARN
    onnx = engine_for_bundle(manifest, small_bundle, "cpu", config=_config())
    assert np.array_equal(engine.predict(rows).labels, onnx.predict(rows).labels)


def test_onnx_quantize_picks_int8_where_the_manifest_has_one(small_bundle: Path) -> None:
    from device_sim.engine import artifact_or_cpu
    from packager.verify import load_manifest_unverified

    manifest = load_manifest_unverified(small_bundle)
    cpu = artifact_or_cpu(manifest, "cpu")
    assert cpu.precision == "fp32"
    assert artifact_or_cpu(manifest, "cpu", quantize=True) is cpu  # trees: no int8 exists
    int8 = cpu.model_copy(update={"precision": "int8", "sha256": "1" * 64})
    with_int8 = manifest.model_copy(update={"artifacts": [*manifest.artifacts, int8]})
    assert artifact_or_cpu(with_int8, "cpu", quantize=True).precision == "int8"
    assert artifact_or_cpu(with_int8, "cpu", quantize=False).precision == "fp32"
    only_cpu = manifest.model_copy(update={"artifacts": [cpu]})
    assert artifact_or_cpu(only_cpu, "ios-coreml") is cpu  # no artifact for the target: cpu
