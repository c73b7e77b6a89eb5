"""Per-feature monotone preprocessing folded into a tree ensemble's thresholds, exactly.

A tree node asks one question of one transformed feature, ``fl32(T(x)) <= v`` (or ``<``,
``>=``, ``>``), where ``x`` is a raw input column and ``T`` the steps in front of the trees.
When every step maps each output column from ONE input column through a monotone function
(StandardScaler, MinMaxScaler with or without ``clip``, MaxAbsScaler, RobustScaler,
``passthrough``, column selection by a ColumnTransformer, chains of these), the set of
float32 ``x`` that answer "yes" is a half-line: ``x <= x*`` or ``x >= x*``. ``x*`` is found
by bisection over the float32 ordinals (every finite float32, in order), evaluating the
fitted scikit-learn steps themselves on the candidates, in float64 as scikit-learn does for
float64 input, and casting to float32 as the trees do. The folded node asks ``x <= x*`` of
the raw column, so the artifact decides exactly as the pipeline for every float32 input,
whatever rounding the steps do, without modelling their arithmetic.

NaN stays NaN through these steps, so each node's missing-value branch is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    MaxAbsScaler,
    MinMaxScaler,
    RobustScaler,
    StandardScaler,
)

MONOTONE_STEPS = (StandardScaler, MinMaxScaler, MaxAbsScaler, RobustScaler)
TREE_OPS = ("TreeEnsembleRegressor", "TreeEnsembleClassifier")
_MAX_ORD = 0x7F7FFFFF  # ordinal of the largest finite float32
_DOWN = ("BRANCH_LEQ", "BRANCH_LT")
_UP = ("BRANCH_GTE", "BRANCH_GT")


def is_identity(step: Any) -> bool:
    return (
        step is None
        or (isinstance(step, str) and step == "passthrough")
        or (isinstance(step, FunctionTransformer) and step.func is None)
    )


def column_map(step: Any, n_in: int) -> list[int] | None:
    """For each output column of ``step``, the input column it is a monotone function of;
    None when some output depends on several inputs (or on nothing monotone)."""
    if is_identity(step) or isinstance(step, MONOTONE_STEPS):
        return list(range(n_in))
    if isinstance(step, Pipeline):
        return chain_column_map([inner for _, inner in step.steps], n_in)
    if isinstance(step, ColumnTransformer):
        out: list[int] = []
        for _name, trans, idx in column_blocks(step):
            m = column_map(trans, len(idx))
            if m is None:
                return None
            out += [idx[i] for i in m]
        return out
    return None


def chain_column_map(steps: list[Any], n_in: int) -> list[int] | None:
    cols: list[int] | None = list(range(n_in))
    for step in steps:
        assert cols is not None
        m = column_map(step, len(cols))
        if m is None:
            return None
        cols = [cols[i] for i in m]
    return cols


def column_blocks(ct: ColumnTransformer) -> list[tuple[str, Any, list[int]]]:
    """(name, fitted transformer, input column indices) in the order of the output blocks."""
    blocks = []
    for name, trans, _ in ct.transformers_:
        idx = [int(i) for i in ct._transformer_to_input_indices[name]]
        if (isinstance(trans, str) and trans == "drop") or not idx:
            continue
        blocks.append((ct.output_indices_[name].start, name, trans, idx))
    return [(name, trans, idx) for _, name, trans, idx in sorted(blocks, key=lambda b: b[0])]


def _to_ord(x: np.ndarray) -> np.ndarray:
    bits = np.asarray(x, dtype=np.float32).view(np.int32).astype(np.int64)
    return np.where(bits >= 0, bits, -(bits & 0x7FFFFFFF))


def _from_ord(o: np.ndarray) -> np.ndarray:
    o = np.asarray(o, dtype=np.int64)
    bits = np.where(o >= 0, o, (-o) | 0x80000000)
    return bits.astype(np.uint32).view(np.float32)


Transform = Callable[[dict[int, np.ndarray]], dict[int, np.ndarray]]


def pipeline_transform(steps: list[Any], n_in: int, src: list[int], names: list[str] | None) -> Transform:
    """Column j of ``steps`` evaluated on raw candidates for its source column ``src[j]``,
    in float64, by the fitted steps themselves."""
    import pandas as pd

    def run(cands: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        out: dict[int, np.ndarray] = {}
        pending = list(cands)
        while pending:
            # one matrix per round; columns sharing a source column go in later rounds
            used: set[int] = set()
            this_round = []
            for j in pending:
                if src[j] not in used:
                    used.add(src[j])
                    this_round.append(j)
            pending = [j for j in pending if j not in this_round]
            rows = max(len(cands[j]) for j in this_round)
            m = np.zeros((rows, n_in), dtype=np.float64)
            for j in this_round:
                m[: len(cands[j]), src[j]] = cands[j]
            z: Any = pd.DataFrame(m, columns=names) if names is not None else m
            for step in steps:
                if not is_identity(step):
                    z = step.transform(z)
            z = np.asarray(z, dtype=np.float64)
            for j in this_round:
                out[j] = z[: len(cands[j]), j]
        return out

    return run


def _holds(z: np.ndarray, sign: np.ndarray, v: np.ndarray, mode: np.ndarray) -> np.ndarray:
    z32 = z.astype(np.float32) * sign.astype(np.float32)  # a float32 Neg: exact
    return np.select(
        [mode == "BRANCH_LEQ", mode == "BRANCH_LT", mode == "BRANCH_GTE"],
        [z32 <= v, z32 < v, z32 >= v],
        z32 > v,
    )


def fold_thresholds(
    cols: np.ndarray, signs: np.ndarray, values: np.ndarray, modes: np.ndarray, transform: Transform
) -> tuple[np.ndarray, np.ndarray]:
    """Each question ``sign * fl32(T_col(x)) <mode> value`` asked of the raw value ``x``:
    (x*, down) where the rows that answer "yes" are ``x <= x*`` (down) or ``x >= x*``.

    An empty down-set is x* = -inf, an empty up-set x* = +inf; a full one is the largest
    (smallest) finite float32, so every finite row passes.
    """
    values = np.asarray(values, dtype=np.float32)
    uniq = sorted({int(c) for c in cols})
    probe = transform({j: np.array([-1e30, 1e30]) for j in uniq})
    rising = {j: bool(probe[j][1] >= probe[j][0]) for j in uniq}
    inc = np.array([rising[int(c)] for c in cols]) == (signs > 0)
    down = np.isin(modes, _DOWN) == inc
    # down: largest ordinal that holds (lo holds, hi fails); up: smallest (lo fails, hi holds)
    lo = np.full(len(values), -_MAX_ORD - 1, dtype=np.int64)
    hi = np.full(len(values), _MAX_ORD + 1, dtype=np.int64)
    while True:
        open_ = hi - lo > 1
        if not open_.any():
            break
        mid = (lo + hi) // 2
        x = _from_ord(np.clip(mid, -_MAX_ORD, _MAX_ORD))
        z = np.empty(len(values))
        got = transform({j: x[cols == j].astype(np.float64) for j in uniq})
        for j in uniq:
            z[cols == j] = got[j]
        ok = _holds(z, signs, values, modes)
        move_lo = np.where(down, ok, ~ok) & open_
        move_hi = ~move_lo & open_
        lo = np.where(move_lo, mid, lo)
        hi = np.where(move_hi, mid, hi)
    edge = np.where(down, lo, hi)
    new = _from_ord(np.clip(edge, -_MAX_ORD, _MAX_ORD)).astype(np.float32)
    new = np.where(edge < -_MAX_ORD, np.float32(-np.inf), new)
    new = np.where(edge > _MAX_ORD, np.float32(np.inf), new)
    return new.astype(np.float32), down


def _attr(node: onnx.NodeProto, name: str) -> onnx.AttributeProto | None:
    return next((a for a in node.attribute if a.name == name), None)


@dataclass(frozen=True)
class TreeInput:
    """The tree operators reading the graph's input, and whether they read it through
    ``concat(x, -x)`` (packager.convert.tree_layout's flag-free NaN routing)."""

    trees: list[onnx.NodeProto]
    negated: bool


def _readers(model: onnx.ModelProto, name: str) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if name in n.input]


