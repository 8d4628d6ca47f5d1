"""The golden set: every protocol returns exactly the validated class for every row, and the
probabilities within the runtime's declared tolerance; a batch of N equals N single requests."""

from __future__ import annotations

from typing import Any

import numpy as np

from serving.runtime import ONNX_TOLERANCE, SKLEARN_TOLERANCE
from tests.support.serving import Client

INFER = "/v2/models/breast-cancer-classifier/infer"


def tolerance(client: Client) -> float:
    return ONNX_TOLERANCE if client.app.settings.runtime == "onnx" else SKLEARN_TOLERANCE


def matrix(model_dir: Any) -> list[list[float]]:
    return [[g["inputs"][f] for f in model_dir.features] for g in model_dir.golden]


def infer(client: Client, rows: list[list[float]]) -> tuple[list[int], np.ndarray]:
    body = {"inputs": [{"name": "input", "shape": [len(rows), len(rows[0])], "datatype": "FP64",
                        "data": rows}]}  # fmt: skip
    response = client.post(INFER, json=body)
    assert response.status_code == 200, response.text
    out = {o["name"]: o for o in response.json()["outputs"]}
    probabilities = np.array(out["probabilities"]["data"]).reshape(out["probabilities"]["shape"])
    return out["label"]["data"], probabilities


def test_every_golden_row_gets_the_validated_label_from_each_mlflow_format(
    client: Client, model_dir: Any
) -> None:
    expected = [g["label"] for g in model_dir.golden]
    rows = matrix(model_dir)
    records = [g["inputs"] for g in model_dir.golden]
    bodies = [
        {"dataframe_split": {"columns": model_dir.features, "data": rows}},
        {"dataframe_records": records},
        {"instances": rows},
        {"inputs": records},
    ]
    for body in bodies:
        assert client.post("/invocations", json=body).json()["predictions"] == expected


def test_every_golden_row_gets_the_validated_label_from_csv(client: Client, model_dir: Any) -> None:
    lines = [",".join(model_dir.features)] + [",".join(map(repr, r)) for r in matrix(model_dir)]
    response = client.post(
        "/invocations", content="\n".join(lines), headers={"Content-Type": "text/csv"}
    )
    assert response.json()["predictions"] == [g["label"] for g in model_dir.golden]


def test_every_golden_row_gets_label_and_probabilities_within_tolerance_over_v2(
    client: Client, model_dir: Any
) -> None:
    labels, probabilities = infer(client, matrix(model_dir))
    assert labels == [g["label"] for g in model_dir.golden]
    expected = np.array([g["probabilities"] for g in model_dir.golden])
    assert np.abs(probabilities - expected).max() <= tolerance(client)


def test_a_batch_of_n_equals_n_single_requests(client: Client, model_dir: Any) -> None:
    rows = matrix(model_dir)
    batch_labels, batch_probabilities = infer(client, rows)
    batch_predictions = client.post("/invocations", json={"inputs": rows}).json()["predictions"]
    for i, row in enumerate(rows):
        labels, probabilities = infer(client, [row])
        assert labels == [batch_labels[i]]
        assert np.abs(probabilities[0] - batch_probabilities[i]).max() <= tolerance(client)
        single = client.post("/invocations", json={"inputs": [row]}).json()["predictions"]
        assert single == [batch_predictions[i]]


def test_metadata_reports_the_measured_golden_difference_within_the_declared_tolerance(
    client: Client,
) -> None:
    runtime = client.get("/metadata").json()["runtime"]
    assert runtime["name"] == client.app.settings.runtime
    assert runtime["probability_tolerance"] == tolerance(client)
    assert 0 <= runtime["golden_max_abs_diff"] <= runtime["probability_tolerance"]
