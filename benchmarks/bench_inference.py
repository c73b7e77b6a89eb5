"""Inference latency: modelsync artifacts against scikit-learn, LightGBM and the peers.

One model per case, every engine timed on the same rows at each batch size, ONE thread
everywhere (scikit-learn n_jobs=1 and threadpoolctl, onnxruntime intra_op_num_threads=1,
torch.set_num_threads(1), treelite/tl2cgen nthread=1). The machine is shared, so engines
are timed *interleaved*: round after round, each engine gets a few calls in turn, and the
ratios are ratios of medians measured in the same run.

Cases
  pipeline          StandardScaler + IsolationForest(300): the issue-14 targets (ours >=
                    300x scikit-learn at batch 1, >= 10x at 100, >= 1.5x at 10,000)
  isolation_forest  bare IsolationForest(300): sklearn | skl2onnx default | ours
  lightgbm          binary LGBMClassifier(100 trees): lightgbm | onnxmltools' own graph |
                    ours | lleaves | treelite | tl2cgen | hummingbird
  autoencoder, pca  sklearn | ours fp32 | ours int8 | ours fp16 (CPU provider)
Peers (hummingbird, treelite GTIL, tl2cgen, lleaves) run where installed (see
requirements-peers.txt), each checked for agreement with the reference first; an absent
or disagreeing peer is skipped with the reason printed. Then sweeps (trees, depth,
features; ours vs sklearn) and where the artifact's time goes (onnxruntime's profiler).

    /work/venv-bench/bin/python benchmarks/bench_inference.py --out benchmarks/results

``--gpu`` adds the CUDA provider where onnxruntime has it and prints which nodes ran on
which provider; without CUDA it says so and times the CPU provider only.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import inference_peers as peers
import inference_report as report

Engine = Callable[[np.ndarray], object]
TARGETS = {1: 300.0, 100: 10.0, 10000: 1.5}  # issue 14, item 5: pipeline vs scikit-learn
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-sizes", default="1,100,1000,10000")
    p.add_argument("--n-estimators", type=int, default=300)
    p.add_argument("--lgbm-trees", type=int, default=100)
    p.add_argument("--rounds", type=int, default=15, help="interleaved rounds per batch size")
    p.add_argument("--budget", type=float, default=1.5, help="seconds per engine and batch size")
    p.add_argument("--train-rows", type=int, default=4000)
    p.add_argument("--cases", default="pipeline,isolation_forest,lightgbm,autoencoder,pca")
    p.add_argument("--sweeps", default="trees,depth,features", help="comma list, or 'none'")
    p.add_argument("--gpu", action="store_true", help="also run ours on the CUDA provider")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    return p.parse_args(argv)


def ort_session(model: Path | bytes, providers: list[str] | None = None, profile: str | None = None) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    if profile:
        so.enable_profiling = True
        so.profile_file_prefix = profile
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, so, providers=providers or [CPU])


def ort_engine(model: Path | bytes, providers: list[str] | None = None) -> Engine:
    session = ort_session(model, providers)
    name = session.get_inputs()[0].name
    return lambda X: session.run(None, {name: X})


def score_of(engine: Engine, X: np.ndarray) -> np.ndarray:
    out = engine(X)
    if isinstance(out, list):  # an artifact: [label, score]
        out = out[-1]
    return np.asarray(out, dtype=np.float64).reshape(-1)


def interleaved(
    engines: dict[str, Engine], X: np.ndarray, rounds: int, budget: float, every_round: int = 2
) -> dict[str, Any]:
    """Per engine: median, p95, mean ms per call over calls spread across ``rounds``.

    The first ``every_round`` engines (the reference and ours: the ratios that matter)
    get at least one call in every round; slower peers, whose single call exceeds their
    share of ``budget``, one call every second round, so a large batch stays affordable.
    """
    calls: dict[str, float] = {}
    for name, engine in engines.items():
        t0 = time.perf_counter()
        engine(X)  # warm-up: first-call allocations, lazy initialisation
        first = time.perf_counter() - t0
        calls[name] = min(400.0, budget / rounds / max(first, 1e-7))
    times: dict[str, list[float]] = {name: [] for name in engines}
    order = list(engines)
    must = set(order[:every_round])
    for r in range(rounds):
        for name in order[r % len(order) :] + order[: r % len(order)]:
            n = int(max(1, calls[name]))
            if calls[name] < 1 and name not in must and r % 2:
                continue
            engine = engines[name]
            for _ in range(n):
                t0 = time.perf_counter()
                engine(X)
                times[name].append(time.perf_counter() - t0)
    out = {}
    for name, ts in times.items():
        ms = np.asarray(ts) * 1e3
        out[name] = {
            "calls": int(ms.size),
            "p50_ms": float(np.median(ms)),
            "p95_ms": float(np.percentile(ms, 95)),
            "mean_ms": float(ms.mean()),
            "rows_per_s": float(X.shape[0] / np.median(ms) * 1e3),
        }
    return out


def agreement(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    return {
        "label_agreement": float(np.mean((ref < 0) == (got < 0))),
        "max_abs_score_diff": float(np.abs(ref - got).max()),
    }


def admit(
    engines: dict[str, Engine],
    name: str,
    made: tuple[Any, str | None],
    check: tuple[np.ndarray, np.ndarray],
    notes: dict[str, str],
    say: Callable[[str], None],
    tol: float = 1e-4,
) -> None:
    """Add a peer after checking it against the reference on the check rows."""
    engine, reason = made
    if engine is None:
        notes[name] = f"skipped: {reason}"
        say(f"  {name}: {notes[name]}")
        return
    X, ref = check
    agree = agreement(ref, score_of(engine, X))
    if agree["label_agreement"] < 0.999 or agree["max_abs_score_diff"] > tol:
        notes[name] = f"skipped: disagrees with the reference ({agree})"
        say(f"  {name}: {notes[name]}")
        return
    notes[name] = (
        f"agrees: labels {agree['label_agreement']:.4f}, max |score diff| {agree['max_abs_score_diff']:.2g}"
    )
    say(f"  {name}: {notes[name]}")
    engines[name] = engine


def cuda_available() -> bool:
    import onnxruntime as ort

    return CUDA in ort.get_available_providers()


def gpu_engines(
    path: Path, engines: dict[str, Engine], say: Callable[[str], None], X: np.ndarray
) -> dict[str, Any]:
    """Ours on [CUDA, CPU] and where each node ran (onnxruntime's profile)."""
    if not cuda_available():  # main() has said so once
        return {"cuda": False}
    placement = report.node_placement(ort_session, path, [CUDA, CPU], X)
    for node, provider in placement.items():
        say(f"  --gpu: {node} ran on {provider}")
    engines["ours fp32 (cuda)"] = ort_engine(path, [CUDA, CPU])
    return {"cuda": True, "placement": placement}


# ----------------------------------------------------------------------------- cases


def pipeline_model(train: np.ndarray, n_estimators: int) -> Any:
    from sklearn.ensemble import IsolationForest
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    forest = IsolationForest(n_estimators=n_estimators, contamination=0.05, random_state=0, n_jobs=1)
    return make_pipeline(StandardScaler(), forest).fit(train)


def hand_folded(pipe: Any, n: int) -> bytes:
    """The pipeline as one forest with the scaler folded into its thresholds by hand
    (x <= mean + scale * t): the graph packager.convert makes once it folds scalers,
    up to the last float32 step at a boundary (this is for timing only)."""
    from packager.convert.isolation_forest import (
        convert_isolation_forest,
        floor_float32,
        tree_ensemble_attributes,
    )

    scaler, forest = pipe.steps[0][1], pipe.steps[-1][1]
    attrs, _ = tree_ensemble_attributes(forest)
    feat = np.asarray(attrs["nodes_featureids"])
    branch = np.asarray(attrs["nodes_modes"]) != "LEAF"
    values = np.asarray(attrs["nodes_values"], dtype=np.float64)
    raw = np.where(branch, scaler.mean_[feat] + scaler.scale_[feat] * values, 0.0)
    attrs["nodes_values"] = floor_float32(raw).tolist()
    model = convert_isolation_forest(forest, n, attrs=attrs)
    return bytes(model.SerializeToString())


def folds_natively() -> bool:
    return importlib.util.find_spec("packager.convert.fold") is not None


def build_ours(model: Any, workdir: Path, calib: np.ndarray) -> tuple[Path, float, Any]:
    """The cpu artifact of ``pipeline.build`` for all three targets, and the build's seconds."""
    from packager.pipeline import build

    start = time.perf_counter()
    result = build(model, targets=["android-nnapi", "ios-coreml", "cpu"], workdir=workdir, calibration=calib)
    seconds = time.perf_counter() - start
    return result, seconds, {a.target: a for a in result.artifacts}


def case_engines(
    case: str, args: argparse.Namespace, workdir: Path, say: Callable[[str], None]
) -> dict[str, Any]:
    """Engines (reference first) of one case, with notes and build figures."""
    from threadpoolctl import threadpool_limits

    from packager.telemetry import generate_telemetry

    workdir.mkdir(parents=True, exist_ok=True)
    tel = generate_telemetry(args.train_rows, seed=0)
    train = tel.frame.to_numpy(np.float32)
    check = generate_telemetry(2000, seed=11).frame.to_numpy(np.float32)
    engines: dict[str, Engine] = {}
    notes: dict[str, str] = {}
    info: dict[str, Any] = {"notes": notes}
    n = train.shape[1]
    ours_path: Path | None = None
    if case == "pipeline":
        pipe = pipeline_model(train, args.n_estimators)
        engines["sklearn"] = pipe.decision_function
        if folds_natively():
            result, info["build_seconds"], by = build_ours(pipe, workdir, train)
            ours_path = by["cpu"].path
            notes["ours fp32"] = "packager.pipeline.build (scaler folded by packager.convert)"
        else:
            ours_path = workdir / "pipeline.hand-folded.onnx"
            ours_path.write_bytes(hand_folded(pipe, n))
            notes["ours fp32"] = (
                "scaler folded into the thresholds by hand (packager.convert.fold not present: "
                "to_onnx would take skl2onnx's per-tree path); same graph shape as the packager's"
            )
        engines["ours fp32"] = ort_engine(ours_path)
        kind, model, failure = "iforest", pipe, 1
    elif case == "isolation_forest":
        from packager.detectors import IsolationForestDetector

        det = IsolationForestDetector(n_estimators=args.n_estimators, contamination=0.05).fit(tel.frame)
        model, kind, failure = det.model_, "iforest", 1
        engines["sklearn"] = model.decision_function
        _, info["build_seconds"], by = build_ours(det, workdir, train)
        ours_path = by["cpu"].path
        engines["ours fp32"] = ort_engine(ours_path)
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType

        default = convert_sklearn(
            model, initial_types=[("X", FloatTensorType([None, n]))], target_opset={"": 17, "ai.onnx.ml": 3}
        )
        engines["skl2onnx default"] = ort_engine(default.SerializeToString())
    elif case == "lightgbm":
        import lightgbm as lgb

        from packager.convert import as_reference
        from packager.convert.external import finish_classifier, lightgbm_convert

        model = lgb.LGBMClassifier(n_estimators=args.lgbm_trees, n_jobs=1, verbose=-1, random_state=0)
        model.fit(train, tel.labels)
        ref = as_reference(model)
        kind, failure = "lightgbm", ref.failure_index
        engines["lightgbm"] = lambda X: _lgbm_score(model, X, failure)
        _, info["build_seconds"], by = build_ours(model, workdir, train)
        ours_path = by["cpu"].path
        engines["ours fp32"] = ort_engine(ours_path)
        own = ort_engine(lightgbm_convert(model, n).SerializeToString())
        engines["onnxmltools graph"] = lambda X: _two_class_score(own(X), failure)
        two = lightgbm_convert(model, n)
        two.producer_name = "two-class form"  # what finish_classifier made before the margin form
        notes["ours two-class"] = "the artifact's previous form: classifier + Gathers + ReduceMax + Sub"
        engines["ours two-class"] = ort_engine(finish_classifier(two, failure, 2).SerializeToString())
    else:
        from packager.detectors import AutoencoderDetector, PCADetector

        det = (AutoencoderDetector if case == "autoencoder" else PCADetector)(random_state=0).fit(tel.frame)
        engines["sklearn"] = det.decision_function
        result, info["build_seconds"], by = build_ours(det, workdir, train)
        cpu = by["cpu"]
        ours_path = cpu.path if cpu.precision == "fp32" else result.onnx_fp32
        engines["ours fp32"] = ort_engine(ours_path)
        if cpu.precision == "int8":
            engines["ours int8"] = ort_engine(cpu.path)
        if by["ios-coreml"].precision == "fp16":
            engines["ours fp16"] = ort_engine(workdir / "model.ios-coreml.fp16.onnx")
        kind = "none"
    reference = next(iter(engines.values()))
    with threadpool_limits(1):
        ref_scores = score_of(reference, check)
    for name in [k for k in engines if k != next(iter(engines))]:
        if name.startswith("ours") and name != "ours fp32":
            continue  # reduced precision: parity-gated by the build, not held to 1e-4
        agree = agreement(ref_scores, score_of(engines[name], check))
        notes.setdefault(name, "")
        notes[name] = (notes[name] + "; " if notes[name] else "") + (
            f"labels {agree['label_agreement']:.4f}, max |score diff| {agree['max_abs_score_diff']:.2g}"
        )
    if kind in ("iforest", "lightgbm"):
        say(f"{case}: checking peers against the reference")
        admit(
            engines,
            "hummingbird (torch)",
            peers.hummingbird_engine(model, kind, failure),
            (check, ref_scores),
            notes,
            say,
        )
        admit(
            engines,
            "treelite GTIL",
            peers.treelite_gtil_engine(model, kind, failure),
            (check, ref_scores),
            notes,
            say,
        )
        admit(
            engines,
            "tl2cgen (gcc)",
            peers.tl2cgen_engine(model, kind, failure),
            (check, ref_scores),
            notes,
            say,
        )
        if kind == "lightgbm":
            admit(engines, "lleaves", peers.lleaves_engine(model, failure), (check, ref_scores), notes, say)
    if args.gpu and ours_path is not None:
        info["gpu"] = gpu_engines(ours_path, engines, say, check[:1])
    info["engines"] = engines
    info["ours_path"] = ours_path
    return info


def _two_class_score(outputs: Any, failure: int) -> np.ndarray:
    p = np.asarray(outputs[1])
    return p[:, 1 - failure] - p[:, failure]


def _lgbm_score(model: Any, X: np.ndarray, failure: int) -> np.ndarray:
    p = model.predict_proba(X, num_threads=1)
    return np.asarray(p[:, 1 - failure] - p[:, failure])


# ----------------------------------------------------------------------------- sweeps


def sweep(kind: str, args: argparse.Namespace, say: Callable[[str], None]) -> list[dict[str, Any]]:
    """Ours vs sklearn for bare forests, one parameter varied, batch 1 and 1,000."""
    from sklearn.ensemble import IsolationForest

    from packager.convert import to_onnx

    grid = {
        "trees": [("n_estimators", v) for v in (25, 100, 300, 1000)],
        "depth": [("max_samples", v) for v in (64, 256, 1024, 4000)],
        "features": [("n_features", v) for v in (4, 12, 48)],
    }[kind]
    rng = np.random.default_rng(5)
    rows = []
    for param, value in grid:
        n_features = value if param == "n_features" else 12
        X = rng.normal(size=(4000, n_features)).astype(np.float32)
        params: dict[str, Any] = {"n_estimators": 100, "random_state": 0, "n_jobs": 1}
        if param != "n_features":
            params[param] = value
        forest = IsolationForest(**params).fit(X)
        ours = ort_engine(to_onnx(forest).onnx.SerializeToString())
        depth = int(max(e.tree_.max_depth for e in forest.estimators_))
        for batch in (1, 1000):
            Xb = np.ascontiguousarray(X[:batch])
            t = interleaved({"sklearn": forest.decision_function, "ours": ours}, Xb, 5, args.budget / 2)
            rows.append(
                {
                    "sweep": kind,
                    param: value,
                    "value": value,
                    "max_depth": depth,
                    "batch": batch,
                    "sklearn_ms": t["sklearn"]["p50_ms"],
                    "ours_ms": t["ours"]["p50_ms"],
                    "speedup": t["sklearn"]["p50_ms"] / t["ours"]["p50_ms"],
                }
            )
        say(f"sweep {kind}: {param}={value} done")
    return rows


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import onnxruntime
    import sklearn
    from threadpoolctl import threadpool_limits

    from packager.telemetry import generate_telemetry

    def say(msg: str) -> None:
        print(msg, flush=True)

    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    pool = generate_telemetry(max(batch_sizes), seed=7).frame.to_numpy(np.float32)
    rng = np.random.default_rng(42)
    results: dict[str, Any] = {
        "command": "python benchmarks/bench_inference.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} cores",
        "load_average_start": list(os.getloadavg()),
        "threads": 1,
        "versions": report.versions(),
        "onnxruntime": onnxruntime.__version__,
        "sklearn": sklearn.__version__,
        "n_estimators": args.n_estimators,
        "batch_sizes": batch_sizes,
        "rounds": args.rounds,
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cases": {},
    }
    if args.gpu and not cuda_available():
        say(
            f"--gpu: CUDA is not available (onnxruntime providers: {onnxruntime.get_available_providers()}); "
            "timing the CPU provider only"
        )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(1):
        for case in cases:
            say(f"{case}: training, building and checking engines")
            info = case_engines(case, args, Path(tmp) / case, say)
            engines = info.pop("engines")
            ours_path = info.pop("ours_path")
            timings = []
            for batch in batch_sizes:
                X = np.ascontiguousarray(pool[rng.permutation(pool.shape[0])[:batch]])
                for name, stats in interleaved(engines, X, args.rounds, args.budget).items():
                    timings.append({"engine": name, "batch": batch, **stats})
                say(f"{case}: batch {batch} timed")
            base = next(iter(engines))
            p50 = {(r["engine"], r["batch"]): r["p50_ms"] for r in timings}
            info["reference"] = base
            info["timings"] = timings
            info["speedups"] = {
                name: {str(b): p50[(base, b)] / p50[(name, b)] for b in batch_sizes}
                for name in engines
                if name != base
            }
            if ours_path is not None:
                info["where_time_goes"] = report.profile_nodes(ort_session, ours_path, pool, batch_sizes)
            results["cases"][case] = info
        sweeps = [s for s in args.sweeps.split(",") if s and s != "none"]
        results["sweeps"] = [row for s in sweeps for row in sweep(s, args, say)]
    results["seconds"] = time.perf_counter() - started
    results["load_average_end"] = list(os.getloadavg())
    results["targets"] = report.targets(results, TARGETS)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "inference.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "inference.md").write_text(report.markdown(results))
    report.plot(results, args.out / "inference.png")
    report.print_summary(results, say)
    say(f"wrote {args.out / 'inference.json'}, inference.md, inference.png in {results['seconds']:.0f} s")
    return 0 if all(t["met"] for t in results["targets"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
