"""Signed documents for tests, built from the schema's own pydantic classes
(packager.manifest), so a test document is valid by construction and follows the schema
when it changes. Tests that forge a bad document start from one of these and break it.

``artifact(target, data, ...)``  an ``Artifact`` entry for the bytes ``data``
``model_card(features, ...)``    a ``ModelCard`` with float32 input [N, features]
``manifest_signed(...)``         the ``signed`` part of a model manifest, as JSON-ready dict
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import onnx

from packager.manifest import (
    Artifact,
    EpPlan,
    Feature,
    GoldenTolerance,
    GoldenVectors,
    ModelCard,
    ModelManifest,
    Parity,
    Quantization,
    Reference,
    TensorSpec,
    format_time,
    sha256_hex,
    utcnow,
)

ORT_VERSION = "1.24.4"


def artifact(
    target: str,
    data: bytes,
    *,
    features: int,
    fmt: str = "ort",
    precision: str = "fp32",
    ort_version: str = ORT_VERSION,
    optimization_style: str | None = None,
    score_atol: float = 1e-4,
    max_label_mismatches: int = 0,
    parity_rows: int = 4,
    quantization_reason: str = "test model",
) -> Artifact:
    sha = sha256_hex(data)
    return Artifact.model_validate(
        {
            "target": target,
            "path": f"{sha}.{fmt}",
            "sha256": sha,
            "length": len(data),
            "format": fmt,
            "precision": precision,
            "ort_version": ort_version,
            "optimization_style": optimization_style or ("Fixed" if target == "cpu" else "Runtime"),
            "input_shape": [None, features],
            "quantization": Quantization(applied=False, reason=quantization_reason),
            "ep_plan": EpPlan(providers=["CPUExecutionProvider"], cpu_recommended=True, summary="cpu"),
            "parity": Parity(
                rows=parity_rows,
                label_agreement=1.0,
                max_abs_score_diff=0.0,
                mean_abs_score_diff=0.0,
                spearman=1.0,
            ),
            "golden_tolerance": GoldenTolerance(
                score_atol=score_atol, max_label_mismatches=max_label_mismatches
            ),
        }
    )


def model_card(features: int, *, family: str = "toy", with_label: bool = True) -> ModelCard:
    outputs = [TensorSpec(name="score", dtype="float32", shape=[None])]
    if with_label:
        outputs.insert(0, TensorSpec(name="label", dtype="int64", shape=[None]))
    return ModelCard(
        family=family,
        framework="onnx",
        framework_version=onnx.__version__,
        features=[Feature(name=f"f{i}") for i in range(features)],
        input=TensorSpec(name="X", dtype="float32", shape=[None, features]),
        outputs=outputs,
        threshold=0.0,
    )


def reference(data: bytes) -> Reference:
    sha = sha256_hex(data)
    return Reference(path=f"{sha}.joblib", sha256=sha, length=len(data))


def manifest_signed(
    name: str,
    version: int,
    card: ModelCard,
    artifacts: Sequence[Artifact],
    golden: tuple[Sequence[Sequence[float]], Sequence[int], Sequence[float]],
    *,
    ref: Reference | None = None,
) -> dict[str, Any]:
    inputs, labels, scores = golden
    doc = ModelManifest(
        name=name,
        version=version,
        created=format_time(utcnow()),
        model=card,
        artifacts=list(artifacts),
        reference=ref,
        golden=GoldenVectors(
            inputs=[list(map(float, row)) for row in inputs], label=list(labels), score=list(scores)
        ),
    )
    return doc.model_dump(mode="json", by_alias=True, exclude_none=True)
