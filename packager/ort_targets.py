"""ORT-format artifacts per target and the execution-provider plan that goes with each.

``to_ort`` does what ``onnxruntime.tools.convert_onnx_models_to_ort`` does for one file,
without its prints: an InferenceSession on the CPU provider optimises the graph and saves
it in ORT format. Optimisation style:

* ``Fixed`` (cpu): every optimisation applied now; the file is tuned for the CPU provider.
* ``Runtime`` (android-nnapi, ios-coreml): only optimisations every provider can take are
  applied; the others are saved and replayed on the device once it knows which nodes
  NNAPI or CoreML took (a fused CPU-only kernel would hide them from the NPU).

The EP plan comes from onnxruntime's mobile usability checker
(``onnxruntime.tools.mobile_helpers.usability_checker``), run the way its ``checker`` runs
it: first with the shapes as they are; if the provider is not a clear "yes" and the input
has a dynamic batch, again as if the shapes were fixed. When fixing the batch makes the
provider worth asking for, the artifact's input is fixed to ``[1, n_features]``
(``make_input_shape_fixed``) and the plan says so; otherwise the input stays dynamic and
the plan recommends the CPU provider plainly.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort

from packager.convert.outputs import INPUT
from packager.errors import PackagingError
from packager.manifest import EpPlan, ProviderPlan

STYLE_FOR_TARGET = {"android-nnapi": "Runtime", "ios-coreml": "Runtime", "cpu": "Fixed"}
PROVIDER_FOR_TARGET = {"android-nnapi": "NNAPIExecutionProvider", "ios-coreml": "CoreMLExecutionProvider"}
CPU = "CPUExecutionProvider"


@dataclass(frozen=True)
class OrtArtifact:
    path: Path
    ort_version: str
    optimization_style: str
    input_shape: list[int | None]
    ep_plan: EpPlan
    optimization_level: str = "all"


def _input_shape(model: onnx.ModelProto) -> list[int | None]:
    value = next(i for i in model.graph.input if i.name == INPUT)
    return [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]


def _fixed_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxruntime.tools.onnx_model_utils import fix_output_shapes, make_input_shape_fixed

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    n_features = _input_shape(model)[1]
    make_input_shape_fixed(fixed.graph, INPUT, [1, int(n_features or 0)])
    fix_output_shapes(fixed)
    return fixed


def _basic_optimized(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph after onnxruntime's basic optimisations (Identity elimination, constant
    folding...), which every ORT file gets: the checker's ``analyze_model`` looks at this."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    with tempfile.TemporaryDirectory() as tmp:
        so.optimized_model_filepath = str(Path(tmp) / "basic.onnx")
        ort.InferenceSession(model.SerializeToString(), sess_options=so, providers=[CPU])
        return onnx.load(so.optimized_model_filepath)


def _partitions(optimized: onnx.ModelProto, target: str) -> Any:
    from onnxruntime.tools.mobile_helpers import usability_checker as uc

    inferred = onnx.shape_inference.infer_shapes(optimized)
    if target == "android-nnapi":
        return uc.check_nnapi_partitions(inferred, require_fixed_input_sizes=True)
    return uc.check_coreml_partitions(inferred, True, "coreml_supported_mlprogram_ops.md")


def _provider_plan(info: Any, provider: str, fixed: bool) -> ProviderPlan:
    from onnxruntime.tools.mobile_helpers.usability_checker import PartitioningInfo

    suitability = info.suitability()
    unsupported = sorted(info.unsupported_ops)
    note = f"usability checker: {suitability.name}"
    note += " with the batch fixed to 1" if fixed else " with a dynamic batch"
    if unsupported:
        note += f"; unsupported ops: {', '.join(unsupported)}"
    return ProviderPlan(
        provider=provider,
        supported_nodes=int(info.num_supported_nodes),
        total_nodes=int(info.num_nodes),
        partitions=int(info.num_partitions),
        recommended=suitability == PartitioningInfo.TryWithEP.YES,
        note=note,
    )


def plan(model: onnx.ModelProto, target: str) -> tuple[EpPlan, bool]:
    """The EP plan for ``target`` and whether the artifact's batch should be fixed to 1."""
    if target == "cpu":
        return EpPlan(
            providers=[CPU],
            analysis=[],
            cpu_recommended=True,
            summary="CPU target: the CPU provider runs every node.",
        ), False
    from onnxruntime.tools.mobile_helpers.usability_checker import PartitioningInfo

    # The checker logs at INFO through the root logger when nothing is configured.
    logging.getLogger("usability_checker").setLevel(logging.WARNING)
    provider = PROVIDER_FOR_TARGET[target]
    # Optimised once (an ORT session per analysis is the slow part for big tree
    # ensembles). Fixing the batch afterwards can miss folds of Shape ops that a fixed
    # batch would allow; the contract's graphs reshape with constants, so none are lost.
    optimized = _basic_optimized(model)
    info = _partitions(optimized, target)
    fix = False
    dynamic = _input_shape(model)[0] is None
    if info.suitability() != PartitioningInfo.TryWithEP.YES and dynamic:
        fixed_info = _partitions(_fixed_batch(optimized), target)
        # Fixing the batch costs batched inference on every device, so only for a clear win.
        if fixed_info.suitability() == PartitioningInfo.TryWithEP.YES:
            info, fix = fixed_info, True
    p = _provider_plan(info, provider, fix)
    # "MAYBE" (e.g. the arithmetic around a tree ensemble, but not the trees) is not worth
    # a device copy per inference: only a clear "YES" puts the NPU first.
    useful = p.recommended
    pct = 100.0 * p.supported_nodes / max(p.total_nodes, 1)
    if useful:
        summary = (
            f"{provider} can run {p.supported_nodes}/{p.total_nodes} nodes ({pct:.0f}%) in "
            f"{p.partitions} partition(s); ask for it first, CPU takes the rest"
        )
        providers = [provider, CPU]
    else:
        summary = (
            f"{provider} would run {p.supported_nodes}/{p.total_nodes} nodes ({pct:.0f}%) in "
            f"{p.partitions} partition(s): copying between NPU and CPU would cost more than it "
            "saves, so the CPU provider is the honest choice"
        )
        providers = [CPU]
    return EpPlan(providers=providers, analysis=[p], cpu_recommended=not useful, summary=summary), fix


