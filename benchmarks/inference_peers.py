"""The engines a user would pick instead of a modelsync artifact, one function per peer.

Each ``*_engine`` returns ``(engine, None)`` — a callable from float32 rows to the
reference's ``decision_function`` (the score every engine is compared on) — or
``(None, reason)`` when the peer is not installed here or cannot take the model; the
benchmark prints the reason and goes on. Every engine runs on one thread.

Peers (pins in ``requirements-peers.txt``; install them into a separate venv, see README):

* hummingbird-ml: scikit-learn / LightGBM models compiled to PyTorch tensor programs
  (``torch.set_num_threads(1)``; CPU wheel);
* treelite 4 GTIL: treelite's own C++ tree interpreter (``nthread=1``);
* tl2cgen: the same treelite model compiled to a C shared library with gcc;
* lleaves: LightGBM models compiled with LLVM (llvmlite).
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Engine = Callable[[np.ndarray], np.ndarray]
Made = tuple[Engine | None, str | None]
_WORK = Path(tempfile.mkdtemp(prefix="modelsync-bench-peers-"))


def _missing(*modules: str) -> str | None:
    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    if absent:
        return f"not installed ({', '.join(absent)}); see benchmarks/requirements-peers.txt"
    return None


def split_pipeline(model: Any) -> tuple[Callable[[np.ndarray], np.ndarray], Any]:
    """(preprocessing as a numpy callable, final estimator): a tree library takes only the
    trees, so a user runs the scaler in numpy first (timed as part of the engine)."""
    steps = getattr(model, "steps", None)
    if not steps:
        return (lambda X: X), model
    head = steps[:-1]

    def transform(X: np.ndarray) -> np.ndarray:
        for _, step in head:
            X = step.transform(X)
        return np.asarray(X)

    return transform, steps[-1][1]


def _classifier_score(p_positive: np.ndarray, failure_index: int) -> np.ndarray:
    """P(other) - P(failure) for a binary classifier, from P(class 1)."""
    p1 = np.asarray(p_positive, dtype=np.float64).reshape(-1)
    return 1.0 - 2.0 * p1 if failure_index == 1 else 2.0 * p1 - 1.0


def hummingbird_engine(model: Any, kind: str, failure_index: int = 1) -> Made:
    reason = _missing("hummingbird", "torch")
    if reason:
        return None, reason
    import hummingbird.ml
    import torch

    torch.set_num_threads(1)
    try:
        compiled = hummingbird.ml.convert(model, "torch")
    except Exception as exc:  # hummingbird raises bare MissingConverter/RuntimeError
        return None, f"cannot convert {type(model).__name__}: {str(exc).splitlines()[0][:120]}"
    if kind == "iforest":
        return (lambda X: compiled.decision_function(X)), None
    return (lambda X: _classifier_score(compiled.predict_proba(X)[:, 1], failure_index)), None


def _treelite_model(model: Any, kind: str) -> Any:
    import treelite

    if kind == "iforest":
        return treelite.sklearn.import_model(model)
    return treelite.frontend.from_lightgbm(model.booster_)


def _from_raw(raw: np.ndarray, final: Any, kind: str, failure_index: int) -> np.ndarray:
    out = np.asarray(raw, dtype=np.float64).reshape(-1)
    if kind == "iforest":
        # treelite predicts -score_samples (2 ** -depth/c); decision = score_samples - offset_
        return -out - float(final.offset_)
    return _classifier_score(out, failure_index)


def treelite_gtil_engine(model: Any, kind: str, failure_index: int = 1) -> Made:
    reason = _missing("treelite")
    if reason:
        return None, reason
    import treelite

    pre, final = split_pipeline(model)
    try:
        tl = _treelite_model(final, kind)
    except Exception as exc:  # treelite raises its own TreeliteError and bare ones
        return None, f"treelite cannot import {type(final).__name__}: {str(exc).splitlines()[0][:120]}"
    return (
        lambda X: _from_raw(treelite.gtil.predict(tl, pre(X), nthread=1), final, kind, failure_index)
    ), None


def tl2cgen_engine(model: Any, kind: str, failure_index: int = 1) -> Made:
    reason = _missing("treelite", "tl2cgen")
    if reason:
        return None, reason
    import shutil

    if shutil.which("gcc") is None:
        return None, "tl2cgen needs gcc to compile the generated C"
    import tl2cgen

    pre, final = split_pipeline(model)
    try:
        tl = _treelite_model(final, kind)
        lib = _WORK / f"tl2cgen-{kind}-{id(final)}.so"
        tl2cgen.export_lib(tl, toolchain="gcc", libpath=str(lib), params={"parallel_comp": 8}, nthread=1)
        predictor = tl2cgen.Predictor(str(lib), nthread=1)
    except Exception as exc:  # compilation or loading failures of any kind
        return None, f"tl2cgen failed: {str(exc).splitlines()[0][:120]}"
    return (lambda X: _from_raw(predictor.predict(tl2cgen.DMatrix(pre(X))), final, kind, failure_index)), None


def lleaves_engine(model: Any, failure_index: int = 1) -> Made:
    reason = _missing("lleaves", "llvmlite")
    if reason:
        return None, reason
    import lleaves

    text = _WORK / f"lightgbm-{id(model)}.txt"
    model.booster_.save_model(str(text))
    compiled = lleaves.Model(model_file=str(text))
    compiled.compile(cache=str(text.with_suffix(".so")))
    return (
        lambda X: _classifier_score(
            compiled.predict(np.asarray(X, dtype=np.float64), n_jobs=1), failure_index
        )
    ), None
