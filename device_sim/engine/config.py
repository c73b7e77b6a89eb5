"""Engine settings from the environment, the variables the original README documents.

    ONNX_ENABLED    true|false  false forces the scikit-learn engine (ONNX off)
    ONNX_ENGINE     onnx|sklearn
    ONNX_PROVIDER   auto|cpu|cuda|tensorrt|coreml|nnapi   auto: the manifest's EP plan order
    ONNX_THREADS    intra-op threads, 0 = onnxruntime's default
    ONNX_QUANTIZE   true: run the int8 artifact where the manifest has one
    ONNX_PROFILING  true: onnxruntime writes a profile JSON (see engine.end_profiling())
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ProviderChoice = Literal["auto", "cpu", "cuda", "tensorrt", "coreml", "nnapi"]


class EngineConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ONNX_", case_sensitive=False, extra="ignore")

    enabled: bool = True
    engine: Literal["onnx", "sklearn"] = "onnx"
    provider: ProviderChoice = "auto"
    threads: int = Field(0, ge=0, le=256)
    quantize: bool = False
    profiling: bool = False

    @property
    def use_onnx(self) -> bool:
        return self.enabled and self.engine == "onnx"


def load_config() -> EngineConfig:
    """Read the environment now; a bad value is a one-line UsageError, not a traceback."""
    from pydantic import ValidationError

    from packager.errors import UsageError

    try:
        return EngineConfig()
    except ValidationError as exc:
        err = exc.errors()[0]
        name = "ONNX_" + str(err["loc"][0]).upper() if err["loc"] else "ONNX_*"
        raise UsageError(f"{name}: {err['msg']} (got {err.get('input')!r})") from None
