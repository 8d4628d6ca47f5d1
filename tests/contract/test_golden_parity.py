"""Golden parity: the server's answers equal the validated model's, through every protocol.

reports/golden.json holds holdout rows with the in-process model's exact classes and
probabilities (written by the validate stage). Classes must match exactly; probabilities within
the tolerance the serving runtime declares (serving.runtime.TOLERANCES: ONNX 1e-5, scikit-learn
1e-12), which params.yaml's `contract.probability_tolerance` may only tighten. A regressor's
values must match within the declared relative tolerance (serving.runtime.REGRESSION_TOLERANCES).
Golden rows carry text, nulls where the model takes them, and categories never seen in
training, so every format is checked with those too.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx
import numpy as np
import pytest

from serving.card import read_card
from serving.protocols.oip import request_tensors
from serving.runtime import regression_error


def _rows(golden: dict[str, Any]) -> list[list[Any]]:
    return [[row["inputs"][f] for f in golden["features"]] for row in golden["rows"]]


def _records(golden: dict[str, Any]) -> list[dict[str, Any]]:
    return [row["inputs"] for row in golden["rows"]]


def _cell(value: Any) -> str:
    """A CSV cell: a float's exact repr, text as it is, an empty cell for a missing value."""
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


def _csv(golden: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(golden["features"])
    writer.writerows([[_cell(v) for v in row] for row in _rows(golden)])
    return buffer.getvalue()


def assert_answers(card: dict[str, Any], got: list[Any], expected: list[Any], tol: float) -> None:
    """Classes exactly; a regressor's values within the declared relative tolerance."""
    if card.get("task") == "regression":
        worst = regression_error(got, expected)
        assert worst <= tol, f"max relative |y - y_golden| = {worst:.3g} > declared {tol:.3g}"
    else:
        assert got == expected


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
    http: httpx.Client, golden: dict[str, Any], card: dict[str, Any], tolerance: float, fmt: str
) -> None:
    response = http.post("/invocations", **MLFLOW_FORMATS[fmt](golden))
    assert response.status_code == 200, response.text
    expected = [row["label"] for row in golden["rows"]]
    assert_answers(card, response.json()["predictions"], expected, tolerance)


@pytest.fixture(scope="session")
def features(pytestconfig: pytest.Config) -> Any:
    return read_card(pytestconfig.getoption("--model-card")).features


def _infer(
    http: httpx.Client, path: str, features: Any, records: list[dict[str, Any]], **kw: Any
) -> dict[str, Any]:
    response = http.post(path, json={"inputs": request_tensors(features, records, **kw)})
    assert response.status_code == 200, response.text
    return {o["name"]: o for o in response.json()["outputs"]}


def _answers(outputs: dict[str, Any]) -> list[Any]:
    return list(outputs["prediction" if "prediction" in outputs else "label"]["data"])


def test_v2_infer_returns_the_validated_classes_and_probabilities_within_tolerance(
    http: httpx.Client,
    golden: dict[str, Any],
    card: dict[str, Any],
    features: Any,
    infer_path: str,
    tolerance: float,
) -> None:
    outputs = _infer(http, infer_path, features, _records(golden))
    expected = [row["label"] for row in golden["rows"]]
    assert_answers(card, _answers(outputs), expected, tolerance)
    if card.get("task") == "regression":
        assert outputs["prediction"]["datatype"] == "FP64"
        return
    served = np.asarray(outputs["probabilities"]["data"], dtype=np.float64)
    expected = np.asarray([row["probabilities"] for row in golden["rows"]], dtype=np.float64)
    assert served.shape == (expected.size,) or served.shape == expected.shape
    worst = float(np.abs(served.reshape(expected.shape) - expected).max())
    assert worst <= tolerance, f"max |p - p_golden| = {worst:.3g} > declared {tolerance:.3g}"


def test_v2_infer_accepts_one_tensor_per_column_as_kserve_sends(
    http: httpx.Client,
    golden: dict[str, Any],
    card: dict[str, Any],
    features: Any,
    infer_path: str,
    tolerance: float,
) -> None:
    outputs = _infer(http, infer_path, features, _records(golden), per_column=True)
    expected = [row["label"] for row in golden["rows"]]
    assert_answers(card, _answers(outputs), expected, tolerance)


def test_versioned_v2_route_answers_like_the_plain_one(
    http: httpx.Client,
    golden: dict[str, Any],
    card: dict[str, Any],
    features: Any,
    tolerance: float,
) -> None:
    path = f"/v2/models/{card['model_name']}/versions/{card['model_version']}/infer"
    outputs = _infer(http, path, features, _records(golden)[:3])
    expected = [row["label"] for row in golden["rows"][:3]]
    assert_answers(card, _answers(outputs), expected, tolerance)


def test_a_batch_of_n_equals_n_single_requests(
    http: httpx.Client, golden: dict[str, Any], features: Any, infer_path: str
) -> None:
    records = _records(golden)
    batch = _infer(http, infer_path, features, records)
    singles = [_infer(http, infer_path, features, [record]) for record in records]
    batch_answers = np.asarray(_answers(batch), dtype=object)
    single_answers = np.asarray([_answers(s)[0] for s in singles], dtype=object)
    if "prediction" in batch:
        got, want = batch_answers.astype(float), single_answers.astype(float)
        assert np.abs(got - want).max() <= 1e-6 * max(1.0, float(np.abs(want).max()))
        return
    assert batch_answers.tolist() == single_answers.tolist()
    n = len(records)
    batch_p = np.asarray(batch["probabilities"]["data"], dtype=np.float64).reshape(n, -1)
    single_p = np.asarray([s["probabilities"]["data"] for s in singles], dtype=np.float64)
    assert np.abs(batch_p - single_p.reshape(batch_p.shape)).max() <= 1e-6