def to_ort(onnx_path: Path, ort_path: Path, target: str) -> OrtArtifact:
    """Convert one ONNX file to the ORT format for ``target``, with its EP plan."""
    model = onnx.load(onnx_path)
    ep_plan, fix = plan(model, target)
    src = onnx_path
    if fix:
        src = onnx_path.with_suffix(".fixed.onnx")
        fixed = _fixed_batch(model)
        onnx.save(fixed, src)
        model = fixed
    style = STYLE_FOR_TARGET[target]
    level = _save_ort(src, ort_path, style, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    if style == "Runtime" and not _loads(ort_path):
        # onnxruntime 1.24 cannot replay the QDQ runtime-optimisation records it saved at
        # the extended/all levels ("Not enough produced nodes in the runtime optimization
        # record", also with convert_onnx_models_to_ort). Basic level records none: the NPU
        # still gets the plain QDQ groups it wants, the CPU runs them unfused.
        level = _save_ort(src, ort_path, style, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
        if not _loads(ort_path):
            raise PackagingError(
                f"{target}: onnxruntime cannot load the ORT file it wrote for {onnx_path.name}"
            )
    return OrtArtifact(
        path=ort_path,
        ort_version=ort.__version__,
        optimization_style=style,
        input_shape=_input_shape(model),
        ep_plan=ep_plan,
        optimization_level=level,
    )


def _save_ort(src: Path, dst: Path, style: str, level: ort.GraphOptimizationLevel) -> str:
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.optimized_model_filepath = str(dst)
    so.add_session_config_entry("session.save_model_format", "ORT")
    if style == "Runtime":
        so.add_session_config_entry("optimization.minimal_build_optimizations", "save")
    # NCHWc layouts are x86-only: the converter leaves them out for mobile targets too.
    ort.InferenceSession(str(src), sess_options=so, providers=[CPU], disabled_optimizers=["NchwcTransformer"])
    return {ort.GraphOptimizationLevel.ORT_ENABLE_ALL: "all"}.get(level, "basic")


def _loads(path: Path) -> bool:
    """Does the file load the way a device loads it (default options, CPU provider)?"""
    try:
        ort.InferenceSession(str(path), providers=[CPU])
    except Exception:  # onnxruntime raises its own Fail/InvalidGraph/RuntimeException types
        return False
    return True
