"""Preprocessing steps that cannot fold into trees, as hand-built float32 ONNX nodes.

Each supported step becomes a few elementwise or MatMul nodes computing scikit-learn's
``transform`` in float32 (scikit-learn computes in float64; the parity gate measures the
difference). Supported: StandardScaler, MinMaxScaler (``clip`` too), MaxAbsScaler,
RobustScaler, PCA (``whiten`` too), SimpleImputer on NaN (mean/median/most_frequent/
constant, without ``add_indicator``), FunctionTransformer of a listed numpy ufunc,
ColumnTransformer of these with ``passthrough``/``drop``, nested Pipelines. Anything else
is refused by name (``refuse``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    MaxAbsScaler,
    MinMaxScaler,
    RobustScaler,
    StandardScaler,
)

from packager.convert.fold import column_blocks, is_identity
from packager.convert.outputs import const
from packager.errors import UnsupportedModelError

SUPPORTED = (
    "StandardScaler, MinMaxScaler, MaxAbsScaler, RobustScaler, PCA, SimpleImputer, "
    "FunctionTransformer(np.log1p/np.log/np.sqrt/np.abs/np.exp/np.expm1/np.tanh/np.square), "
    "ColumnTransformer, 'passthrough'"
)


@dataclass
class Emitter:
    """Accumulates nodes and initializers under one name prefix."""

    prefix: str
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    inits: list[onnx.TensorProto] = field(default_factory=list)
    count: int = 0

    def name(self, what: str) -> str:
        self.count += 1
        return f"{self.prefix}_{what}_{self.count}"

    def const(self, what: str, value: Any, dtype: Any = np.float32) -> str:
        name = self.name(what)
        self.inits.append(const(name, np.asarray(value, dtype=dtype)))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs: Any) -> str:
        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out


def refuse(name: str, step: Any, why: str = "") -> UnsupportedModelError:
    detail = f" ({why})" if why else ""
    return UnsupportedModelError(
        f"Pipeline step '{name}' ({type(step).__name__}){detail} is not supported: fold it into "
        f"your features before training, or use one of {SUPPORTED}"
    )


def _log1p(e: Emitter, x: str) -> str:
    # log(u) * x / (u - 1) with u = 1 + x cancels u's rounding (Goldberg): log1p to a
    # few ulps, where log(1 + x) loses all digits for small x.
    u = e.op("Add", [x, e.const("one", 1.0)])
    um1 = e.op("Sub", [u, e.const("one", 1.0)])
    ratio = e.op("Div", [e.op("Mul", [e.op("Log", [u]), x]), um1])
    return e.op("Where", [e.op("Equal", [um1, e.const("zero", 0.0)]), x, ratio])


_UFUNCS: dict[Any, Callable[[Emitter, str], str]] = {
    np.log1p: _log1p,
    np.log: lambda e, x: e.op("Log", [x]),
    np.sqrt: lambda e, x: e.op("Sqrt", [x]),
    np.abs: lambda e, x: e.op("Abs", [x]),
    np.exp: lambda e, x: e.op("Exp", [x]),
    np.expm1: lambda e, x: e.op("Sub", [e.op("Exp", [x]), e.const("one", 1.0)]),
    np.tanh: lambda e, x: e.op("Tanh", [x]),
    np.square: lambda e, x: e.op("Mul", [x, x]),
}


def emit(e: Emitter, name: str, step: Any, x: str, n_in: int) -> tuple[str, int]:
    """Nodes computing ``step.transform`` of tensor ``x`` ([N, n_in]); (output, width)."""
    if is_identity(step):
        return x, n_in
    if isinstance(step, StandardScaler):
        if step.with_mean:
            x = e.op("Sub", [x, e.const("mean", step.mean_)])
        if step.with_std:
            x = e.op("Div", [x, e.const("scale", step.scale_)])
        return x, n_in
    if isinstance(step, MinMaxScaler):
        x = e.op("Add", [e.op("Mul", [x, e.const("scale", step.scale_)]), e.const("min", step.min_)])
        if step.clip:
            low, high = step.feature_range
            x = e.op("Min", [e.op("Max", [x, e.const("low", low)]), e.const("high", high)])
        return x, n_in
    if isinstance(step, MaxAbsScaler):
        return e.op("Div", [x, e.const("scale", step.scale_)]), n_in
    if isinstance(step, RobustScaler):
        if step.with_centering:
            x = e.op("Sub", [x, e.const("center", step.center_)])
        if step.with_scaling:
            x = e.op("Div", [x, e.const("scale", step.scale_)])
        return x, n_in
    if isinstance(step, PCA):
        centred = e.op("Sub", [x, e.const("mean", step.mean_)])
        z = e.op("MatMul", [centred, e.const("components", step.components_.T)])
        if step.whiten:
            scale = np.sqrt(step.explained_variance_)
            scale = np.maximum(scale, np.finfo(scale.dtype).eps)
            z = e.op("Div", [z, e.const("whiten", scale)])
        return z, int(step.components_.shape[0])
    if isinstance(step, SimpleImputer):
        return _imputer(e, name, step, x, n_in)
    if isinstance(step, FunctionTransformer):
        fn = _UFUNCS.get(step.func)
        if fn is None or step.kw_args:
            raise refuse(name, step, f"func={getattr(step.func, '__name__', step.func)}")
        return fn(e, x), n_in
    if isinstance(step, Pipeline):
        for inner_name, inner in step.steps:
            x, n_in = emit(e, inner_name, inner, x, n_in)
        return x, n_in
    if isinstance(step, ColumnTransformer):
        pieces: list[str] = []
        width = 0
        for block, trans, idx in column_blocks(step):
            picked = e.op("Gather", [x, e.const("columns", idx, np.int64)], axis=1)
            out, n = emit(e, block, trans, picked, len(idx))
            pieces.append(out)
            width += n
        if not pieces:
            raise refuse(name, step, "it outputs no columns")
        return (e.op("Concat", pieces, axis=1) if len(pieces) > 1 else pieces[0]), width
    raise refuse(name, step)


def _imputer(e: Emitter, name: str, step: SimpleImputer, x: str, n_in: int) -> tuple[str, int]:
    missing = step.missing_values
    if not (isinstance(missing, float) and np.isnan(missing)) or step.add_indicator:
        raise refuse(name, step, "only missing_values=np.nan without add_indicator")
    try:
        stats = np.asarray(step.statistics_, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise refuse(name, step, "non-numeric fill values") from exc
    keep = np.flatnonzero(~np.isnan(stats)) if not step.keep_empty_features else np.arange(n_in)
    filled = e.op("Where", [e.op("IsNaN", [x]), e.const("fill", np.nan_to_num(stats)), x])
    if len(keep) == n_in:
        return filled, n_in
    # scikit-learn drops features that were all-missing in training
    return e.op("Gather", [filled, e.const("kept", keep, np.int64)], axis=1), len(keep)
