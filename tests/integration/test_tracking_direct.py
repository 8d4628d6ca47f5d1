"""The release commands' direct SQLite path agrees with MLflow's own client, call by call.

`pipeline.ml.tracking` reads and writes a local SQLite store without importing MLflow when the
store is at the schema revision the pinned MLflow writes. Each check below runs the same call
through both paths (the MLflow path is chosen by making the revision unknown) on a store MLflow
created, and reads every write back through MLflow's client.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import Settings
from pipeline.errors import TrackingError
from pipeline.ml import tracking

pytestmark = pytest.mark.integration

MODEL = "iris-classifier"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Any]:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    uri = f"sqlite:///{db}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model(MODEL)
    client.create_registered_model("other")
    for _ in range(3):
        client.create_model_version(MODEL, "file:///nowhere", run_id=None)
    client.delete_model_version(MODEL, "3")
    settings = Settings().model_copy(update={"mlflow_tracking_uri": uri})
    return settings, client


def both(monkeypatch: pytest.MonkeyPatch, call: Callable[[], Any]) -> tuple[Any, Any]:
    """(direct result, MLflow result); an exception is returned as its type."""

    def outcome() -> Any:
        try:
            return call()
        except TrackingError as exc:
            return type(exc)

    direct = outcome()
    with monkeypatch.context() as m:
        m.setattr(tracking, "MLFLOW_SCHEMA", "not-this-revision")
        through_mlflow = outcome()
    return direct, through_mlflow


def test_the_pinned_mlflow_writes_the_schema_revision_the_direct_path_knows(
    store: tuple[Settings, Any],
) -> None:
    settings, _ = store
    path = settings.mlflow_tracking_uri.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        (revision,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
    assert revision == tracking.MLFLOW_SCHEMA, (
        "MLflow's schema moved: check the four direct queries in pipeline/ml/tracking.py against "
        f"its SqlAlchemyStore, then set MLFLOW_SCHEMA = {revision!r}"
    )
    with tracking._direct(settings, alias="staging") as direct:
        assert direct is not None


def test_reads_agree_on_versions_deleted_versions_unknown_models_and_aliases(
    store: tuple[Settings, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, client = store
    client.set_registered_model_alias(MODEL, "production", "1")
    for version in ("1", "2", "3", "9", "x"):
        direct, mlflow = both(
            monkeypatch, lambda v=version: tracking.version_state(settings, name=MODEL, version=v)
        )
        assert direct == mlflow, version
    assert both(monkeypatch, lambda: tracking.version_state(settings, name=MODEL, version="1"))[
        0
    ] == tracking.VersionState(run_id="None", aliases=["production"])
    assert both(
        monkeypatch, lambda: tracking.version_state(settings, name="nope", version="1")
    ) == (
        TrackingError,
        TrackingError,
    )
    for name, alias in ((MODEL, "production"), (MODEL, "staging"), ("nope", "staging")):
        direct, mlflow = both(
            monkeypatch, lambda n=name, a=alias: tracking.alias_version(settings, name=n, alias=a)
        )
        assert direct == mlflow, (name, alias)
    assert tracking.alias_version(settings, name=MODEL, alias="production") == "1"


def test_writes_are_what_mlflow_reads_and_refusals_agree(
    store: tuple[Settings, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, client = store
    tracking.move_alias(settings, name=MODEL, version="2", alias="staging")
    assert str(client.get_model_version_by_alias(MODEL, "staging").version) == "2"
    assert "staging" in client.get_registered_model(MODEL).aliases
    tracking.move_alias(settings, name=MODEL, version="1", alias="staging")  # moves, not adds
    assert str(client.get_model_version_by_alias(MODEL, "staging").version) == "1"
    assert sorted(client.get_model_version(MODEL, "1").aliases) == ["production", "staging"]
    assert client.get_model_version(MODEL, "2").aliases == []

    tracking.delete_alias(settings, name=MODEL, alias="staging")
    assert "staging" not in client.get_registered_model(MODEL).aliases
    # deleting an alias nobody holds is no error in either path
    assert both(
        monkeypatch, lambda: tracking.delete_alias(settings, name=MODEL, alias="staging")
    ) == (None, None)

    refused = [
        lambda: tracking.move_alias(settings, name=MODEL, version="3", alias="qa"),  # deleted
        lambda: tracking.move_alias(settings, name=MODEL, version="9", alias="qa"),
        lambda: tracking.move_alias(settings, name="nope", version="1", alias="qa"),
        lambda: tracking.delete_alias(settings, name="nope", alias="qa"),
    ]
    for call in refused:
        assert both(monkeypatch, call) == (TrackingError, TrackingError)
    assert "qa" not in client.get_registered_model(MODEL).aliases
    assert client.get_registered_model("other").aliases == {}


def test_anything_the_direct_path_does_not_know_goes_through_mlflow(
    store: tuple[Settings, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, _ = store
    with tracking._direct(settings, alias="latest") as direct:  # reserved by MLflow
        assert direct is None
    with tracking._direct(settings, alias="bad alias") as direct:
        assert direct is None
    missing = settings.model_copy(update={"mlflow_tracking_uri": f"sqlite:///{tmp_path}/no.db"})
    with tracking._direct(missing, alias=None) as direct:
        assert direct is None
    assert not (tmp_path / "no.db").exists()
    server = settings.model_copy(update={"mlflow_tracking_uri": "http://127.0.0.1:5000"})
    with tracking._direct(server, alias=None) as direct:
        assert direct is None
    monkeypatch.setenv("MLFLOW_ENABLE_WORKSPACES", "true")
    with tracking._direct(settings, alias=None) as direct:
        assert direct is None
    # and MLflow refuses the reserved alias the direct path left to it
    monkeypatch.delenv("MLFLOW_ENABLE_WORKSPACES")
    with pytest.raises(TrackingError, match="reserved"):
        tracking.move_alias(settings, name=MODEL, version="1", alias="latest")
