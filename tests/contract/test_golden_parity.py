"""Golden parity: the server's answers equal the validated model's, through every protocol.

reports/golden.json holds holdout rows with the in-process model's exact classes and
probabilities (written by the validate stage). Classes must match exactly; probabilities within
the tolerance the serving runtime declares (serving.runtime.TOLERANCES: ONNX 1e-5, scikit-learn
1e-12), which params.yaml's `contract.probability_tolerance` may only tighten.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx
import numpy as np
import pytest


def _rows(golden: dict[str, Any]) -> list[list[float]]:
    return [[row["inputs"][f] for f in golden["features"]] for row in golden["rows"]]


def _records(golden: dict[str, Any]) -> list[dict[str, float]]:
    return [row["inputs"] for row in golden["rows"]]


def _csv(golden: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(golden["features"])
    writer.writerows([[repr(v) for v in row] for row in _rows(golden)])
    return buffer.getvalue()


MLFLOW_FORMATS = {
    "dataframe_split": lambda g: {
        "json": {"dataframe_split": {"columns": g["features"], "data": _rows(g)}}
    },
    "dataframe_records": lambda g: {"json": {"dataframe_records": _records(g)}},
    "instances": lambda g: {"json": {"instances": _records(g)}},
    "inputs": lambda g: {"json": {"inputs": _rows(g)}},
    "csv": lambda g: {"content": _csv(g), "headers": {"Content-Type": "text/csv"}},
}


@pytest.mark.parametrize("fmt", list(MLFLOW_FORMATS))
def test_invocations_return_exactly_the_validated_classes(
    http: httpx.Client, golden: dict[str, Any], fmt: str
) -> None:
    response = http.post("/invocations", **MLFLOW_FORMATS[fmt](golden))
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == [row["label"] for row in golden["rows"]]


def _infer(http: httpx.Client, path: str, rows: list[list[float]]) -> dict[str, Any]:
    body = {
        "inputs": [
            {
                "name": "input",
                "shape": [len(rows), len(rows[0])],
                "datatype": "FP64",
                "data": [v for row in rows for v in row],
            }
        ]
    }
    response = http.post(path, json=body)
    assert response.status_code == 200, response.text
    return {o["name"]: o for o in response.json()["outputs"]}


def test_v2_infer_returns_the_validated_classes_and_probabilities_within_tolerance(
    http: httpx.Client, golden: dict[str, Any], infer_path: str, tolerance: float
) -> None:
    outputs = _infer(http, infer_path, _rows(golden))
    assert outputs["label"]["data"] == [row["label"] for row in golden["rows"]]
    served = np.asarray(outputs["probabilities"]["data"], dtype=np.float64)
    expected = np.asarray([row["probabilities"] for row in golden["rows"]], dtype=np.float64)
    assert served.shape == (expected.size,) or served.shape == expected.shape
    worst = float(np.abs(served.reshape(expected.shape) - expected).max())
    assert worst <= tolerance, f"max |p - p_golden| = {worst:.3g} > declared {tolerance:.3g}"


def test_v2_infer_accepts_one_tensor_per_column_as_kserve_sends(
    http: httpx.Client, golden: dict[str, Any], infer_path: str
) -> None:
    rows = _records(golden)
    body = {
        "inputs": [
            {"name": f, "shape": [len(rows)], "datatype": "FP64", "data": [r[f] for r in rows]}
            for f in golden["features"]
        ]
    }
    response = http.post(infer_path, json=body)
    assert response.status_code == 200, response.text
    labels = next(o for o in response.json()["outputs"] if o["name"] == "label")
    assert labels["data"] == [row["label"] for row in golden["rows"]]


def test_versioned_v2_route_answers_like_the_plain_one(
    http: httpx.Client, golden: dict[str, Any], card: dict[str, Any]
) -> None:
    path = f"/v2/models/{card['model_name']}/versions/{card['model_version']}/infer"
    outputs = _infer(http, path, _rows(golden)[:3])
    assert outputs["label"]["data"] == [row["label"] for row in golden["rows"][:3]]


def test_a_batch_of_n_equals_n_single_requests(
    http: httpx.Client, golden: dict[str, Any], infer_path: str
) -> None:
    rows = _rows(golden)
    batch = _infer(http, infer_path, rows)
    singles = [_infer(http, infer_path, [row]) for row in rows]
    assert batch["label"]["data"] == [s["label"]["data"][0] for s in singles]
    batch_p = np.asarray(batch["probabilities"]["data"], dtype=np.float64).reshape(len(rows), -1)
    single_p = np.asarray([s["probabilities"]["data"] for s in singles], dtype=np.float64)
    assert np.abs(batch_p - single_p.reshape(batch_p.shape)).max() <= 1e-6