def _ordered_trees(nodes: list[onnx.NodeProto]) -> bool:
    for n in nodes:
        if n.op_type not in TREE_OPS or n.domain != "ai.onnx.ml":
            return False
        modes = _attr(n, "nodes_modes")
        if _attr(n, "nodes_values") is None or modes is None or _attr(n, "nodes_values_as_tensor"):
            return False
        if not {m.decode() for m in modes.strings} <= {"LEAF", *_DOWN, *_UP}:
            return False
    return bool(nodes)


def foldable_trees(model: onnx.ModelProto, input_name: str) -> TreeInput | None:
    """The tree nodes a fold can rewrite: the input's only readers (directly, or through
    ``Concat(x, Neg(x))``), asking only ordered questions (no BRANCH_EQ/NEQ, no
    tensor-valued thresholds); None otherwise."""
    readers = _readers(model, input_name)
    if _ordered_trees(readers):
        return TreeInput(readers, negated=False)
    negs = [n for n in readers if n.op_type == "Neg"]
    cats = [n for n in readers if n.op_type == "Concat"]
    if len(readers) != 2 or len(negs) != 1 or len(cats) != 1:
        return None
    neg, cat = negs[0], cats[0]
    axis = next((a.i for a in cat.attribute if a.name == "axis"), None)
    if list(cat.input) != [input_name, neg.output[0]] or axis not in (1, -1):
        return None
    if _readers(model, neg.output[0]) != [cat]:
        return None
    trees = _readers(model, cat.output[0])
    return TreeInput(trees, negated=True) if _ordered_trees(trees) else None


