"""Missing values routed by the comparison itself, so the tree kernel runs without flags.

A ``TreeEnsemble*`` node flagged in ``nodes_missing_value_tracks_true`` sends NaN to its
true (``x <= t``) branch; unflagged, NaN fails the comparison and takes the false branch.
For float32 ``x`` and a float32 threshold ``t``

    x > t   <=>   -x < -t   <=>   -x <= nextafter(-t, -inf)

because no float32 lies strictly between the two right-hand thresholds. So a flagged node
is rewritten to compare the *negated* feature (column ``n_features + f`` of
``concat(x, -x)``) against ``nextafter(-t, -inf)`` with its children swapped: every row,
NaN included, reaches the same child as before, every node is a plain ``BRANCH_LEQ`` and no
node carries a flag.

Why it pays: onnxruntime lays each node's false child right after it in memory and walks
that way without a jump; scikit-learn flags exactly the nodes whose left child held more
training rows (missing values go to the busier child), so after the swap the busier child
is always the adjacent one. Measured on a 300-tree IsolationForest, 12 features, one
thread, interleaved medians: batch 1 10.4 -> 9.3 µs, batch 100 880 -> 569 µs, batch 10,000
84 -> 58 ms (1.44x). Only clearing the flags (wrong for NaN) gained 4-7%; mixing
``BRANCH_GT`` nodes in instead of negating was 15-40% slower (the kernel's single-mode
loop is lost).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper

MISSING = "nodes_missing_value_tracks_true"


def route_missing_by_negation(attrs: dict[str, Any], n_features: int) -> dict[str, Any] | None:
    """``attrs`` rewritten to read ``concat(x, -x)`` without missing-value flags, or None
    when there is nothing to gain (no flag) or the rewrite is not exact (a mode other than
    ``BRANCH_LEQ``/``LEAF``, or a feature index outside ``[0, n_features)``)."""
    flags = np.asarray(attrs.get(MISSING, []), dtype=np.int64)
    if not flags.any():
        return None
    modes = np.asarray([m.decode() if isinstance(m, bytes) else m for m in attrs["nodes_modes"]])
    if not np.isin(modes, ("BRANCH_LEQ", "LEAF")).all():
        return None
    feature = np.asarray(attrs["nodes_featureids"], dtype=np.int64)
    branch = modes == "BRANCH_LEQ"
    if (feature[branch] < 0).any() or (feature[branch] >= n_features).any():
        return None
    swap = (flags == 1) & branch
    true_ids = np.asarray(attrs["nodes_truenodeids"], dtype=np.int64)
    false_ids = np.asarray(attrs["nodes_falsenodeids"], dtype=np.int64)
    values = np.asarray(attrs["nodes_values"], dtype=np.float32)
    negated = np.nextafter(-values, np.float32(-np.inf)).astype(np.float32)
    out = dict(attrs)
    out["nodes_featureids"] = np.where(swap, feature + n_features, feature).tolist()
    out["nodes_values"] = np.where(swap, negated, values).astype(np.float32).tolist()
    out["nodes_truenodeids"] = np.where(swap, false_ids, true_ids).tolist()
    out["nodes_falsenodeids"] = np.where(swap, true_ids, false_ids).tolist()
    out[MISSING] = np.zeros(flags.shape[0], dtype=np.int64).tolist()
    out.pop("nodes_hitrates", None)  # describes the old orientation; the kernel ignores it
    return out


def negated_input_nodes(source: str, prefix: str) -> tuple[list[onnx.NodeProto], str]:
    """Nodes computing ``concat(source, -source)`` along the features; the output's name."""
    neg, both = f"{prefix}_negated", f"{prefix}_with_negated"
    return [
        helper.make_node("Neg", [source], [neg], name=f"{prefix}_neg"),
        helper.make_node("Concat", [source, neg], [both], axis=1, name=f"{prefix}_concat"),
    ], both
