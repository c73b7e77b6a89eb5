"""IsolationForest → one ``TreeEnsembleRegressor`` and a handful of arithmetic nodes.

skl2onnx converts each isolation tree into its own subgraph (~27 nodes a tree, ~8,000
for 300 trees). Here every tree goes into ONE ai.onnx.ml ``TreeEnsembleRegressor`` whose
leaves already hold each leaf's contribution to scikit-learn 1.9's score
(``IsolationForest._compute_score_samples``):

    depth(x)  = sum_t  node_depth_t(leaf) + c(n_samples_t(leaf)) - 1
    score     = -(2 ** (-depth(x) / (n_trees * c(max_samples))))      (score_samples)
    decision  = score - offset_                                         (decision_function)

so a leaf's weight is ``-(node_depth + c(n) - 1) / (n_trees * c(max_samples))`` and the
ensemble sum is the exponent directly. Two details make float32 match float64:

* split thresholds become the largest float32 <= the float64 threshold, so for float32
  input ``x <= t32`` is exactly scikit-learn's ``x <= t64`` (round-to-nearest would send
  about one row in 5,000 down the other branch);
* onnxruntime accumulates the leaf sum in float32. Each tree's leaves are centred on
  their mean and the sum of the means goes into ``base_values`` once, so the 300 running
  additions work on small residuals instead of a growing total (measured on 60,000
  uniform rows, 300 trees: max |score error| 2.9e-7 without centring, 8e-8 with it).

A NaN feature follows each node's ``missing_go_to_left``, as scikit-learn 1.9's ``apply``
does at predict time (it accepts NaN there), so rows with missing values score the same too.
The attributes say so with ``nodes_missing_value_tracks_true``; the graph routes NaN
through negated features instead, which is exact and 1.1-1.5x faster (``tree_layout``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper
from sklearn.ensemble import IsolationForest
from sklearn.ensemble._iforest import _average_path_length

from packager.convert.outputs import INPUT, const, finish, input_info, make_model
from packager.convert.tree_layout import negated_input_nodes, route_missing_by_negation


def floor_float32(values: np.ndarray) -> np.ndarray:
    """Largest float32 not greater than each float64 value."""
    v64 = np.asarray(values, dtype=np.float64)
    v32 = v64.astype(np.float32)
    too_big = v32.astype(np.float64) > v64
    v32[too_big] = np.nextafter(v32[too_big], np.float32(-np.inf))
    return v32


def tree_ensemble_attributes(forest: IsolationForest) -> tuple[dict[str, Any], float]:
    """Attributes of the one TreeEnsembleRegressor and its base value (float64)."""
    n_trees = len(forest.estimators_)
    denominator = n_trees * float(_average_path_length([forest._max_samples])[0])
    cols: dict[str, list[np.ndarray]] = {
        k: []
        for k in (
            "treeids",
            "nodeids",
            "missing",
            "featureids",
            "modes",
            "values",
            "true",
            "false",
            "t_treeids",
            "t_nodeids",
            "t_weights",
        )
    }
    base = 0.0
    for t, (tree, features) in enumerate(zip(forest.estimators_, forest.estimators_features_, strict=True)):
        tr = tree.tree_
        n = tr.node_count
        ids = np.arange(n, dtype=np.int64)
        is_leaf = tr.children_left == -1
        # Tree feature indices refer to the tree's own feature subset (max_features < 1).
        feat = np.asarray(features, dtype=np.int64)[np.where(is_leaf, 0, tr.feature)]
        cols["treeids"].append(np.full(n, t, dtype=np.int64))
        cols["nodeids"].append(ids)
        cols["featureids"].append(np.where(is_leaf, 0, feat))
        cols["modes"].append(np.where(is_leaf, "LEAF", "BRANCH_LEQ"))
        cols["values"].append(np.where(is_leaf, np.float32(0), floor_float32(tr.threshold)))
        cols["true"].append(np.where(is_leaf, 0, tr.children_left))
        # NaN follows scikit-learn's per-node choice (the true branch is the left child).
        missing_left = getattr(tr, "missing_go_to_left", np.zeros(n, dtype=np.uint8))
        cols["missing"].append(np.where(is_leaf, 0, np.asarray(missing_left, dtype=np.int64)))
        cols["false"].append(np.where(is_leaf, 0, tr.children_right))
        depths = np.asarray(forest._decision_path_lengths[t], dtype=np.float64)
        avg = np.asarray(forest._average_path_length_per_tree[t], dtype=np.float64)
        if denominator != 0:
            weight = -(depths + avg - 1.0)[is_leaf] / denominator
        else:  # a single training sample: scikit-learn fixes the exponent at -1
            weight = np.zeros(int(is_leaf.sum()))
        centre = float(weight.mean())
        base += centre
        cols["t_treeids"].append(np.full(int(is_leaf.sum()), t, dtype=np.int64))
        cols["t_nodeids"].append(ids[is_leaf])
        cols["t_weights"].append(weight - centre)
    if denominator == 0:
        base = -1.0

    def cat(key: str) -> np.ndarray:
        return np.concatenate(cols[key])

    attrs: dict[str, Any] = {
        "n_targets": 1,
        "aggregate_function": "SUM",
        "post_transform": "NONE",
        "nodes_treeids": cat("treeids").tolist(),
        "nodes_nodeids": cat("nodeids").tolist(),
        "nodes_featureids": cat("featureids").tolist(),
        "nodes_modes": cat("modes").tolist(),
        "nodes_values": cat("values").astype(np.float32).tolist(),
        "nodes_truenodeids": cat("true").tolist(),
        "nodes_falsenodeids": cat("false").tolist(),
        "nodes_missing_value_tracks_true": cat("missing").tolist(),
        "target_treeids": cat("t_treeids").tolist(),
        "target_nodeids": cat("t_nodeids").tolist(),
        "target_ids": np.zeros(len(cat("t_nodeids")), dtype=np.int64).tolist(),
        "target_weights": cat("t_weights").astype(np.float32).tolist(),
        "base_values": [float(np.float32(base))],
    }
    return attrs, base


def isolation_forest_nodes(
    attrs: dict[str, Any], offset: float, n_features: int, *, source: str = INPUT
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], str]:
    """Nodes from ``source`` (float32 [N, n_features]) to decision_function ([N, 1]), the
    initializers they use and the score tensor's name. ``attrs`` is what
    :func:`tree_ensemble_attributes` returned, possibly with thresholds and feature indices
    rewritten by a fold; missing values are routed without flags (``tree_layout``)."""
    nodes: list[onnx.NodeProto] = []
    routed = route_missing_by_negation(attrs, n_features)
    if routed is not None:
        extra, source = negated_input_nodes(source, "iforest")
        nodes.extend(extra)
        attrs = routed
    nodes += [
        helper.make_node(
            "TreeEnsembleRegressor",
            [source],
            ["iforest_exponent"],
            domain="ai.onnx.ml",
            name="iforest_trees",
            **attrs,
        ),
        helper.make_node("Pow", ["iforest_two", "iforest_exponent"], ["iforest_power"], name="iforest_pow"),
        # decision_function = -(2 ** exponent) - offset_ = (-offset_) - 2 ** exponent
        helper.make_node(
            "Sub", ["iforest_minus_offset", "iforest_power"], ["iforest_decision"], name="iforest_decision"
        ),
    ]
    inits = [
        const("iforest_two", np.array(2.0, dtype=np.float32)),
        const("iforest_minus_offset", np.array(-float(offset), dtype=np.float32)),
    ]
    return nodes, inits, "iforest_decision"


def convert_isolation_forest(
    forest: IsolationForest, n_features: int, *, attrs: dict[str, Any] | None = None
) -> onnx.ModelProto:
    """The artifact graph; ``attrs`` replaces ``tree_ensemble_attributes(forest)[0]``
    (e.g. with a scaler folded into the thresholds)."""
    if attrs is None:
        attrs, _ = tree_ensemble_attributes(forest)
    nodes, inits, score = isolation_forest_nodes(attrs, float(forest.offset_), n_features)
    graph = helper.make_graph(nodes, "isolation_forest", [input_info(n_features)], [], initializer=inits)
    finish(graph, score, score_dtype=TensorProto.FLOAT)
    return make_model(graph)
