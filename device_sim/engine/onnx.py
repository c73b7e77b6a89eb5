"""The onnxruntime engine: providers in the EP plan's order, ORT-format files, fixed-batch
(NPU-friendly) artifacts run row by row."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from prometheus_client import CollectorRegistry

from device_sim.engine.base import EngineType, InferenceEngine, Prediction
from device_sim.engine.providers import resolve_providers
from device_sim.errors import ModelLoadError

log = logging.getLogger(__name__)


def _is_ort_format(data: bytes) -> bool:
    # ORT-format files are FlatBuffers with the file identifier "ORTM" at bytes 4..8.
    return len(data) >= 8 and data[4:8] == b"ORTM"


class OnnxEngine(InferenceEngine):
    engine_type = EngineType.ONNX

    def __init__(
        self,
        model: str | Path | bytes,
        *,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        profiling: bool | str | Path = False,
        feature_names: Sequence[str] | None = None,
        registry: CollectorRegistry | None = None,
        session: ort.InferenceSession | None = None,
    ) -> None:
        super().__init__(feature_names=feature_names, registry=registry)
        self.source = "<bytes>" if isinstance(model, bytes) else str(model)
        choice = resolve_providers(providers)
        self.requested_providers = choice.requested
        self.provider_fallback = choice.note
        if choice.note:
            log.warning("%s: %s", self.source, choice.note)
        self.session = session or self._load(model, choice.chosen, threads, profiling)
        self.providers: list[str] = list(self.session.get_providers())
        self.provider = self.providers[0]
        inp = self.session.get_inputs()[0]
        self._input_name = inp.name
        # The contract is float32 in; an fp16 graph that kept a float16 input is fed float16.
        self._input_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        shape = list(inp.shape)
        # An NPU-friendly artifact may fix the batch at 1: run it row by row.
        self.fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        self._n_features = shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None
        outs = [o.name for o in self.session.get_outputs()]
        self._label_out, self._score_out = _pick_outputs(outs, self.source)

    @staticmethod
    def _load(
        model: str | Path | bytes, providers: list[str], threads: int | None, profiling: bool | str | Path
    ) -> ort.InferenceSession:
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        if profiling:
            opts.enable_profiling = True
            if not isinstance(profiling, bool):
                opts.profile_file_prefix = str(profiling)
        where = "<bytes>" if isinstance(model, bytes) else str(model)
        try:
            data = model if isinstance(model, bytes) else Path(model).read_bytes()
        except OSError as exc:
            raise ModelLoadError(f"cannot read model {where}: {exc.strerror}") from None
        if _is_ort_format(data):
            opts.add_session_config_entry("session.load_model_format", "ORT")
        try:
            return ort.InferenceSession(data, sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped pybind errors
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(f"onnxruntime cannot load {where}: {first[:300]}") from None

    @property
    def n_features(self) -> int | None:
        return self._n_features

    def _run(self, x: np.ndarray) -> Prediction:
        names = [self._label_out, self._score_out]
        x = x.astype(self._input_dtype, copy=False)
        if self.fixed_batch == 1 and x.shape[0] != 1:
            labels = np.empty(x.shape[0], dtype=np.int64)
            scores = np.empty(x.shape[0], dtype=np.float32)
            for i in range(x.shape[0]):
                lab, sc = self.session.run(names, {self._input_name: x[i : i + 1]})
                labels[i] = np.asarray(lab).ravel()[0]
                scores[i] = np.asarray(sc, dtype=np.float32).ravel()[0]
            return Prediction(labels, scores)
        lab, sc = self.session.run(names, {self._input_name: x})
        return Prediction(
            np.asarray(lab).astype(np.int64, copy=False).ravel(),
            np.asarray(sc, dtype=np.float32).ravel(),
        )

    def end_profiling(self) -> str:
        """Stop profiling and return the JSON file onnxruntime wrote."""
        return str(self.session.end_profiling())


def _pick_outputs(outs: list[str], source: str) -> tuple[str, str]:
    if "label" in outs and "score" in outs:
        return "label", "score"
    # skl2onnx's own IsolationForest converter names them label / scores.
    if "label" in outs and "scores" in outs:
        return "label", "scores"
    if len(outs) >= 2:
        return outs[0], outs[1]
    raise ModelLoadError(f"{source}: expected outputs 'label' and 'score', found {outs}")
