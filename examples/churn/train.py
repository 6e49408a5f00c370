"""Train the example churn model: a tiny, deterministic scikit-learn classifier on generated data.

    python train.py                      # writes model.pkl beside this file
    python train.py --out DIR            # writes DIR/model.pkl
    python train.py --seed 1             # a different (still deterministic) model version
    MLFLOW_TRACKING_URI=http://127.0.0.1:5000 python train.py --register churn
                                         # also logs the model to MLflow and registers a version

Features per customer, in this order: tenure_months, monthly_charges, support_calls,
month_to_month (1 if on a monthly contract). The label is 1 when the customer churned.
"""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

FEATURES = ["tenure_months", "monthly_charges", "support_calls", "month_to_month"]
HERE = Path(__file__).resolve().parent


def make_data(seed: int = 0, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(seed)
    tenure = rng.randint(1, 72, n)
    charges = rng.uniform(20, 120, n).round(2)
    calls = rng.poisson(1.5, n)
    monthly = rng.randint(0, 2, n)
    logit = -1.0 - 0.05 * tenure + 0.02 * charges + 0.6 * calls + 1.2 * monthly
    churned = (rng.uniform(0, 1, n) < 1 / (1 + np.exp(-logit))).astype(int)
    return np.column_stack([tenure, charges, calls, monthly]).astype(float), churned


def train(seed: int = 0) -> LogisticRegression:
    X, y = make_data(seed)
    return LogisticRegression(max_iter=1000).fit(X, y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE, help="folder for model.pkl (default: beside train.py)")
    parser.add_argument("--seed", type=int, default=0, help="data seed; another seed gives another model version")
    parser.add_argument("--register", metavar="NAME", help="log to MLflow (MLFLOW_TRACKING_URI) and register as NAME")
    args = parser.parse_args()

    model = train(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "model.pkl"
    with open(path, "wb") as f:
        pickle.dump(model, f, protocol=4)
    print(json.dumps({"model": str(path), "seed": args.seed, "accuracy": round(model.score(*make_data(args.seed)), 4)}))

    if args.register:
        import mlflow
        import mlflow.sklearn

        sample = make_data(args.seed, n=3)[0]
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(
                model, name="model", input_example=sample, registered_model_name=args.register,
                serialization_format="pickle",  # model.pkl, which score.py loads (MLflow's default is skops)
            )
        print(json.dumps({"registered": args.register, "model_uri": info.model_uri}))


if __name__ == "__main__":
    main()
