"""The manifest's golden vectors scored by the service's own onnxruntime, through the
packager's runner (packager.runtime), beside the reference scores the manifest signs.

The release console's try-it panel shows these next to what onnxruntime-web computes in the
browser: three runtimes (scikit-learn at packaging time, onnxruntime here, wasm there)
checked against the one tolerance the manifest promises. Results are kept per artifact
(content-addressed, so they cannot go stale): a page view runs nothing twice."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from packager.manifest import Artifact, ModelManifest
from packager.runtime import load_session, run_session
from sync_service.errors import ArtifactNotRunnable
from sync_service.storage import Storage, blob_key

_KEPT = 64
_cache: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
_lock = threading.Lock()


def score_golden(storage: Storage, manifest: ModelManifest, artifact: Artifact) -> dict[str, Any]:
    key = (manifest.name, artifact.sha256)
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return {**_cache[key], "version": manifest.version}
    import onnxruntime as ort

    golden = manifest.golden
    try:
        session = load_session(storage.get(blob_key(artifact.sha256)))
        labels, scores = run_session(session, np.asarray(golden.inputs, dtype=np.float32))
    except Exception as exc:  # onnxruntime raises untyped pybind errors
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ArtifactNotRunnable(
            f"onnxruntime {ort.__version__} cannot run {manifest.name} v{manifest.version}'s "
            f"{artifact.target} artifact: {first[:200]}"
        ) from None
    rows = [
        {"reference_score": float(rs), "reference_label": int(rl), "python_score": float(ps),
         "python_label": int(pl)}
        for rs, rl, ps, pl in zip(golden.score, golden.label, scores, labels, strict=True)
    ]
    worst = max(abs(r["reference_score"] - r["python_score"]) for r in rows)
    flips = sum(r["reference_label"] != r["python_label"] for r in rows)
    tol = artifact.golden_tolerance
    result = {
        "name": manifest.name,
        "version": manifest.version,
        "target": artifact.target,
        "artifact_sha256": artifact.sha256,
        "input_name": session.get_inputs()[0].name,
        "input_shape": artifact.input_shape,
        "threshold": manifest.model.threshold,
        "tolerance": tol.model_dump(),
        "onnxruntime_version": str(ort.__version__),
        "inputs": golden.inputs,
        "rows": rows,
        "max_abs_diff": worst,
        "label_mismatches": flips,
        "within_tolerance": worst <= tol.score_atol and flips <= tol.max_label_mismatches,
    }
    with _lock:
        _cache[key] = result
        while len(_cache) > _KEPT:
            _cache.popitem(last=False)
    return result
