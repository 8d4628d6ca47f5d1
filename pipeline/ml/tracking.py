"""MLflow: runs, the model registry and aliases. The only module that imports mlflow.

Default store: SQLite (`sqlite:///mlflow.db`) with artifacts in `mlartifacts/`, no server.
`MLFLOW_TRACKING_URI` points everything at a server instead.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.config import Settings
from pipeline.errors import TrackingError, redact_text
from pipeline.errors import redact as redact  # the stages log the store's URI through it


@dataclass(frozen=True)
class RegisteredModel:
    run_id: str
    name: str
    version: str


@contextmanager
def _quiet() -> Iterator[None]:
    """MLflow logs a store error with its traceback before raising it; the release commands
    turn it into one TrackingError line, so its own log stays silent meanwhile."""
    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


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
) -> RegisteredModel:
    """One run: params, metrics, dataset, provenance tags, the model, and a new registry version."""
    mlflow = _mlflow()
    from mlflow.models import infer_signature

    with mlflow.start_run() as run, warnings.catch_warnings():
        # MLflow hints that integer label columns cannot hold NaN: true, and not our case.
        warnings.filterwarnings("ignore", category=UserWarning, module="mlflow")
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        mlflow.set_tags(tags)
        dataset = mlflow.data.from_pandas(train_frame, targets=target, name="train")
        mlflow.log_input(dataset, context="training")
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
    return RegisteredModel(run_id=run.info.run_id, name=registered_name, version=str(version))


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
    mlflow = _mlflow()

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    try:
        with _quiet():
            found = mlflow.MlflowClient().get_model_version(name, version)
    except Exception as exc:  # MlflowException, and requests/SQLAlchemy errors from the store
        raise TrackingError(
            f"MLflow store {redact(settings.mlflow_tracking_uri)!r} has no version {version} "
            f"of model "
            f"{name!r} ({_first(exc)}): point MLFLOW_TRACKING_URI at the store that trained it"
        ) from None
    return VersionState(run_id=str(found.run_id), aliases=list(found.aliases))


def move_alias(settings: Settings, *, name: str, version: str, alias: str) -> None:
    """Point `alias` at `version` (MLflow moves it off any other version of the model)."""
    mlflow = _mlflow()

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    try:
        with _quiet():
            mlflow.MlflowClient().set_registered_model_alias(name, alias, version)
    except Exception as exc:  # MlflowException, and requests/SQLAlchemy errors from the store
        raise TrackingError(
            f"could not set alias {alias!r} on {name} version {version} in "
            f"{redact(settings.mlflow_tracking_uri)!r}: {_first(exc)}"
        ) from None


def alias_version(settings: Settings, *, name: str, alias: str) -> str | None:
    """The version of ``name`` holding ``alias``, None when none does (what a promotion puts
    back if it cannot finish)."""
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


def _first(exc: BaseException) -> str:
    """An MLflow error's first line, credentials redacted: fit for one-line messages."""
    return redact_text((str(exc).splitlines() or [type(exc).__name__])[0][:160])
