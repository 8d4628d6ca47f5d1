"""MLflow scoring protocol: every input format answers what `mlflow models serve` answers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.serving import Client

NAME = "breast-cancer-classifier"


def rows(model_dir: Any, n: int) -> list[list[float]]:
    return [[g["inputs"][f] for f in model_dir.features] for g in model_dir.golden[:n]]


def labels(model_dir: Any, n: int) -> list[int]:
    return [g["label"] for g in model_dir.golden[:n]]


def test_dataframe_split_returns_class_labels(client: Client, model_dir: Any) -> None:
    body = {"dataframe_split": {"columns": model_dir.features, "data": rows(model_dir, 5)}}
    response = client.post("/invocations", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"predictions": labels(model_dir, 5)}


def test_dataframe_split_with_columns_in_another_order_is_reordered(
    client: Client, model_dir: Any
) -> None:
    columns = list(reversed(model_dir.features))
    data = [list(reversed(r)) for r in rows(model_dir, 5)]
    body = {"dataframe_split": {"columns": columns, "data": data, "index": [0, 1, 2, 3, 4]}}
    response = client.post("/invocations", json=body)
    assert response.json() == {"predictions": labels(model_dir, 5)}


def test_dataframe_records_returns_class_labels(client: Client, model_dir: Any) -> None:
    records = [g["inputs"] for g in model_dir.golden[:4]]
    response = client.post("/invocations", json={"dataframe_records": records})
    assert response.json() == {"predictions": labels(model_dir, 4)}


@pytest.mark.parametrize("key", ["instances", "inputs"])
def test_instances_and_inputs_accept_a_list_of_lists(
    client: Client, model_dir: Any, key: str
) -> None:
    response = client.post("/invocations", json={key: rows(model_dir, 3)})
    assert response.json() == {"predictions": labels(model_dir, 3)}


@pytest.mark.parametrize("key", ["instances", "inputs"])
def test_instances_and_inputs_accept_a_list_of_records(
    client: Client, model_dir: Any, key: str
) -> None:
    response = client.post("/invocations", json={key: [g["inputs"] for g in model_dir.golden[:3]]})
    assert response.json() == {"predictions": labels(model_dir, 3)}


def test_inputs_accepts_columns_as_lists(client: Client, model_dir: Any) -> None:
    columns = {f: [g["inputs"][f] for g in model_dir.golden[:3]] for f in model_dir.features}
    response = client.post("/invocations", json={"inputs": columns})
    assert response.json() == {"predictions": labels(model_dir, 3)}


def test_params_next_to_the_data_are_ignored_as_mlflow_ignores_them(
    client: Client, model_dir: Any
) -> None:
    body = {"inputs": rows(model_dir, 1), "params": {"threshold": 0.3}}
    assert client.post("/invocations", json=body).json() == {"predictions": labels(model_dir, 1)}


def test_csv_with_header_returns_class_labels(client: Client, model_dir: Any) -> None:
    lines = [",".join(f'"{f}"' for f in model_dir.features)]
    lines += [",".join(repr(v) for v in r) for r in rows(model_dir, 6)]
    response = client.post(
        "/invocations", content="\n".join(lines), headers={"Content-Type": "text/csv"}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": labels(model_dir, 6)}


def test_csv_written_by_pandas_with_its_index_column_is_accepted(
    client: Client, model_dir: Any
) -> None:
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame(rows(model_dir, 3), columns=model_dir.features)
    response = client.post(
        "/invocations", content=frame.to_csv(), headers={"Content-Type": "text/csv; charset=utf-8"}
    )
    assert response.json() == {"predictions": labels(model_dir, 3)}


def test_json_with_charset_parameter_is_accepted(client: Client, model_dir: Any) -> None:
    response = client.post(
        "/invocations",
        content=json.dumps({"instances": rows(model_dir, 1)}),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 200


def test_ping_and_health_answer_200_when_ready(client: Client) -> None:
    assert client.get("/ping").status_code == 200
    assert client.get("/health").status_code == 200


def test_version_answers_the_model_version_as_text(client: Client) -> None:
    response = client.get("/version")
    assert response.status_code == 200
    assert response.text == "3"


def test_mlflow_own_client_reads_the_answer(client: Client, model_dir: Any) -> None:
    """The request body mlflow's own helpers build, sent as mlflow's client sends it."""
    pandas = pytest.importorskip("pandas")
    proto = pytest.importorskip("mlflow.utils.proto_json_utils")
    frame = pandas.DataFrame(rows(model_dir, 4), columns=model_dir.features)
    body = proto.dump_input_data(frame)
    response = client.post(
        "/invocations", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.json() == {"predictions": labels(model_dir, 4)}
