"""scikit-learn Pipelines: preprocessing folded into the trees, or as nodes before the detector.

The final step is converted alone, by the converter it would get bare (one TreeEnsemble for
an IsolationForest, skl2onnx/onnxmltools for the rest), on the transformed width. Then:

* every step per-feature monotone (``fold.column_map``) and the graph's only readers of the
  input are tree ensembles: the steps fold into the trees' thresholds and feature ids
  (packager.convert.fold), exact, and the graph stays one tree operator;
* otherwise the steps become nodes in front of the detector (packager.convert.steps),
  checked by the parity gate like any float32 arithmetic.

The reference is :class:`PipelineReference`: the pipeline, fed float64 copies of the
float32 rows, which is what it computes for the float64 data it was trained on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import pandas as pd
from sklearn.base import is_classifier, is_outlier_detector
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from packager.convert.external import rename_tensor
from packager.convert.fold import chain_column_map, fold_into, foldable_trees, pipeline_transform
from packager.convert.outputs import INPUT
from packager.convert.steps import Emitter, emit
from packager.errors import UnsupportedModelError, UsageError


class PipelineReference(Pipeline):  # type: ignore[misc]  # sklearn ships no types
    """The fitted pipeline's own steps, answering for float32 rows as the pipeline does for
    the same values in float64. A Pipeline itself, so whatever reads a pipeline's steps
    (row planning, golden rows) reads this one's; ``pipeline`` is the object given."""

    pipeline: Pipeline

    @classmethod
    def of(cls, pipe: Pipeline) -> PipelineReference:
        ref = cls(pipe.steps, transform_input=pipe.transform_input, memory=pipe.memory, verbose=pipe.verbose)
        ref.pipeline = pipe
        return ref

    @property
    def n_features_in_(self) -> int:
        return input_width(self)

    @staticmethod
    def _x(X: Any) -> Any:
        if isinstance(X, pd.DataFrame):
            return X.astype(np.float64)
        return np.asarray(X, dtype=np.float64)

    def predict(self, X: Any, **params: Any) -> np.ndarray:
        return np.asarray(super().predict(self._x(X), **params))

    def decision_function(self, X: Any, **params: Any) -> np.ndarray:
        return np.asarray(super().decision_function(self._x(X), **params))

    def score_samples(self, X: Any) -> np.ndarray:
        return np.asarray(super().score_samples(self._x(X)))

    def predict_proba(self, X: Any, **params: Any) -> np.ndarray:
        return np.asarray(super().predict_proba(self._x(X), **params))


def input_width(pipe: Pipeline) -> int:
    """Columns the pipeline takes (its first step that records it: leading
    'passthrough' steps do not)."""
    for _, step in pipe.steps:
        n = getattr(step, "n_features_in_", None)
        if n is not None:
            return int(n)
    raise UnsupportedModelError("Pipeline does not say how many features it takes")


def final_step(pipe: Pipeline) -> tuple[str, Any]:
    name, final = pipe.steps[-1]
    return str(name), final


def check_pipeline(pipe: Pipeline) -> bool:
    """Fitted, ends in a detector; True when that detector is a classifier."""
    name, final = final_step(pipe)
    if final is None or isinstance(final, str):
        raise UnsupportedModelError(
            f"Pipeline's last step '{name}' is {final!r}, not a detector: end the pipeline with an "
            "outlier detector or a probabilistic classifier"
        )
    try:
        check_is_fitted(pipe)
    except NotFittedError as exc:
        raise UsageError(
            f"Pipeline is not fitted (its last step '{name}' ({type(final).__name__}) has not "
            "been fitted): fit the pipeline before packaging it"
        ) from exc
    if is_outlier_detector(final) and hasattr(final, "decision_function"):
        return False
    if is_classifier(final) and hasattr(final, "predict_proba"):
        return True
    raise UnsupportedModelError(
        f"Pipeline's last step '{name}' ({type(final).__name__}) is not a detector: end the pipeline "
        "with an outlier detector (decision_function) or a probabilistic classifier (predict_proba)"
    )


def convert_pipeline(
    pipe: Pipeline, convert_final: Callable[[Any, int], onnx.ModelProto]
) -> tuple[onnx.ModelProto, str]:
    """The pipeline's graph on the contract, and how its steps went in: "folded" or "nodes"."""
    steps = pipe.steps[:-1]
    _, final = final_step(pipe)
    n_in = input_width(pipe)
    # Emitting first refuses an unsupported step before any conversion work.
    e = Emitter("pipeline")
    x, width = INPUT, n_in
    for name, step in steps:
        x, width = emit(e, str(name), step, x, width)
    n_final = int(getattr(final, "n_features_in_", width))
    if n_final != width:
        raise UnsupportedModelError(
            f"Pipeline's steps output {width} features, its last step expects {n_final}"
        )
    graph = convert_final(final, width)
    src = chain_column_map([s for _, s in steps], n_in) if steps else None
    trees = foldable_trees(graph, INPUT) if src is not None else None
    if src is not None and trees is not None:
        names = getattr(pipe, "feature_names_in_", None)
        transform = pipeline_transform(
            [s for _, s in steps], n_in, src, [str(c) for c in names] if names is not None else None
        )
        fold_into(graph, trees, src, n_in, transform)
        return graph, "folded"
    if x == INPUT:
        return graph, "nodes"
    inner = "pipeline_features"
    rename_tensor(graph.graph, INPUT, inner)
    for node in e.nodes:  # the prefix writes the detector's input
        for i, name in enumerate(node.output):
            if name == x:
                node.output[i] = inner
        for i, name in enumerate(node.input):
            if name == x:
                node.input[i] = inner
    nodes = [*e.nodes, *graph.graph.node]
    del graph.graph.node[:]
    graph.graph.node.extend(nodes)
    graph.graph.initializer.extend(e.inits)
    graph.graph.input[0].type.tensor_type.shape.dim[1].dim_value = n_in
    return graph, "nodes"