def fold_into(
    model: onnx.ModelProto, found: TreeInput, src: list[int], n_in: int, transform: Transform
) -> None:
    """Rewrite the trees in place to read the raw input (``n_in`` columns, or its
    ``concat(x, -x)``), asking each question of the raw column it comes from."""
    width = len(src)
    source = np.asarray(src, dtype=np.int64)
    for node in found.trees:
        feats = _attr(node, "nodes_featureids")
        vals = _attr(node, "nodes_values")
        modes_attr = _attr(node, "nodes_modes")
        assert feats is not None and vals is not None and modes_attr is not None
        f = np.asarray(feats.ints, dtype=np.int64)
        v = np.asarray(vals.floats, dtype=np.float32)
        modes = np.array([m.decode() for m in modes_attr.strings])
        branch = modes != "LEAF"
        col = np.where(f >= width, f - width, f) if found.negated else f
        sign = np.where(f >= width, -1, 1) if found.negated else np.ones_like(f)
        new_f, new_v, new_modes = np.zeros_like(f), v.copy(), modes.copy()
        if branch.any():
            x, down = fold_thresholds(col[branch], sign[branch], v[branch], modes[branch], transform)
            raw = source[col[branch]]
            if found.negated:
                # x >= x*  <=>  -x <= -x*: every node stays BRANCH_LEQ on concat(x, -x)
                new_f[branch] = np.where(down, raw, raw + n_in)
                new_v[branch] = np.where(down, x, -x)
                new_modes[branch] = "BRANCH_LEQ"
            else:
                new_f[branch] = raw
                new_v[branch] = x
                new_modes[branch] = np.where(down, "BRANCH_LEQ", "BRANCH_GTE")
        for name, attr in (
            ("nodes_featureids", helper.make_attribute("nodes_featureids", new_f.tolist())),
            ("nodes_values", helper.make_attribute("nodes_values", new_v.tolist())),
            ("nodes_modes", helper.make_attribute("nodes_modes", [m.encode() for m in new_modes])),
        ):
            old = _attr(node, name)
            assert old is not None
            old.CopyFrom(attr)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[1].dim_value = n_in
