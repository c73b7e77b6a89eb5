"""Execution providers: the names a manifest or ONNX_PROVIDER may use, and the fallback
from what is asked to what this onnxruntime build has (always ending with CPU)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import onnxruntime as ort

CPU = "CPUExecutionProvider"
# Short names (ONNX_PROVIDER) and the spellings a manifest may use -> onnxruntime's names.
PROVIDER_NAMES: dict[str, str] = {
    "cpu": CPU,
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "nnapi": "NnapiExecutionProvider",
    "cpuexecutionprovider": CPU,
    "cudaexecutionprovider": "CUDAExecutionProvider",
    "tensorrtexecutionprovider": "TensorrtExecutionProvider",
    "coremlexecutionprovider": "CoreMLExecutionProvider",
    "nnapiexecutionprovider": "NnapiExecutionProvider",
}


def canonical_provider(name: str) -> str:
    return PROVIDER_NAMES.get(name.strip().lower(), name.strip())


@dataclass(frozen=True)
class ProviderChoice:
    requested: list[str]
    chosen: list[str]
    missing: list[str]

    @property
    def note(self) -> str | None:
        if not self.missing:
            return None
        return (
            f"{', '.join(self.missing)} not in this onnxruntime build; "
            f"running on {', '.join(self.chosen)}"
        )


def resolve_providers(
    requested: Sequence[str] | None, available: Sequence[str] | None = None
) -> ProviderChoice:
    """Keep the requested order, drop what this build lacks, always end with CPU."""
    have = list(available if available is not None else ort.get_available_providers())
    wanted: list[str] = []
    for name in requested or [CPU]:
        canon = canonical_provider(name)
        if canon not in wanted:
            wanted.append(canon)
    chosen = [p for p in wanted if p in have]
    missing = [p for p in wanted if p not in have]
    if CPU not in chosen:
        chosen.append(CPU)
    return ProviderChoice(requested=wanted, chosen=chosen, missing=missing)
