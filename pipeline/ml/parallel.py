"""Where the estimators' joblib work runs: loky processes here, or Dask workers. The only
module that imports ``distributed``.

scikit-learn parallelises through joblib: ``RandomForest*`` over its trees, ``*SearchCV`` and
``cross_val_score`` over candidates and folds. An estimator left at ``n_jobs=None`` takes
the backend and job count of the surrounding :func:`joblib.parallel_config`, which
:func:`backend` sets from ``train.parallel`` for the fit alone (scoring and the ONNX check
stay in this process).

The fitted model does not depend on the backend: each task's randomness is fixed before it
is dispatched (``random_state``) and joblib returns the results in order. Pickled with the
usual memo the bytes would still differ (which objects end up shared depends on how the
tasks were batched, which depends on timing), so :func:`training.write_model` pickles
without the memo; tests/integration/test_parallel.py proves model.pkl is byte-identical
under loky and under a two-worker Dask cluster.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import joblib

from pipeline.config import ParallelParams
from pipeline.console import quieted
from pipeline.errors import ClusterError

log = logging.getLogger("pipeline")

#: How long to wait for a scheduler to answer, and then for its first worker.
CONNECT_TIMEOUT_S = 10.0
WORKERS_TIMEOUT_S = 30.0
#: Packages that must have the same version on the workers as here: they build the model
#: (a tree fitted by another scikit-learn is another tree) or carry it back (pickle, cloudpickle).
MATCHED_PACKAGES = (
    "python", "scikit-learn", "scipy", "numpy", "joblib", "cloudpickle", "dask", "distributed"
)  # fmt: skip


@dataclass(frozen=True)
class Backend:
    """What a fit ran on, for the log and the MLflow run's tags."""

    name: str  # loky | dask
    workers: int  # loky processes, or Dask workers
    scheduler: str  # "local" (started for this run) or the scheduler's address

    def tags(self) -> dict[str, str]:
        return {
            "parallel.backend": self.name,
            "parallel.workers": str(self.workers),
            "parallel.scheduler": self.scheduler,
        }


@contextmanager
def backend(params: ParallelParams) -> Iterator[Backend]:
    """Inside the block, joblib work with ``n_jobs=None`` runs on ``train.parallel``'s backend.

    ``dask`` without an address starts a local cluster of processes (one thread each;
    ``n_jobs`` workers, or one per core) and closes it on the way out; with an address it
    connects to that scheduler and leaves it running."""
    if params.backend == "loky":
        workers = joblib.cpu_count() if params.n_jobs == -1 else params.n_jobs
        with joblib.parallel_config(backend="loky", n_jobs=params.n_jobs):
            yield Backend("loky", workers, "local")
        return
    if params.address is None:
        with _local_cluster(params) as used:
            yield used
    else:
        with _remote_cluster(params, params.address) as used:
            yield used


def _quiet() -> AbstractContextManager[None]:
    """The scheduler of a local cluster runs in this process and logs each connection at INFO
    level into the stage's log; only its warnings belong there."""
    return quieted("distributed", logging.WARNING)


@contextmanager
def _local_cluster(params: ParallelParams) -> Iterator[Backend]:
    from distributed import Client, LocalCluster

    workers = joblib.cpu_count() if params.n_jobs == -1 else params.n_jobs
    started = time.perf_counter()
    with (
        _quiet(),
        LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,  # no fixed port: two runs on one machine must not collide
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,  # type: ignore[no-untyped-call]
    ):
        log.info(
            "started a local Dask cluster of %d worker process(es) in %.1f s",
            workers,
            time.perf_counter() - started,
        )
        with joblib.parallel_config(backend="dask", n_jobs=params.n_jobs, client=client):
            yield Backend("dask", workers, "local")


@contextmanager
def _remote_cluster(params: ParallelParams, address: str) -> Iterator[Backend]:
    from distributed import Client

    where = f"the Dask scheduler at {address!r} (train.parallel.address)"
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError) as exc:
        raise ClusterError(
            f"cannot reach {where}: {exc}; start one (docs/distributed-training.md) or remove "
            "address to start a local cluster for the run"
        ) from None
    try:
        try:
            client.wait_for_workers(1, timeout=WORKERS_TIMEOUT_S)
        except TimeoutError:
            raise ClusterError(
                f"{where} has no worker after {WORKERS_TIMEOUT_S:.0f} s: start some "
                f"(`dask worker {address}`, see docs/distributed-training.md)"
            ) from None
        _check_versions(client, where)
        workers = len(client.scheduler_info(n_workers=-1)["workers"])
        log.info("connected to %s: %d worker(s)", where, workers)
        with joblib.parallel_config(backend="dask", n_jobs=params.n_jobs, client=client):
            yield Backend("dask", workers, address)
    finally:
        client.close()  # type: ignore[no-untyped-call]


def _check_versions(client: Any, where: str) -> None:
    """Workers must run this environment's versions (the training image holds the same lock)."""
    names = [p for p in MATCHED_PACKAGES if p != "python"]
    differences = version_differences(client.get_versions(packages=names))
    if differences:
        raise ClusterError(
            f"{where}: the workers' versions differ from this environment's: "
            f"{'; '.join(differences[:6])}; run the workers from the training image built from "
            "the same requirements/pipeline.lock (`make train-image`)"
        )


def version_differences(versions: dict[str, Any]) -> list[str]:
    """Each worker's package (of :data:`MATCHED_PACKAGES`) whose version is not the client's,
    from what ``Client.get_versions`` answers. Python need only agree on major.minor (pickles do
    not change within 3.11.x; the image's Debian Python is 3.11.2)."""
    here = versions["client"]["packages"]
    differences = []
    for address, worker in sorted(versions["workers"].items()):
        theirs = worker["packages"]
        for name in MATCHED_PACKAGES:
            mine, other = here.get(name), theirs.get(name)
            if name == "python" and mine and other:
                mine, other = ".".join(mine.split(".")[:2]), ".".join(other.split(".")[:2])
            if mine != other:
                differences.append(
                    f"{address} has {name} {theirs.get(name)}, here {here.get(name)}"
                )
    return differences
