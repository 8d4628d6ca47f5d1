"""Typed columns: text, nulls and categories never seen in training, as the model card declares.

A null is served where the card marks the column `nullable` (seen in training, handled by the
model) and is a 400 naming the column elsewhere; a category never seen in training is served
and counted in /metrics; a value of the wrong kind is a 400. Each test skips when the model has
no column of the kind it needs.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

UNSEEN = "a category no training row had"


def _columns(
    card: dict[str, Any], *, kind: str | None = None, nullable: bool | None = None
) -> list[str]:
    return [
        f["name"]
        for f in card["features"]
        if (kind is None or f.get("kind", "numeric") == kind)
        and (nullable is None or f.get("nullable", False) == nullable)
    ]


def _record(golden: dict[str, Any], card: dict[str, Any]) -> dict[str, Any]:
    """A golden row with a value in every column (the first such row)."""
    for row in golden["rows"]:
        if all(v is not None for v in row["inputs"].values()):
            return dict(row["inputs"])
    pytest.skip("no golden row has a value in every column")


def _unknown_count(http: httpx.Client, column: str) -> float:
    text = http.get("/metrics").text
    pattern = rf'^serving_unknown_categories_total\{{column="{re.escape(column)}"\}} (\S+)$'
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_a_null_where_the_model_takes_one_is_served_in_every_json_format(
    http: httpx.Client, golden: dict[str, Any], card: dict[str, Any]
) -> None:
    nullable = _columns(card, nullable=True)
    if not nullable:
        pytest.skip("no column of this model takes a null")
    record = _record(golden, card) | {name: None for name in nullable}
    names = [f["name"] for f in card["features"]]
    for body in (
        {"dataframe_records": [record]},
        {"dataframe_split": {"columns": names, "data": [[record[n] for n in names]]}},
        {"inputs": {n: [record[n]] for n in names}},
    ):
        response = http.post("/invocations", json=body)
        assert response.status_code == 200, response.text
        assert len(response.json()["predictions"]) == 1


def test_a_null_where_the_model_takes_none_is_a_400_naming_the_column(
    http: httpx.Client, golden: dict[str, Any], card: dict[str, Any]
) -> None:
    strict = _columns(card, nullable=False)
    if not strict:
        pytest.skip("every column of this model takes a null")
    for name in strict:
        response = http.post(
            "/invocations", json={"dataframe_records": [_record(golden, card) | {name: None}]}
        )
        assert response.status_code == 400, response.text
        message = response.json()["message"]
        assert repr(name) in message and "null" in message


def test_an_empty_csv_cell_is_a_null(
    http: httpx.Client, golden: dict[str, Any], card: dict[str, Any]
) -> None:
    record = _record(golden, card)
    names = [f["name"] for f in card["features"]]
    for name in names:
        cells = ["" if n == name else str(record[n]) for n in names]
        body = ",".join(f'"{n}"' for n in names) + "\n" + ",".join(f'"{c}"' for c in cells)
        response = http.post(
            "/invocations", content=body.encode(), headers={"Content-Type": "text/csv"}
        )
        expected = 200 if name in _columns(card, nullable=True) else 400
        assert response.status_code == expected, (name, response.text)


def test_an_unseen_category_is_served_and_counted_in_metrics(
    http: httpx.Client, golden: dict[str, Any], card: dict[str, Any]
) -> None:
    categorical = _columns(card, kind="categorical")
    if not categorical:
        pytest.skip("this model has no categorical column")
    for name in categorical:
        before = _unknown_count(http, name)
        response = http.post(
            "/invocations", json={"dataframe_records": [_record(golden, card) | {name: UNSEEN}]}
        )
        assert response.status_code == 200, response.text
        assert _unknown_count(http, name) == before + 1


def test_a_value_of_the_wrong_kind_is_a_400_naming_the_column(
    http: httpx.Client, golden: dict[str, Any], card: dict[str, Any]
) -> None:
    wrong = {name: 3.5 for name in _columns(card, kind="categorical")}
    wrong |= {name: "3.5" for name in _columns(card, kind="numeric")}
    for name, value in wrong.items():
        response = http.post(
            "/invocations", json={"dataframe_records": [_record(golden, card) | {name: value}]}
        )
        assert response.status_code == 400, response.text
        assert repr(name) in response.json()["message"]


def test_openapi_declares_each_column_kind_categories_and_nullability(
    http: httpx.Client, card: dict[str, Any]
) -> None:
    record = http.get("/openapi.json").json()["components"]["schemas"]["Record"]
    for feature in card["features"]:
        schema = record["properties"][feature["name"]]
        assert schema.get("nullable", False) == feature.get("nullable", False), feature["name"]
        if feature.get("kind") == "categorical":
            assert schema["type"] == "string"
            assert [c for c in schema["enum"] if c is not None] == feature["categories"]
        else:
            assert schema["type"] in ("number", "integer")
