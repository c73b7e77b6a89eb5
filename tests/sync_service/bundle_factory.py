"""Real, signed bundles for the service's tests: a tiny ONNX model (so the artifact is a
file onnxruntime loads) and a manifest signed with packager.manifest.sign."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from onnx import TensorProto, helper, numpy_helper

from packager.manifest import sign
from tests import documents

FEATURES = 4


def tiny_onnx(seed: int, weights: int = FEATURES, flip: Sequence[int] = ()) -> bytes:
    """score = X · w (w from ``seed``, with entries in ``flip`` negated), padded by a constant
    initializer of ``weights`` floats so a test can make artifacts of a chosen size."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(FEATURES).astype(np.float32)
    pad = rng.standard_normal(weights).astype(np.float32)
    for i in flip:
        pad[i] = -pad[i]
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["X", "W"], ["s2"]),
            helper.make_node("Squeeze", ["s2", "axes"], ["score"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, FEATURES])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None])],
        initializer=[
            numpy_helper.from_array(w.reshape(FEATURES, 1), "W"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
            numpy_helper.from_array(pad, "pad"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def manifest_signed(
    name: str, version: int, files: dict[str, bytes], reference: bytes | None = None
) -> dict[str, Any]:
    """The ``signed`` part: ``files`` maps target → artifact bytes (ONNX, not ORT)."""
    arts = [
        documents.artifact(
            t, d, features=FEATURES, fmt="onnx", optimization_style="Fixed", score_atol=1e-5, parity_rows=8
        )
        for t, d in files.items()
    ]
    return documents.manifest_signed(
        name,
        version,
        documents.model_card(FEATURES, family="sklearn", with_label=False),
        arts,
        ([[0.0] * FEATURES], [1], [0.0]),
        ref=None if reference is None else documents.reference(reference),
    )


def write_bundle(
    dest: Path,
    signed: dict[str, Any],
    files: Iterable[bytes],
    keys: Sequence[Ed25519PrivateKey],
    reference: bytes | None = None,
) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "manifest.json").write_text(json.dumps(sign(signed, keys), indent=2), encoding="utf-8")
    for data in files:
        sha = hashlib.sha256(data).hexdigest()
        (dest / f"{sha}.onnx").write_bytes(data)
    if reference is not None:
        (dest / f"{hashlib.sha256(reference).hexdigest()}.joblib").write_bytes(reference)
    return dest


def make_bundle(
    dest: Path,
    keys: Sequence[Ed25519PrivateKey],
    *,
    name: str = "demo",
    version: int = 1,
    seed: int = 0,
    weights: int = FEATURES,
    flip: Sequence[int] = (),
    reference: bytes | None = None,
) -> Path:
    """A bundle with a cpu and an android-nnapi artifact (the same bytes: dedup)."""
    data = tiny_onnx(seed, weights, flip)
    signed = manifest_signed(name, version, {"cpu": data, "android-nnapi": data}, reference)
    return write_bundle(dest, signed, [data], keys, reference)


def tar_bytes(members: Iterable[tuple[str, bytes]], *, kind: bytes = tarfile.REGTYPE) -> bytes:
    """An uncompressed POSIX tar of ``(name, data)`` members, written as given (attacks too)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            info.type = kind
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return buf.getvalue()


def tar_dir(directory: Path) -> bytes:
    return tar_bytes((p.name, p.read_bytes()) for p in sorted(directory.iterdir()) if p.is_file())
