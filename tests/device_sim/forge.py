"""Documents and artifacts for the device's tests, forged with test keys.

The honest path signs with the right keys; the attack tests use the same helpers with the
wrong ones. Artifacts are tiny real ORT-format models (a weighted sum and a threshold), so
golden vectors run through a real onnxruntime session.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from onnx import TensorProto, helper

from packager.keys import build_root_signed
from packager.manifest import expiry_in, sign
from tests import documents

FEATURES = 3
GOLDEN_X = [[0.1, 0.2, 0.3], [1.0, -2.0, 0.5], [-1.0, -1.0, -1.0], [2.0, 0.0, 0.0]]


@dataclass
class Keys:
    root: list[Ed25519PrivateKey] = field(default_factory=lambda: [Ed25519PrivateKey.generate()])
    publisher: list[Ed25519PrivateKey] = field(default_factory=lambda: [Ed25519PrivateKey.generate()])
    index: list[Ed25519PrivateKey] = field(default_factory=lambda: [Ed25519PrivateKey.generate()])
    thresholds: dict[str, int] = field(default_factory=lambda: {"root": 1, "publisher": 1, "index": 1})


def root_doc(
    keys: Keys, version: int = 1, lifetime: timedelta = timedelta(days=365), signers: list[Any] | None = None
) -> dict[str, Any]:
    signed = build_root_signed(
        version,
        {"root": [k.public_key() for k in keys.root], "publisher": [k.public_key() for k in keys.publisher],
         "index": [k.public_key() for k in keys.index]},
        keys.thresholds,
        lifetime,
    )
    return sign(signed, keys.root if signers is None else signers)


@lru_cache(maxsize=16)
def ort_model(weight: float = 1.0, bias: float = 0.0) -> bytes:
    """A tiny anomaly 'detector' in ORT format: score = weight*sum(x) + bias, label -1 if score < 0."""
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, FEATURES])
    label = helper.make_tensor_value_info("label", TensorProto.INT64, [None])
    score = helper.make_tensor_value_info("score", TensorProto.FLOAT, [None])
    inits = [
        helper.make_tensor("w", TensorProto.FLOAT, [FEATURES, 1], [weight] * FEATURES),
        helper.make_tensor("b", TensorProto.FLOAT, [1], [bias]),
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("neg", TensorProto.INT64, [], [-1]),
        helper.make_tensor("pos", TensorProto.INT64, [], [1]),
        helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
    ]
    nodes = [
        helper.make_node("MatMul", ["X", "w"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["s2"]),
        helper.make_node("Squeeze", ["s2", "axes"], ["score"]),
        helper.make_node("Less", ["score", "zero"], ["is_anom"]),
        helper.make_node("Where", ["is_anom", "neg", "pos"], ["label"]),
    ]
    graph = helper.make_graph(nodes, "tiny", [x], [label, score], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d) / "m.onnx", Path(d) / "m.ort"
        onnx.save(model, str(src))
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        so.optimized_model_filepath = str(dst)
        so.add_session_config_entry("session.save_model_format", "ORT")
        ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
        return dst.read_bytes()


def run_model(data: bytes, rows: list[list[float]]) -> tuple[list[int], list[float]]:
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    label, score = sess.run(["label", "score"], {"X": np.asarray(rows, dtype=np.float32)})
    return [int(v) for v in label], [float(v) for v in score]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest_doc(
    keys: Keys,
    name: str,
    version: int,
    artifacts: dict[str, bytes],
    *,
    ort_version: str = "1.24.4",
    golden_from: bytes | None = None,
    score_atol: float = 1e-4,
    signers: list[Any] | None = None,
    behaviour: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A signed manifest with one artifact per target; golden vectors from ``golden_from``
    (default: the first artifact), so they match unless a test says otherwise; ``behaviour``
    is signed as the manifest's behaviour profile."""
    first = next(iter(artifacts.values()))
    labels, scores = run_model(golden_from or first, GOLDEN_X)
    arts = [
        documents.artifact(
            target, data, features=FEATURES, ort_version=ort_version, score_atol=score_atol,
            quantization_reason="tree-free toy",
        )
        for target, data in artifacts.items()
    ]
    signed = documents.manifest_signed(
        name, version, documents.model_card(FEATURES), arts, (GOLDEN_X, labels, scores)
    )
    if behaviour is not None:
        signed["behaviour"] = behaviour
    return sign(signed, keys.publisher if signers is None else signers)


def doc_bytes(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, indent=1).encode()


def entry(name: str, version: int, manifest: bytes, *, percent: float = 100.0, urgent: bool = False,
          salt: str = "s1") -> dict[str, Any]:
    return {"model": name, "version": version,
            "manifest": {"path": f"blobs/{sha(manifest)}", "length": len(manifest), "sha256": sha(manifest)},
            "rollout": {"percent": percent, "salt": salt}, "urgent": urgent}


def index_doc(
    keys: Keys, entries: list[dict[str, Any]], *, version: int = 1, fleet: str = "f1",
    channel: str = "stable", lifetime: timedelta = timedelta(days=3), signers: list[Any] | None = None,
) -> dict[str, Any]:
    models: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        models.setdefault(e["model"], []).append(e)
    signed = {"_type": "channel-index", "spec_version": "1.0", "fleet": fleet, "channel": channel,
              "version": version, "expires": expiry_in(lifetime), "models": models}
    return sign(signed, keys.index if signers is None else signers)
