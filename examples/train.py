"""Train a small anomaly detector the way a data scientist would, for docs/quickstart.md.

    python examples/train.py                        # telemetry.csv + model.joblib (seed 1)
    python examples/train.py --seed 2 --model model-v2.joblib

Writes ``telemetry.csv`` (synthetic device telemetry from modelsync's generator, standing
in for your own data; one column per feature, with a header) and a fitted scikit-learn
``IsolationForest`` saved with joblib: what ``modelsync package`` takes. The same seed
gives the same model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import joblib
from sklearn.ensemble import IsolationForest

from packager.telemetry import generate_telemetry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1, help="seeds the data and the forest (default 1)")
    parser.add_argument("--rows", type=int, default=4000, help="training rows (default 4000)")
    parser.add_argument("--trees", type=int, default=50, help="trees in the forest (default 50)")
    parser.add_argument("--model", type=Path, default=Path("model.joblib"), help="where to save the model")
    parser.add_argument("--csv", type=Path, default=Path("telemetry.csv"), help="where to write the rows")
    args = parser.parse_args(argv)

    data = generate_telemetry(args.rows, seed=args.seed)
    data.frame.to_csv(args.csv, index=False)
    forest = IsolationForest(n_estimators=args.trees, contamination="auto", random_state=args.seed)
    forest.fit(data.frame)  # a DataFrame: the model keeps the feature names, in order
    joblib.dump(forest, args.model)
    flagged = int((forest.predict(data.frame) == -1).sum())
    print(f"trained IsolationForest ({args.trees} trees) on {args.rows} rows x {data.frame.shape[1]} "
          f"features, {flagged} flagged; wrote {args.model} and {args.csv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
