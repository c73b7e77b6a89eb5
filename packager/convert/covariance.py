"""EllipticEnvelope → squared Mahalanobis distance in three nodes (skl2onnx has no converter).

scikit-learn 1.9: ``decision_function = -mahalanobis(X) - offset_`` with
``mahalanobis(X) = (X - location_) P (X - location_)^T`` per row, P = ``get_precision()``.
With P = L L^T (Cholesky) the distance is ``ReduceSumSquare((X - location_) @ L)``, which
stays non-negative in float32 where ``(d @ P) * d`` could cancel.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper
from sklearn.covariance import EllipticEnvelope

from packager.convert.outputs import INPUT, const, finish, input_info, make_model
from packager.errors import UnsupportedModelError


def convert_elliptic_envelope(model: EllipticEnvelope, n_features: int) -> onnx.ModelProto:
    precision = np.asarray(model.get_precision(), dtype=np.float64)
    try:
        factor = np.linalg.cholesky(precision)
    except np.linalg.LinAlgError as exc:
        raise UnsupportedModelError(
            f"EllipticEnvelope precision matrix is not positive definite: {exc}"
        ) from exc
    nodes = [
        helper.make_node("Sub", [INPUT, "ee_location"], ["ee_centred"], name="ee_centre"),
        helper.make_node("MatMul", ["ee_centred", "ee_factor"], ["ee_whitened"], name="ee_whiten"),
        helper.make_node(
            "ReduceSumSquare", ["ee_whitened"], ["ee_distance"], axes=[1], keepdims=0, name="ee_distance"
        ),
        helper.make_node("Sub", ["ee_minus_offset", "ee_distance"], ["ee_decision"], name="ee_decision"),
    ]
    inits = [
        const("ee_location", np.asarray(model.location_, dtype=np.float32)),
        const("ee_factor", factor.astype(np.float32)),
        const("ee_minus_offset", np.array(-float(model.offset_), dtype=np.float32)),
    ]
    graph = helper.make_graph(nodes, "elliptic_envelope", [input_info(n_features)], [], initializer=inits)
    finish(graph, "ee_decision")
    return make_model(graph)
