"""Write a trained detector to disk as the files a data scientist hands on: its pickle,
its ONNX graph and, where the graph has weights to quantize, an INT8 variant.

This lives apart from packager.detectors so that the detectors import no converter: the
converters (packager.convert) import the detectors to recognise them, never the reverse.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import onnx

from packager.convert import to_onnx
from packager.quantize import quantizable, quantize_dynamic_int8


def save_model(model: Any, path: str | Path, export_onnx: bool = True) -> dict[str, Path]:
    """Write ``<path>.joblib``, ``<path>.onnx`` and, for detectors with weights to
    quantize (autoencoder, PCA), ``<path>.int8.onnx`` (INT8 dynamic; the parity gate
    runs when ``packager.pipeline.build`` packages it); return the paths written."""
    base = Path(path)
    base = base.with_suffix("") if base.suffix in {".joblib", ".onnx", ".pkl"} else base
    base.parent.mkdir(parents=True, exist_ok=True)

    def beside(suffix: str) -> Path:  # "model.v2" + ".onnx", not "model.onnx"
        return base.parent / f"{base.name}{suffix}"

    written: dict[str, Path] = {"sklearn": beside(".joblib")}
    joblib.dump(model, written["sklearn"])
    if export_onnx:
        graph = to_onnx(model).onnx
        written["onnx"] = beside(".onnx")
        onnx.save(graph, written["onnx"])
        if quantizable(graph):
            written["onnx_quantized"] = beside(".int8.onnx")
            quantize_dynamic_int8(written["onnx"], written["onnx_quantized"])
    return written
