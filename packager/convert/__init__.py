"""Any supported model → an ONNX graph on the artifact contract (see ``outputs``).

``to_onnx`` picks the converter:

==================================  ============================================  =================
model                               converter                                     family
==================================  ============================================  =================
IsolationForest(Detector)           ``isolation_forest`` (one TreeEnsemble)       isolation_forest
AutoencoderDetector/PCADetector     ``reconstruction`` (hand-built MatMuls)       autoencoder / pca
LGBMClassifier                      onnxmltools, via ClassifierDetector           lightgbm
EllipticEnvelope                    ``covariance`` (Mahalanobis, 3 nodes)         sklearn
sklearn outlier detector            skl2onnx (label/scores → contract)            sklearn
sklearn classifier                  skl2onnx, via ClassifierDetector              sklearn
Pipeline, scalers/columns + trees   last step as above, steps *folded* into       its last step's
                                    its thresholds/feature ids (``fold``)
Pipeline, other supported steps     last step as above, steps as nodes before     its last step's
                                    it (``steps``)
Pipeline, any other step            refused, naming the step (``steps.refuse``)
==================================  ============================================  =================

and returns the graph together with the *reference*: the object whose ``predict`` and
``decision_function`` the graph reproduces (the model itself, the detector wrapping it,
or for a Pipeline ``pipelines.PipelineReference``: the pipeline fed float64 copies of the
rows), which is what parity is measured against; a pipeline ending in LGBMClassifier is
family sklearn. See docs/packager.md, "Pipelines: folded steps, nodes, refusals".
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import onnx
import sklearn
from sklearn.base import is_classifier, is_outlier_detector
from sklearn.covariance import EllipticEnvelope
from sklearn.ensemble import IsolationForest
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from packager.convert.outputs import check_contract, set_metadata
from packager.detectors import (
    ClassifierDetector,
    Detector,
    IsolationForestDetector,
    _ReconstructionDetector,
)
from packager.errors import UnsupportedModelError, UsageError


@dataclass(frozen=True)
class Converted:
    onnx: onnx.ModelProto
    reference: Any
    family: str
    framework: str
    framework_version: str
    feature_names: list[str]
    training_data_sha256: str | None
    threshold: float = 0.0
    # a Pipeline's steps: "folded" into the trees' thresholds, or "nodes" before the detector
    preprocessing: str | None = None


def _is_lightgbm(model: Any) -> bool:
    return type(model).__module__.startswith("lightgbm")


def _names(model: Any, given: Sequence[str] | None) -> list[str]:
    n = getattr(model, "n_features_in_", None)
    if n is None:
        raise UnsupportedModelError(f"{type(model).__name__} does not say how many features it takes")
    own = getattr(model, "feature_names_in_", None)
    if given is not None:
        names = list(given)
    elif own is not None:
        names = [str(x) for x in own]
    else:
        names = [f"f{i}" for i in range(int(n))]
    if len(names) != int(n):
        raise UsageError(f"{len(names)} feature names given for a model with {n} features")
    return names


def _ensure_fitted(model: Any) -> None:
    try:
        check_is_fitted(model)
    except NotFittedError as exc:
        raise UsageError(f"{type(model).__name__} is not fitted") from exc
    except TypeError as exc:
        raise UnsupportedModelError(f"{type(model).__name__} is not a scikit-learn estimator") from exc


def as_reference(model: Any, feature_names: Sequence[str] | None = None) -> Any:
    """The object whose predict/decision_function the artifact will reproduce."""
    if isinstance(model, ClassifierDetector) and isinstance(model.estimator, Pipeline):
        from packager.convert.pipelines import PipelineReference, check_pipeline

        check_pipeline(model.estimator)
        return ClassifierDetector(
            PipelineReference.of(model.estimator),
            failure_class=model.failure_class,
            feature_names=feature_names if feature_names is not None else model.feature_names_,
        )
    if isinstance(model, Detector):
        if feature_names is not None and list(feature_names) != model.feature_names_:
            raise UsageError(
                f"feature names {list(feature_names)} differ from the model's {model.feature_names_}"
            )
        return model
    if isinstance(model, Pipeline):
        from packager.convert.pipelines import PipelineReference, check_pipeline

        is_clf = check_pipeline(model)
        ref = PipelineReference.of(model)
        names = _names(ref, feature_names)
        return ClassifierDetector(ref, feature_names=names) if is_clf else ref
    if _is_lightgbm(model):
        if not hasattr(model, "predict_proba"):
            raise UnsupportedModelError(
                f"{type(model).__name__}: only LightGBM classifiers (LGBMClassifier) are supported"
            )
        _ensure_fitted(model)
        return ClassifierDetector(model, feature_names=_names(model, feature_names))
    if not hasattr(model, "fit") or not hasattr(model, "get_params"):
        raise UnsupportedModelError(f"{type(model).__name__} is not a scikit-learn or LightGBM model")
    _ensure_fitted(model)
    if is_outlier_detector(model) and hasattr(model, "decision_function"):
        _names(model, feature_names)
        return model
    if is_classifier(model) and hasattr(model, "predict_proba"):
        return ClassifierDetector(model, feature_names=_names(model, feature_names))
    raise UnsupportedModelError(
        f"{type(model).__name__} is neither an outlier detector with decision_function nor a "
        "probabilistic classifier; nothing to package"
    )


def _pipeline_of(reference: Any) -> Pipeline | None:
    from packager.convert.pipelines import PipelineReference

    inner = reference.estimator if isinstance(reference, ClassifierDetector) else reference
    return inner.pipeline if isinstance(inner, PipelineReference) else None


def to_onnx(model: Any, feature_names: Sequence[str] | None = None) -> Converted:
    from packager.convert.pipelines import convert_pipeline, final_step

    reference = as_reference(model, feature_names)
    framework, version = "scikit-learn", sklearn.__version__
    sha: str | None = None
    pipe = _pipeline_of(reference)
    if isinstance(reference, Detector) and pipe is None:
        names = reference.feature_names_
        family = reference.family
        framework, version = reference.framework
        sha = reference.training_data_sha256_
    else:
        names = (
            reference.feature_names_ if isinstance(reference, Detector) else _names(reference, feature_names)
        )
        inner = final_step(pipe)[1] if pipe is not None else reference
        family = "isolation_forest" if isinstance(inner, IsolationForest) else "sklearn"
    how: str | None = None
    if pipe is not None:

        def final_graph(final: Any, width: int) -> onnx.ModelProto:
            # the last step alone, on the transformed width, with the pipeline's failure class
            if isinstance(reference, ClassifierDetector):
                return _graph(ClassifierDetector(final, failure_class=reference.failure_class), width)
            return _graph(as_reference(final), width)

        graph, how = convert_pipeline(pipe, final_graph)
    else:
        graph = _graph(reference, len(names))

    check_contract(graph)
    onnx.checker.check_model(graph)
    converted = Converted(
        onnx=graph,
        reference=reference,
        family=family,
        framework=framework,
        framework_version=version,
        feature_names=names,
        training_data_sha256=sha,
        preprocessing=how,
    )
    set_metadata(graph, metadata(converted))
    return converted


def _graph(reference: Any, n: int) -> onnx.ModelProto:
    from packager.convert import external
    from packager.convert.covariance import convert_elliptic_envelope
    from packager.convert.isolation_forest import convert_isolation_forest
    from packager.convert.reconstruction import convert_reconstruction

    if isinstance(reference, IsolationForestDetector):
        graph = convert_isolation_forest(reference.model_, n)
    elif isinstance(reference, IsolationForest):
        graph = convert_isolation_forest(reference, n)
    elif isinstance(reference, EllipticEnvelope):
        graph = convert_elliptic_envelope(reference, n)
    elif isinstance(reference, _ReconstructionDetector):
        graph = convert_reconstruction(reference)
    elif isinstance(reference, ClassifierDetector):
        est = reference.estimator
        raw = (
            external.lightgbm_convert(est, n)
            if reference.family == "lightgbm"
            else external.skl2onnx_convert(est, n, classifier=True)
        )
        graph = external.finish_classifier(raw, reference.failure_index, len(reference.classes_))
    else:
        graph = external.finish_outlier(external.skl2onnx_convert(reference, n, classifier=False))
    return graph


def metadata(c: Converted) -> dict[str, str]:
    """What every exported ONNX model carries in its metadata_props."""
    import onnxruntime

    extra = {"modelsync.preprocessing": c.preprocessing} if c.preprocessing else {}
    return {
        **extra,
        "modelsync.family": c.family,
        "modelsync.feature_names": json.dumps(c.feature_names),
        "modelsync.threshold": repr(float(c.threshold)),
        "modelsync.training_data_sha256": c.training_data_sha256 or "",
        "modelsync.versions": json.dumps(
            {
                c.framework: c.framework_version,
                "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__,
            }
        ),
        "modelsync.outputs": (
            "label int64 [N] (-1 anomaly, 1 normal); score float32 [N] (negative = anomalous)"
        ),
    }
