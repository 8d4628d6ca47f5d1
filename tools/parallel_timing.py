"""Fit times of `train.parallel` backends: the figures in docs/distributed-training.md.

    python -m tools.parallel_timing                        # the built-in data's training rows
    python -m tools.parallel_timing --rows 1000000 --trees 20   # generated rows, a smaller forest

Fits params.yaml's random forest (whatever train.model says) with train.parallel set to each
backend in turn, on this machine: one job (joblib starts no worker), loky with ``--workers``
jobs, and a local Dask cluster of ``--workers`` processes.
It times the cluster's start and the fit apart (the train stage pays both) and checks that
every backend wrote the same model bytes. Run it from the project root on an idle machine:
the figures are only comparable within one run.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path
from typing import Literal

import joblib
import pandas as pd
from sklearn.datasets import make_classification

from pipeline.config import ParallelParams, Params, load_params
from pipeline.ml import data, parallel, training

#: (label, backend, jobs or None for --workers): one job first, what the parallel ones beat.
RUNS: tuple[tuple[str, Literal["loky", "dask"], int | None], ...] = (
    ("one job (no workers)", "loky", 1),
    ("loky", "loky", None),
    ("dask local cluster", "dask", None),
)


def table(params: Params, rows: int | None) -> tuple[pd.DataFrame, pd.Series, str]:
    """The train split of params.yaml's data, or ``rows`` generated rows with its columns."""
    frame = data.select_columns(data.load_raw(params.data), params.data)
    features, target = data.features_and_target(frame, params.data.target)
    if rows is None:
        task, _ = data.infer_task(target, params.train.task)
        split = data.split(frame, data=params.data, base=params.base, task=task)
        train_x, train_y = data.features_and_target(split.train, params.data.target)
        return train_x, train_y, f"{params.data.source} (train split)"
    x, y = make_classification(
        n_samples=rows,
        n_features=features.shape[1],
        n_informative=min(10, features.shape[1]),
        random_state=params.base.seed,
    )
    return pd.DataFrame(x, columns=features.columns), pd.Series(y), "make_classification"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=None, help="generate this many rows")
    parser.add_argument("--workers", type=int, default=2, help="jobs / Dask worker processes")
    parser.add_argument("--trees", type=int, default=None, help="n_estimators (default: params)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    params = load_params(args.params)
    forest = params.train.random_forest
    if args.trees is not None:
        forest = forest.model_copy(update={"n_estimators": args.trees})
    train = params.train.model_copy(update={"model": "random_forest", "random_forest": forest})
    features, target, source = table(params, args.rows)
    columns = training.columns_of(features)
    print(
        f"{source}: {len(features)} rows x {features.shape[1]} columns; random_forest "
        f"{dict(train.random_forest)}; {args.workers} jobs; {joblib.cpu_count()} cores"
    )
    print("| backend | start (s) | fit (s) | model sha256 |")
    print("|---|---|---|---|")
    digests = set()
    for label, name, jobs in RUNS:
        entered = time.perf_counter()
        with parallel.backend(ParallelParams(backend=name, n_jobs=jobs or args.workers)):
            started = time.perf_counter()
            model = training.build(train, seed=params.base.seed, task="classification",
                                   columns=columns)  # fmt: skip
            training.fit(model, features, target, task="classification")
            fitted = time.perf_counter()
        digest = hashlib.sha256(training.model_bytes(model)).hexdigest()
        digests.add(digest)
        print(f"| {label} | {started - entered:.1f} | {fitted - started:.1f} | {digest[:12]} |")
    print("same model bytes on every backend" if len(digests) == 1 else "MODELS DIFFER")


if __name__ == "__main__":
    main()
