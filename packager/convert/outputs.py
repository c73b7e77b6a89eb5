"""The one output contract every artifact meets, and the graph surgery that enforces it.

Whatever produced the graph (our tree builder, skl2onnx, onnxmltools, hand-built linear
algebra), the finished model has exactly one input and two outputs:

    input  "input"  float32 [N, n_features]
    label  "label"  int64   [N]   -1 anomaly, 1 normal (scikit-learn's ``predict``)
    score  "score"  float32 [N]   scikit-learn's ``decision_function``: negative = anomalous

Converters hand :func:`finish` the name of a float tensor holding the score (any shape with
N elements per row block, e.g. [N, 1]) and, optionally, an existing label tensor; this
module reshapes, casts and renames in one place so no converter gets the contract
subtly wrong.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

INPUT = "input"
LABEL = "label"
SCORE = "score"
# ai.onnx 17 and ai.onnx.ml 3 are both run by onnxruntime 1.24 and by the
# onnxruntime-react-native 1.24 mobile packages.
OPSETS: dict[str, int] = {"": 17, "ai.onnx.ml": 3}
IR_VERSION = 8


def input_info(n_features: int) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", n_features])


def const(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(value, name=name)


def score_to_label_nodes(
    score: str, prefix: str = "contract"
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """label = -1 where score < 0 else 1: scikit-learn's ``predict`` for outlier detectors."""
    zero, neg, pos = f"{prefix}_zero", f"{prefix}_minus_one", f"{prefix}_plus_one"
    inits = [
        const(zero, np.array(0.0, dtype=np.float32)),
        const(neg, np.array(-1, dtype=np.int64)),
        const(pos, np.array(1, dtype=np.int64)),
    ]
    nodes = [
        helper.make_node("Less", [score, zero], [f"{prefix}_is_anomaly"], name=f"{prefix}_less"),
        helper.make_node("Where", [f"{prefix}_is_anomaly", neg, pos], [LABEL], name=f"{prefix}_where"),
    ]
    return nodes, inits


def finish(
    graph: onnx.GraphProto,
    score: str,
    *,
    label: str | None = None,
    score_dtype: int = TensorProto.FLOAT,
) -> None:
    """Append the nodes that turn ``score`` (and ``label``) into the contract's outputs.

    ``score`` may be any float tensor with one value per row ([N] or [N, 1]); when
    ``label`` is None it is derived from the score's sign, which is what ``predict``
    does for every outlier detector in scikit-learn.
    """
    shape_name = "contract_flat_shape"
    graph.initializer.append(const(shape_name, np.array([-1], dtype=np.int64)))
    flat = "contract_score_flat"
    graph.node.append(helper.make_node("Reshape", [score, shape_name], [flat], name="contract_score_reshape"))
    if score_dtype != TensorProto.FLOAT:
        graph.node.append(
            helper.make_node(
                "Cast", [flat], ["contract_score_f32"], to=TensorProto.FLOAT, name="contract_score_cast"
            )
        )
        flat = "contract_score_f32"
    # Nothing inside the graph reads the output name itself: converters that rewrite
    # outputs (float16's keep_io_types) must not change what the label is computed from.
    graph.node.append(helper.make_node("Identity", [flat], [SCORE], name="contract_score_out"))
    if label is None:
        nodes, inits = score_to_label_nodes(flat)
        graph.node.extend(nodes)
        graph.initializer.extend(inits)
    else:
        label_flat = "contract_label_flat"
        graph.node.append(
            helper.make_node("Reshape", [label, shape_name], [label_flat], name="contract_label_reshape")
        )
        graph.node.append(
            helper.make_node("Cast", [label_flat], [LABEL], to=TensorProto.INT64, name="contract_label_cast")
        )
    del graph.output[:]
    graph.output.extend(
        [
            helper.make_tensor_value_info(LABEL, TensorProto.INT64, ["N"]),
            helper.make_tensor_value_info(SCORE, TensorProto.FLOAT, ["N"]),
        ]
    )


def rename_input(model: onnx.ModelProto, new: str = INPUT) -> None:
    """Give the single graph input the contract's name, rewiring every consumer."""
    graph = model.graph
    real_inputs = [i for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    if len(real_inputs) != 1:
        raise ValueError(f"expected one graph input, found {[i.name for i in real_inputs]}")
    old = real_inputs[0].name
    if old == new:
        return
    real_inputs[0].name = new
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def make_model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(domain, version) for domain, version in OPSETS.items()],
        producer_name="modelsync",
    )
    model.ir_version = IR_VERSION
    return model


def set_metadata(model: onnx.ModelProto, metadata: dict[str, str]) -> None:
    existing = {p.key: p for p in model.metadata_props}
    for key, value in metadata.items():
        if key in existing:
            existing[key].value = value
        else:
            model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))


def check_contract(model: onnx.ModelProto) -> None:
    """Raise ValueError unless ``model`` has exactly the contract's input and outputs."""
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    inputs = [(i.name, i.type.tensor_type.elem_type) for i in graph.input if i.name not in inits]
    outputs = [(o.name, o.type.tensor_type.elem_type) for o in graph.output]
    if inputs != [(INPUT, TensorProto.FLOAT)]:
        raise ValueError(f"inputs {inputs} are not [('input', float32)]")
    if outputs != [(LABEL, TensorProto.INT64), (SCORE, TensorProto.FLOAT)]:
        raise ValueError(f"outputs {outputs} are not [label int64, score float32]")
