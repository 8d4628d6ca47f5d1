"""MLflow: runs, the model registry and aliases. The only module that imports mlflow.

Default store: SQLite (`sqlite:///mlflow.db`) with artifacts in `mlartifacts/`, no server.
`MLFLOW_TRACKING_URI` points everything at a server instead.

The release commands' four registry calls (a version's run and aliases, an alias's version, move
and delete an alias) read and write a local SQLite store directly when it is at the schema
revision the pinned MLflow writes (:data:`MLFLOW_SCHEMA`): importing MLflow and opening its
SQLAlchemy store costs about 3.3 s of a promotion whose own work takes milliseconds. Any other
store (a server, another database, another schema revision, workspaces on) goes through MLflow.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import Settings
from pipeline.console import quieted
from pipeline.errors import TrackingError, redact_text
from pipeline.errors import redact as redact  # the stages log the store's URI through it

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class RegisteredModel:
    run_id: str
    name: str
    version: str


def _quiet() -> AbstractContextManager[None]:
    """MLflow logs a store error with its traceback before raising it; the release commands
    turn it into one TrackingError line, so its own log stays silent meanwhile."""
    return quieted("mlflow", logging.CRITICAL)


def _mlflow() -> Any:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    return mlflow


def connect(settings: Settings, *, experiment: str) -> None:
    """Point MLflow at the store and make sure the experiment exists."""
    mlflow = _mlflow()
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    try:
        if mlflow.get_experiment_by_name(experiment) is None:
            location = None
            if settings.mlflow_tracking_uri.startswith(("sqlite:", "file:")) or "://" not in (
                settings.mlflow_tracking_uri
            ):
                settings.mlflow_artifacts_dir.mkdir(parents=True, exist_ok=True)
                location = settings.mlflow_artifacts_dir.resolve().as_uri()
            mlflow.create_experiment(experiment, artifact_location=location)
        mlflow.set_experiment(experiment)
    except Exception as exc:  # MLflow raises MlflowException, requests and SQLAlchemy errors
        raise TrackingError(
            f"MLflow store {redact(settings.mlflow_tracking_uri)!r} is not usable: "
            f"{redact_text(str(exc))}. "
            "Check MLFLOW_TRACKING_URI (unset it to use the local SQLite store)."
        ) from None


def log_training(
    *,
    model: Any,
    registered_name: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    tags: dict[str, str],
    train_frame: pd.DataFrame,
    target: str,
    input_example: pd.DataFrame,
    pip_requirements: list[str],
    parent_run_id: str | None = None,
) -> RegisteredModel:
    """One run: params, metrics, dataset, provenance tags, the model, and a new registry version.

    ``parent_run_id`` (a sweep trial): the run is a child of that one (tag
    ``mlflow.parentRunId``), and the version carries the tag ``sweep.parent_run_id``."""
    mlflow = _mlflow()
    from mlflow.models import infer_signature

    with (
        mlflow.start_run(parent_run_id=parent_run_id, nested=parent_run_id is not None) as run,
        warnings.catch_warnings(),
    ):
        # MLflow hints that integer label columns cannot hold NaN: true, and not our case.
        warnings.filterwarnings("ignore", category=UserWarning, module="mlflow")
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        mlflow.set_tags(tags)
        dataset = mlflow.data.from_pandas(train_frame, targets=target, name="train")
        _log_input(mlflow, dataset)
        signature = infer_signature(input_example, model.predict(input_example))
        import skops.io

        # MLflow stores sklearn models with skops, which loads only listed types: list the ones
        # this freshly fitted model uses (numpy dtypes and the like), nothing else.
        trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=signature,
            input_example=input_example,
            registered_model_name=registered_name,
            pip_requirements=pip_requirements,
            skops_trusted_types=trusted,
        )
    version = info.registered_model_version
    if version is None:
        raise TrackingError(f"MLflow did not register a version of {registered_name!r}")
    if parent_run_id is not None:
        mlflow.MlflowClient().set_model_version_tag(
            registered_name, str(version), "sweep.parent_run_id", parent_run_id
        )
    return RegisteredModel(run_id=run.info.run_id, name=registered_name, version=str(version))


def _log_input(mlflow: Any, dataset: Any) -> None:
    """``mlflow.log_input`` for the training context, safe against a concurrent run.

    MLflow's SQL store looks the dataset up and inserts it when missing, in two steps: two runs
    logging the same data at once (`pipeline sweep --jobs 2`) can both miss it, and the second
    insert fails on the store's unique key. The failed write was rolled back, and by then the
    row exists, so the one retry links this run to it."""
    from mlflow.exceptions import MlflowException

    try:
        mlflow.log_input(dataset, context="training")
    except MlflowException as exc:
        message = str(exc).lower()
        if "datasets" not in message or not ("unique" in message or "duplicate" in message):
            raise
        mlflow.log_input(dataset, context="training")


def log_evaluation(*, run_id: str, metrics: dict[str, float], files: list[Path]) -> None:
    mlflow = _mlflow()
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({f"holdout_{k}": v for k, v in metrics.items()})
        for file in files:
            mlflow.log_artifact(str(file), artifact_path="validation")


def champion(name: str, *, alias: str) -> tuple[str, Any] | None:
    """(version, loaded sklearn model) of the version holding `alias`, or None if none does."""
    mlflow = _mlflow()
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    model = mlflow.sklearn.load_model(f"models:/{name}@{alias}")
    return str(version.version), model


@dataclass(frozen=True)
class VersionState:
    run_id: str
    aliases: list[str]


def version_state(settings: Settings, *, name: str, version: str) -> VersionState:
    """Run id and aliases of a registered version; TrackingError if the store or it is missing.

    The release flow reads this before it changes anything, so a promotion of an image whose
    model the store does not know stops with the registry and deploy/ untouched.
    """
    missing = (
        f"MLflow store {redact(settings.mlflow_tracking_uri)!r} has no version {version} of "
        f"model {name!r} ({{}}): point MLFLOW_TRACKING_URI at the store that trained it"
    )
    with _direct(settings, alias=None) as db:
        if db is not None:
            row = _live_version(db, name, version)
            if row is None:
                raise TrackingError(
                    missing.format(f"Model Version (name={name}, version={version}) not found")
                )
            aliases = db.execute(
                "SELECT alias FROM registered_model_aliases WHERE workspace = ? AND name = ? "
                "AND version = ?",
                (_WORKSPACE, name, int(version)),
            ).fetchall()
            return VersionState(run_id=str(row[0]), aliases=[a for (a,) in aliases])
    mlflow = _mlflow()

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    try:
        with _quiet():
            found = mlflow.MlflowClient().get_model_version(name, version)
    except Exception as exc:  # MlflowException, and requests/SQLAlchemy errors from the store
        raise TrackingError(missing.format(_first(exc))) from None
    return VersionState(run_id=str(found.run_id), aliases=list(found.aliases))


def move_alias(settings: Settings, *, name: str, version: str, alias: str) -> None:
    """Point `alias` at `version` (MLflow moves it off any other version of the model)."""
    failed = (
        f"could not set alias {alias!r} on {name} version {version} in "
        f"{redact(settings.mlflow_tracking_uri)!r}: {{}}"
    )
    with _direct(settings, alias=alias) as db:
        if db is not None:
            db.execute("BEGIN IMMEDIATE")
            if _live_version(db, name, version) is None:
                db.execute("ROLLBACK")
                raise TrackingError(
                    failed.format(f"Model Version (name={name}, version={version}) not found")
                )
            db.execute(
                "INSERT OR REPLACE INTO registered_model_aliases (alias, version, name, workspace) "
                "VALUES (?, ?, ?, ?)",
                (alias, int(version), name, _WORKSPACE),
            )
            db.execute("COMMIT")
            return
    mlflow = _mlflow()

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    try:
        with _quiet():
            mlflow.MlflowClient().set_registered_model_alias(name, alias, version)
    except Exception as exc:  # MlflowException, and requests/SQLAlchemy errors from the store
        raise TrackingError(failed.format(_first(exc))) from None


def alias_version(settings: Settings, *, name: str, alias: str) -> str | None:
    """The version of ``name`` holding ``alias``, None when none does (what a promotion puts
    back if it cannot finish)."""
    with _direct(settings, alias=alias) as db:
        if db is not None:
            # MLflow raises RESOURCE_DOES_NOT_EXIST for a model it does not know: none holds it
            row = db.execute(
                "SELECT version FROM registered_model_aliases WHERE workspace = ? AND name = ? "
                "AND alias = ?",
                (_WORKSPACE, name, alias),
            ).fetchone()
            return None if row is None else str(row[0])
    mlflow = _mlflow()
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    try:
        with _quiet():
            found = mlflow.MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(exc).lower():
            return None
        raise TrackingError(
            f"could not read alias {alias!r} of {name} in "
            f"{redact(settings.mlflow_tracking_uri)!r}: {_first(exc)}"
        ) from None
    except Exception as exc:  # requests/SQLAlchemy errors from the store
        raise TrackingError(
            f"could not read alias {alias!r} of {name} in "
            f"{redact(settings.mlflow_tracking_uri)!r}: {_first(exc)}"
        ) from None
    return str(found.version)


def delete_alias(settings: Settings, *, name: str, alias: str) -> None:
    """Remove ``alias`` from ``name`` (a first promotion that could not finish)."""
    with _direct(settings, alias=alias) as db:
        if db is not None:
            if not _registered(db, name):
                raise TrackingError(
                    f"could not delete alias {alias!r} of {name} in "
                    f"{redact(settings.mlflow_tracking_uri)!r}: Registered Model with "
                    f"name={name} not found"
                )
            db.execute(
                "DELETE FROM registered_model_aliases "
                "WHERE workspace = ? AND name = ? AND alias = ?",
                (_WORKSPACE, name, alias),
            )
            return
    mlflow = _mlflow()

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    try:
        with _quiet():
            mlflow.MlflowClient().delete_registered_model_alias(name, alias)
    except Exception as exc:  # MlflowException, and requests/SQLAlchemy errors from the store
        raise TrackingError(
            f"could not delete alias {alias!r} of {name} in "
            f"{redact(settings.mlflow_tracking_uri)!r}: {_first(exc)}"
        ) from None


#: how long a command waits for another process's write lock on a SQLite store
BUSY_TIMEOUT_S = 30
#: the schema revision (alembic head) of a SQLite store the pinned MLflow creates or migrates;
#: tests/integration/test_tracking_direct.py proves it equals the installed MLflow's head
MLFLOW_SCHEMA = "dc11669786a5"
#: MLflow's single-tenant workspace (DEFAULT_WORKSPACE_NAME) and deleted-version marker
#: (STAGE_DELETED_INTERNAL)
_WORKSPACE = "default"
_DELETED = "Deleted_Internal"
#: aliases MLflow accepts (word characters and '-', at most 255) and does not reserve
_ALIAS = re.compile(r"[\w\-]{1,255}")
_RESERVED = re.compile(r"latest|v\d+", re.IGNORECASE)


@contextmanager
def _direct(settings: Settings, *, alias: str | None) -> Iterator[sqlite3.Connection | None]:
    """A connection to the store when it is a local SQLite file this module can read and write
    exactly as MLflow would (see the module's docstring); None means: go through MLflow."""
    uri = settings.mlflow_tracking_uri
    if (
        not uri.startswith("sqlite:///")
        or "?" in uri
        or os.environ.get("MLFLOW_REGISTRY_URI", uri) != uri
        or os.environ.get("MLFLOW_ENABLE_WORKSPACES", "").lower() in ("true", "1")
        or (alias is not None and (not _ALIAS.fullmatch(alias) or _RESERVED.fullmatch(alias)))
    ):
        yield None
        return
    path = Path(uri.removeprefix("sqlite:///"))
    if not path.is_file():
        yield None  # MLflow creates a store that is not there yet
        return
    try:
        # A writer holds the lock for milliseconds, but a loaded machine can stall it for
        # seconds: wait up to BUSY_TIMEOUT_S for it rather than fail the command.
        db = sqlite3.connect(
            f"file:{path}?mode=rw", uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None
        )
    except sqlite3.Error:
        yield None
        return
    with closing(db):
        try:
            revision = db.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.Error:
            revision = None
        if revision != (MLFLOW_SCHEMA,):
            yield None
            return
        try:
            yield db
        except sqlite3.Error as exc:
            raise TrackingError(
                f"MLflow store {redact(uri)!r}: {exc}. Check the file is a readable, writable "
                "MLflow database (or point MLFLOW_TRACKING_URI at the store that trained it)"
            ) from None


def _live_version(db: sqlite3.Connection, name: str, version: str) -> tuple[Any, ...] | None:
    if not version.isdigit():
        return None
    row: tuple[Any, ...] | None = db.execute(
        "SELECT run_id FROM model_versions WHERE workspace = ? AND name = ? AND version = ? "
        "AND (current_stage IS NULL OR current_stage != ?)",
        (_WORKSPACE, name, int(version), _DELETED),
    ).fetchone()
    return row


def _registered(db: sqlite3.Connection, name: str) -> bool:
    row = db.execute(
        "SELECT 1 FROM registered_models WHERE workspace = ? AND name = ?", (_WORKSPACE, name)
    ).fetchone()
    return row is not None


def _first(exc: BaseException) -> str:
    """An MLflow error's first line, credentials redacted: fit for one-line messages."""
    return redact_text((str(exc).splitlines() or [type(exc).__name__])[0][:160])


# -- `pipeline sweep`: one parent run, a child run per trial ------------------------------------


@dataclass(frozen=True)
class TrialRun:
    """A sweep trial's child run as the store holds it: what `pipeline sweep` ranks."""

    run_id: str
    exp_name: str | None
    status: str
    metrics: Path | None  # validation/holdout.json, downloaded
    gates: Path | None  # validation/gates.json, downloaded


def start_parent(settings: Settings, *, experiment: str, name: str, tags: dict[str, str]) -> str:
    """Create the sweep's parent run and leave it RUNNING (MLflow nests a child run only
    under an active parent); :func:`end_parent` finishes it."""
    connect(settings, experiment=experiment)
    mlflow = _mlflow()
    client = mlflow.MlflowClient()
    try:
        found = client.get_experiment_by_name(experiment)
        run = client.create_run(found.experiment_id, run_name=name, tags=tags)
    except Exception as exc:  # MlflowException, and requests/SQLAlchemy errors from the store
        raise TrackingError(
            f"could not create the sweep's parent run in "
            f"{redact(settings.mlflow_tracking_uri)!r}: {_first(exc)}"
        ) from None
    return str(run.info.run_id)


def end_parent(
    settings: Settings, *, run_id: str, ok: bool, params: dict[str, str], tags: dict[str, str]
) -> None:
    mlflow = _mlflow()
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    client = mlflow.MlflowClient()
    for key, value in params.items():
        client.log_param(run_id, key, value[:6000])
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    client.set_terminated(run_id, "FINISHED" if ok else "FAILED")


def trial_runs(settings: Settings, *, parent_run_id: str, download_to: Path) -> list[TrialRun]:
    """The child runs of ``parent_run_id``, each with its validation files downloaded."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow = _mlflow()
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    client = mlflow.MlflowClient()
    parent = client.get_run(parent_run_id)
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
        max_results=5000,
    )
    found = []
    for child in children:
        run_id = str(child.info.run_id)
        files: dict[str, Path | None] = {}
        for name in ("holdout.json", "gates.json"):
            target = download_to / run_id
            target.mkdir(parents=True, exist_ok=True)
            try:
                with _quiet():
                    local = mlflow.artifacts.download_artifacts(
                        run_id=run_id, artifact_path=f"validation/{name}", dst_path=str(target)
                    )
                files[name] = Path(local)
            except Exception:  # MlflowException / OSError: the trial never got that far
                files[name] = None
        found.append(
            TrialRun(
                run_id=run_id,
                exp_name=child.data.tags.get("dvc.exp_name"),
                status=str(child.info.status),
                metrics=files["holdout.json"],
                gates=files["gates.json"],
            )
        )
    return found
