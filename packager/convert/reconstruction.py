"""Autoencoder and PCA detectors → plain linear algebra (MatMul/Add/activations).

Built by hand rather than through skl2onnx because the score needs both the standardized
input and its reconstruction in one graph. The MatMul weights are what INT8 and FP16
quantization act on; everything else stays a handful of elementwise nodes.

    z     = (x - mean) / scale                        StandardScaler
    r     = reconstruct(z)                            MLP layers, or PCA project + back-project
    error = ReduceMean((z - r) ** 2, axis=1)
    score = threshold_ - error                        negative = anomalous
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from packager.convert.outputs import INPUT, const, finish, input_info, make_model
from packager.detectors import AutoencoderDetector, PCADetector, _ReconstructionDetector
from packager.errors import UnsupportedModelError

_ACTIVATIONS = {"relu": "Relu", "tanh": "Tanh", "logistic": "Sigmoid", "identity": None}


def _f32(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def _standardize(det: _ReconstructionDetector) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    scaler = det.scaler_
    mean = scaler.mean_ if scaler.mean_ is not None else np.zeros(det.n_features_in_)
    scale = scaler.scale_ if scaler.scale_ is not None else np.ones(det.n_features_in_)
    nodes = [
        helper.make_node("Sub", [INPUT, "scaler_mean"], ["scaler_centred"], name="scaler_sub"),
        helper.make_node("Div", ["scaler_centred", "scaler_scale"], ["z"], name="scaler_div"),
    ]
    return nodes, [const("scaler_mean", _f32(mean)), const("scaler_scale", _f32(scale))]


def _mlp(det: AutoencoderDetector) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    mlp = det.mlp_
    act = _ACTIVATIONS.get(mlp.activation)
    if mlp.activation not in _ACTIVATIONS:
        raise UnsupportedModelError(f"MLP activation {mlp.activation!r} has no converter")
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    h = "z"
    last = len(mlp.coefs_) - 1
    for i, (w, b) in enumerate(zip(mlp.coefs_, mlp.intercepts_, strict=True)):
        inits += [const(f"mlp_w{i}", _f32(w)), const(f"mlp_b{i}", _f32(b))]
        # MLPRegressor's output layer is the identity (out_activation_ == "identity").
        pre = "reconstruction" if i == last else f"mlp_pre{i}"
        nodes.append(helper.make_node("MatMul", [h, f"mlp_w{i}"], [f"mlp_mm{i}"], name=f"mlp_matmul{i}"))
        nodes.append(helper.make_node("Add", [f"mlp_mm{i}", f"mlp_b{i}"], [pre], name=f"mlp_add{i}"))
        h = pre
        if i < last and act is not None:
            nodes.append(helper.make_node(act, [h], [f"mlp_h{i}"], name=f"mlp_act{i}"))
            h = f"mlp_h{i}"
    return nodes, inits


def _pca(det: PCADetector) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    pca = det.pca_
    if getattr(pca, "whiten", False):
        raise UnsupportedModelError("whitened PCA is not supported by the reconstruction converter")
    w = _f32(pca.components_)
    nodes = [
        helper.make_node("Sub", ["z", "pca_mean"], ["pca_centred"], name="pca_sub"),
        helper.make_node("MatMul", ["pca_centred", "pca_project"], ["pca_codes"], name="pca_encode"),
        helper.make_node("MatMul", ["pca_codes", "pca_back"], ["pca_back_projected"], name="pca_decode"),
        helper.make_node("Add", ["pca_back_projected", "pca_mean"], ["reconstruction"], name="pca_add"),
    ]
    inits = [const("pca_mean", _f32(pca.mean_)), const("pca_project", _f32(w.T.copy())), const("pca_back", w)]
    return nodes, inits


def convert_reconstruction(det: _ReconstructionDetector) -> onnx.ModelProto:
    nodes, inits = _standardize(det)
    if isinstance(det, AutoencoderDetector):
        more, more_inits = _mlp(det)
    elif isinstance(det, PCADetector):
        more, more_inits = _pca(det)
    else:
        raise UnsupportedModelError(f"no reconstruction converter for {type(det).__name__}")
    nodes += more
    inits += more_inits
    nodes += [
        helper.make_node("Sub", ["z", "reconstruction"], ["residual"], name="residual"),
        helper.make_node("Mul", ["residual", "residual"], ["squared"], name="square"),
        helper.make_node("ReduceMean", ["squared"], ["error"], axes=[1], keepdims=0, name="mean_error"),
        helper.make_node("Sub", ["threshold", "error"], ["decision"], name="decision"),
    ]
    inits.append(const("threshold", np.array(det.threshold_, dtype=np.float32)))
    graph = helper.make_graph(nodes, det.family, [input_info(det.n_features_in_)], [], initializer=inits)
    finish(graph, "decision")
    return make_model(graph)
