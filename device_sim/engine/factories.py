"""Building engines: from a file and the environment's settings, or the whole fallback
chain for an installed bundle."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry

from device_sim import trust
from device_sim.engine.base import EngineType, InferenceEngine
from device_sim.engine.config import EngineConfig, load_config
from device_sim.engine.fallback import Candidate, FallbackEngine
from device_sim.engine.onnx import OnnxEngine
from device_sim.engine.reference import SklearnEngine
from device_sim.errors import EngineError
from packager.errors import UsageError
from packager.manifest import Artifact, ModelManifest

log = logging.getLogger(__name__)


def create_inference_engine(
    path: str | Path | bytes,
    engine_type: EngineType | str | None = None,
    providers: Sequence[str] | None = None,
    threads: int | None = None,
    *,
    profiling: bool | str | Path | None = None,
    feature_names: Sequence[str] | None = None,
    expected_sha256: str | None = None,
    registry: CollectorRegistry | None = None,
    config: EngineConfig | None = None,
) -> InferenceEngine:
    """The README's factory. Unset arguments come from the environment (engine.config)."""
    cfg = config or load_config()
    if engine_type is None:
        engine_type = EngineType.ONNX if cfg.use_onnx else EngineType.SKLEARN
    engine_type = EngineType(engine_type)
    if engine_type is EngineType.SKLEARN:
        if isinstance(path, bytes):
            raise EngineError("the scikit-learn engine loads from a file path")
        if Path(path).suffix.lower() in (".onnx", ".ort"):
            raise UsageError(
                f"ONNX_ENGINE=sklearn loads a scikit-learn model (.joblib/.pkl), not {Path(path).name}: "
                "unset ONNX_ENGINE (or set ONNX_ENGINE=onnx) to run an ONNX/ORT file"
            )
        return SklearnEngine(
            path, expected_sha256=expected_sha256, feature_names=feature_names, registry=registry
        )
    if providers is None and cfg.provider != "auto":
        providers = [cfg.provider]
    return OnnxEngine(
        path,
        providers=providers,
        threads=threads if threads is not None else (cfg.threads or None),
        profiling=cfg.profiling if profiling is None else profiling,
        feature_names=feature_names,
        registry=registry,
    )


def artifact_or_cpu(manifest: ModelManifest, target: str, quantize: bool = False) -> Artifact:
    """``trust.artifact_for_target``, or the cpu artifact when the bundle has none for
    ``target``: a bundle run on a workstation for a phone's target it was not built for.
    A device syncing never takes this path (check 3.6 refuses instead)."""
    art = (trust.artifact_for_target(manifest, target, quantize=quantize)
           or trust.artifact_for_target(manifest, "cpu", quantize=quantize))
    if art is None:
        raise EngineError(f"manifest {manifest.name} v{manifest.version} has no artifact for {target} or cpu")
    if quantize and art.precision != "int8":
        log.info("%s v%s: no int8 artifact for %s; using %s", manifest.name, manifest.version,
                 target, art.precision)
    return art


def engine_for_installed(manifest: ModelManifest, artifact_sha256: str, path: str | Path) -> InferenceEngine:
    """The engine of a verified artifact a device keeps (installed or held as a shadow): the
    manifest's artifact with that hash, its EP plan's providers, the manifest's feature order."""
    art = next(a for a in manifest.artifacts if a.sha256 == artifact_sha256)
    return create_inference_engine(path, EngineType.ONNX, art.ep_plan.providers,
                                   feature_names=[f.name for f in manifest.model.features])


def engine_for_bundle(
    manifest: ModelManifest,
    directory: str | Path,
    target: str,
    *,
    config: EngineConfig | None = None,
    registry: CollectorRegistry | None = None,
    previous: tuple[ModelManifest, str | Path] | None = None,
    with_reference: bool = True,
) -> FallbackEngine:
    """A FallbackEngine for an installed (already verified) manifest: its artifact for
    ``target`` with providers in the EP plan's order, then ``previous`` (manifest, dir),
    then the manifest's scikit-learn reference when the directory holds it."""
    cfg = config or load_config()
    names = [f.name for f in manifest.model.features]

    def onnx_candidate(m: ModelManifest, d: str | Path, label: str) -> Candidate:
        art = artifact_or_cpu(m, target, cfg.quantize)
        providers = [cfg.provider] if cfg.provider != "auto" else art.ep_plan.providers

        def load() -> InferenceEngine:
            return create_inference_engine(
                Path(d) / art.path, EngineType.ONNX, providers,
                feature_names=names, registry=registry, config=cfg,
            )

        return Candidate(f"{label} v{m.version} {art.target}/{art.precision}", load)

    cands: list[Candidate] = []
    if cfg.use_onnx:
        cands.append(onnx_candidate(manifest, directory, "new"))
        if previous is not None:
            cands.append(onnx_candidate(previous[0], previous[1], "previous"))
    ref = manifest.reference
    if with_reference and ref is not None and (Path(directory) / ref.path).exists():
        ref_path = Path(directory) / ref.path

        def load_ref() -> InferenceEngine:
            return SklearnEngine(ref_path, expected_sha256=ref.sha256, feature_names=names, registry=registry)

        cands.append(Candidate(f"reference v{manifest.version} sklearn", load_ref))
    return FallbackEngine(cands, registry=registry)
