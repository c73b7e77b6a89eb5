"""Inference engines: the original ``inference_engine.py`` for the device.

    engine = create_inference_engine("model.ort", EngineType.ONNX)
    result = engine.predict(features)        # numpy or pandas -> Prediction(labels, scores)
    engine.get_metrics().p95_ms

Every engine returns what the artifacts' contract promises (packager): ``labels`` int64,
-1 anomaly / 1 normal, as scikit-learn's ``predict``; ``scores`` float32, scikit-learn's
``decision_function`` (negative is anomalous).

    providers.py   provider names and the fallback from what is asked to what the build has
    base.py        EngineType, Prediction, input checks, InferenceEngine (errors: device_sim.errors)
    onnx.py        OnnxEngine (onnxruntime)
    reference.py   SklearnEngine, the scikit-learn reference
    fallback.py    FallbackEngine: the one fallback path (new, previous, reference)
    factories.py   create_inference_engine, engine_for_bundle, artifact_or_cpu
    config.py      ONNX_* settings from the environment
    metrics.py     latency bookkeeping and Prometheus instruments

The ONNX engine asks onnxruntime for providers in the order given (the manifest's EP plan:
NNAPI, CoreML, CUDA, TensorRT, then CPU), keeps those this build has, and says which it
dropped (``engine.provider_fallback``, and a log warning). scikit-learn is imported only
when the SKLEARN engine is asked for: a device does not load a trainer.
"""

from device_sim.engine.base import EngineType, InferenceEngine, Prediction, as_matrix
from device_sim.engine.factories import (
    artifact_or_cpu,
    create_inference_engine,
    engine_for_bundle,
    engine_for_installed,
)
from device_sim.engine.fallback import Candidate, FallbackEngine
from device_sim.engine.onnx import OnnxEngine
from device_sim.engine.providers import CPU, ProviderChoice, canonical_provider, resolve_providers
from device_sim.engine.reference import SklearnEngine, load_reference, reference_predict
from device_sim.errors import EngineError, InputError, ModelLoadError

__all__ = [
    "CPU",
    "Candidate",
    "EngineError",
    "EngineType",
    "FallbackEngine",
    "InferenceEngine",
    "InputError",
    "ModelLoadError",
    "OnnxEngine",
    "Prediction",
    "ProviderChoice",
    "SklearnEngine",
    "artifact_or_cpu",
    "as_matrix",
    "canonical_provider",
    "create_inference_engine",
    "engine_for_bundle",
    "engine_for_installed",
    "load_reference",
    "reference_predict",
    "resolve_providers",
]
