"""train.parallel on real clusters: a random forest fitted on two Dask worker processes is the
model loky fits, down to the bytes of model.pkl; a scheduler given by address is used as is.

No stand-ins: `distributed` starts real scheduler and worker processes on loopback.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from typing import Any

import distributed
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import GridSearchCV

from pipeline.config import ParallelParams, TrainParams
from pipeline.errors import ClusterError
from pipeline.ml import parallel, training

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEED = 42
FOREST = TrainParams.model_validate(
    {
        "model": "random_forest",
        "experiment": "parallel",
        "registered_model_name": "parallel",
        "random_forest": {"n_estimators": 200, "max_depth": 8},
    }
)


@pytest.fixture(scope="module")
def table() -> tuple[pd.DataFrame, pd.Series]:
    features, target = load_breast_cancer(return_X_y=True, as_frame=True)
    return features, target


def _fit(table: tuple[pd.DataFrame, pd.Series]) -> Any:
    features, target = table
    columns = training.columns_of(features)
    model = training.build(FOREST, seed=SEED, task="classification", columns=columns)
    return training.fit(model, features, target, task="classification")


def _digest(model: Any) -> str:
    return hashlib.sha256(training.model_bytes(model)).hexdigest()


@pytest.fixture(scope="module")
def on_loky(table: tuple[pd.DataFrame, pd.Series]) -> Any:
    with parallel.backend(ParallelParams(backend="loky", n_jobs=2)) as used:
        assert used == parallel.Backend("loky", 2, "local")
        return _fit(table)


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """A scheduler and two workers started apart from the code under test, as `dask
    scheduler` and `dask worker` would be: train.parallel.address points at it."""
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        yield cluster.scheduler_address


def test_a_forest_fitted_on_a_two_worker_dask_cluster_is_the_one_loky_fits(
    table: tuple[pd.DataFrame, pd.Series], on_loky: Any
) -> None:
    with parallel.backend(ParallelParams(backend="dask", n_jobs=2)) as used:
        assert used == parallel.Backend("dask", 2, "local")
        with distributed.get_task_stream() as tasks:
            on_dask = _fit(table)
    # The trees were built by the cluster's worker processes, not here.
    assert tasks.data and all("_parallel_build_trees" in str(t["key"]) for t in tasks.data)
    assert len({t["worker"] for t in tasks.data}) == 2
    features = training.model_input(table[0])
    assert np.array_equal(on_dask.predict_proba(features), on_loky.predict_proba(features))
    assert _digest(on_dask) == _digest(on_loky)


def test_the_model_does_not_depend_on_parallelism_at_all(
    table: tuple[pd.DataFrame, pd.Series], on_loky: Any
) -> None:
    with parallel.backend(ParallelParams(backend="loky", n_jobs=1)):
        alone = _fit(table)
    assert _digest(alone) == _digest(on_loky)


def test_an_address_uses_that_scheduler_and_its_workers(
    table: tuple[pd.DataFrame, pd.Series], on_loky: Any, scheduler: str
) -> None:
    params = ParallelParams(backend="dask", address=scheduler)
    with parallel.backend(params) as used:
        assert used == parallel.Backend("dask", 2, scheduler)
        on_remote = _fit(table)
    assert _digest(on_remote) == _digest(on_loky)
    # The scheduler is someone else's: it still serves after the run.
    with distributed.Client(scheduler, timeout=10) as client:
        assert client.submit(sum, [1, 2]).result(timeout=10) == 3


def test_an_address_nobody_listens_on_is_one_error_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(parallel, "CONNECT_TIMEOUT_S", 1.0)
    address = "tcp://127.0.0.1:9"  # discard: nothing listens there
    with (
        pytest.raises(
            ClusterError, match=re.escape(f"cannot reach the Dask scheduler at {address!r}")
        ),
        parallel.backend(ParallelParams(backend="dask", address=address)),
    ):
        pytest.fail("the block ran without a scheduler")


def test_a_cross_validated_search_on_a_scheduler_finds_and_fits_what_loky_does(
    table: tuple[pd.DataFrame, pd.Series], scheduler: str
) -> None:
    """A custom factory's search left at n_jobs=None runs its candidates x folds on the
    backend. Its cv_results_ hold fit times, so only the rest is compared."""

    def search() -> Any:
        forest = RandomForestClassifier(n_estimators=10, random_state=SEED)
        grid = {"max_depth": [2, 4], "min_samples_leaf": [1, 5]}
        return GridSearchCV(forest, grid, cv=3).fit(*table)

    with parallel.backend(ParallelParams(backend="loky", n_jobs=2)):
        on_loky = search()
    with (
        distributed.Client(scheduler, timeout=10) as watcher,
        distributed.get_task_stream(client=watcher) as tasks,  # every client's tasks
        parallel.backend(ParallelParams(backend="dask", address=scheduler)),
    ):
        on_dask = search()
    assert any("fit_and_score" in str(t["key"]) for t in tasks.data)
    assert on_dask.best_params_ == on_loky.best_params_
    assert _digest(on_dask.best_estimator_) == _digest(on_loky.best_estimator_)
    scores = [k for k in on_loky.cv_results_ if "time" not in k]
    for key in scores:
        assert np.array_equal(on_dask.cv_results_[key], on_loky.cv_results_[key]), key
