"""Graphs from skl2onnx and onnxmltools, brought onto the artifact contract.

Both converters pick the lowest opset their operators need and name outputs their own way
(``label``/``scores`` for outlier detectors, ``label``/``probabilities`` for classifiers).
Here the opsets are raised to the project's fixed ones and the outputs are rewired:

* outlier detector: ``scores`` ([N, 1], scikit-learn's decision_function) becomes
  ``score``; ``label`` is derived again from its sign, so label and score can never
  disagree;
* classifier: ``score = max(P(other classes)) - P(failure)`` (see packager.detectors).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper, version_converter

from packager.convert.outputs import OPSETS, const, finish, rename_input
from packager.errors import UnsupportedModelError


def rename_tensor(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new
    for value in list(graph.output) + list(graph.value_info):
        if value.name == old:
            value.name = new


def normalise_opsets(model: onnx.ModelProto) -> onnx.ModelProto:
    """Raise ai.onnx to 17 (onnx's version converter) and ai.onnx.ml to 3 (its later
    versions only add attributes), with one entry per domain."""
    versions: dict[str, int] = {}
    for op in model.opset_import:
        versions[op.domain] = max(versions.get(op.domain, 0), op.version)
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(d, v) for d, v in versions.items())
    default = versions.get("", OPSETS[""])
    if default > OPSETS[""]:
        raise UnsupportedModelError(f"converter used ai.onnx opset {default} > {OPSETS['']}")
    if default < OPSETS[""]:
        model = version_converter.convert_version(model, OPSETS[""])
    versions = {op.domain: op.version for op in model.opset_import}
    versions.update(OPSETS)
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(d, v) for d, v in versions.items())
    return model


def _output_names(model: onnx.ModelProto) -> list[str]:
    return [o.name for o in model.graph.output]


def finish_outlier(model: onnx.ModelProto) -> onnx.ModelProto:
    """skl2onnx's ``label``/``scores`` → the contract (score from ``scores``)."""
    names = _output_names(model)
    if len(names) != 2 or names[1] != "scores":
        raise UnsupportedModelError(f"unexpected outlier-detector outputs {names}")
    model = normalise_opsets(model)
    graph = model.graph
    rename_tensor(graph, names[0], "external_label")
    rename_tensor(graph, names[1], "external_scores")
    rename_input(model)
    finish(graph, "external_scores")
    return model


def finish_classifier(model: onnx.ModelProto, failure_index: int, n_classes: int) -> onnx.ModelProto:
    """``label``/``probabilities`` (zipmap off) → score = max P(other) - P(failure)."""
    names = _output_names(model)
    if len(names) != 2:
        raise UnsupportedModelError(f"unexpected classifier outputs {names}")
    model = normalise_opsets(model)
    graph = model.graph
    rename_tensor(graph, names[0], "external_label")
    rename_tensor(graph, names[1], "external_probabilities")
    rename_input(model)
    others = np.array([i for i in range(n_classes) if i != failure_index], dtype=np.int64)
    graph.initializer.extend(
        [const("failure_index", np.array([failure_index], dtype=np.int64)), const("other_indices", others)]
    )
    graph.node.extend(
        [
            helper.make_node(
                "Gather",
                ["external_probabilities", "failure_index"],
                ["p_failure"],
                axis=1,
                name="gather_failure",
            ),
            helper.make_node(
                "Gather",
                ["external_probabilities", "other_indices"],
                ["p_others"],
                axis=1,
                name="gather_others",
            ),
            helper.make_node(
                "ReduceMax", ["p_others"], ["p_best_other"], axes=[1], keepdims=1, name="best_other"
            ),
            helper.make_node(
                "Sub", ["p_best_other", "p_failure"], ["classifier_decision"], name="classifier_decision"
            ),
        ]
    )
    # The dangling skl2onnx label is pruned by onnxruntime's optimizer; keeping it out of
    # the outputs is what matters.
    finish(graph, "classifier_decision")
    return model


def skl2onnx_convert(estimator: Any, n_features: int, *, classifier: bool) -> onnx.ModelProto:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    options: dict[Any, Any] | None = None
    if classifier:
        # zipmap off on every classifier in the model (a pipeline's last step included)
        steps = getattr(estimator, "steps", None)
        final = steps[-1][1] if steps else estimator
        options = {id(final): {"zipmap": False}}
    try:
        model: onnx.ModelProto = convert_sklearn(
            estimator,
            initial_types=[("input", FloatTensorType([None, n_features]))],
            target_opset=dict(OPSETS),
            options=options,
        )
    except Exception as exc:  # skl2onnx raises bare RuntimeError/MissingShapeCalculator/...
        raise UnsupportedModelError(
            f"skl2onnx cannot convert {type(estimator).__name__}: {str(exc).splitlines()[0]}"
        ) from exc
    return model


def lightgbm_convert(estimator: Any, n_features: int) -> onnx.ModelProto:
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    try:
        model: onnx.ModelProto = convert_lightgbm(
            estimator,
            initial_types=[("input", FloatTensorType([None, n_features]))],
            # onnxmltools 1.16 tops out at 15; normalise_opsets raises it to 17 afterwards
            target_opset=15,
            zipmap=False,
        )
    except Exception as exc:
        raise UnsupportedModelError(
            f"onnxmltools cannot convert {type(estimator).__name__}: {str(exc).splitlines()[0]}"
        ) from exc
    return model
