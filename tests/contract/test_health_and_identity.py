"""Liveness, readiness, and that the server says it serves exactly the validated model."""

from __future__ import annotations

from typing import Any

import httpx
import pytest


def test_liveness_answers_200(http: httpx.Client) -> None:
    assert http.get("/v2/health/live").status_code == 200


def test_readiness_answers_200_on_every_readiness_route(
    http: httpx.Client, card: dict[str, Any]
) -> None:
    for path in ("/ping", "/health", "/v2/health/ready", f"/v2/models/{card['model_name']}/ready"):
        assert http.get(path).status_code == 200, path


def test_version_equals_the_model_card(http: httpx.Client, card: dict[str, Any]) -> None:
    assert http.get("/version").text.strip() == str(card["model_version"])


def test_metadata_equals_the_model_card(http: httpx.Client, card: dict[str, Any]) -> None:
    meta = http.get("/metadata").json()
    facts = {
        k: meta.get(k)
        for k in (
            "model_name",
            "model_version",
            "run_id",
            "git_commit",
            "data_hash",
            "sha256",
            "classes",
        )
    }
    expected = {k: card[k] for k in facts}
    expected["model_version"] = str(expected["model_version"])
    facts["model_version"] = str(facts["model_version"])
    assert facts == expected
    names = [f["name"] for f in meta["input_schema"]]
    assert names == [f["name"] for f in card["features"]]


def test_metadata_equals_the_image_labels(
    http: httpx.Client, labels: dict[str, str] | None
) -> None:
    if labels is None:
        pytest.skip("no --image-labels given (the server is not a labelled image)")
    meta = http.get("/metadata").json()
    pairs = {
        "ml.model.name": meta["model_name"],
        "ml.model.version": meta["model_version"],
        "ml.mlflow.run_id": meta["run_id"],
        "ml.dvc.data_hash": meta["data_hash"],
        "ml.model.sha256": meta["sha256"],
        "ml.serving.runtime": meta["runtime"]["name"],
    }
    for name, value in meta.get("holdout_metrics", {}).items():
        pairs[f"ml.metrics.holdout.{name}"] = value
    mismatched = {k: (labels.get(k), str(v)) for k, v in pairs.items() if labels.get(k) != str(v)}
    assert mismatched == {}, f"label vs /metadata: {mismatched}"


def test_v2_model_metadata_names_the_model_and_its_inputs(
    http: httpx.Client, card: dict[str, Any]
) -> None:
    meta = http.get(f"/v2/models/{card['model_name']}").json()
    assert meta["name"] == card["model_name"]
    if card.get("task") == "regression":
        assert [(o["name"], o["datatype"]) for o in meta["outputs"]] == [("prediction", "FP64")]
    else:
        assert {o["name"] for o in meta["outputs"]} >= {"label", "probabilities"}
    assert [i["name"] for i in meta["inputs"]] in (
        ["input"],
        [f["name"] for f in card["features"]],
    )
