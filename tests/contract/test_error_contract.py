"""Bad input: the documented 4xx, a JSON body naming the problem, and the server goes on."""

from __future__ import annotations

from typing import Any

import httpx
import pytest


def _record(golden: dict[str, Any]) -> dict[str, Any]:
    return dict(golden["rows"][0]["inputs"])


def _without(record: dict[str, Any], column: str) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != column}


def _numeric(card: dict[str, Any]) -> str:
    """The first numeric column (a string there is the wrong kind; in a categorical column it
    is a category)."""
    return str(next(f["name"] for f in card["features"] if f.get("kind", "numeric") == "numeric"))


CASES: dict[str, tuple[Any, int, str]] = {
    # name: (request builder, expected status, text the message must contain)
    "invalid_json": (
        lambda g, c: {
            "content": b'{"dataframe_records": [',
            "headers": {"Content-Type": "application/json"},
        },
        400,
        "JSON",
    ),
    "wrong_content_type": (
        lambda g, c: {"content": b"x", "headers": {"Content-Type": "application/xml"}},
        415,
        "application/xml",
    ),
    "missing_column": (
        lambda g, c: {"json": {"dataframe_records": [_without(_record(g), g["features"][3])]}},
        400,
        "FEATURE3",
    ),
    "unknown_column": (
        lambda g, c: {"json": {"dataframe_records": [{**_record(g), "not a feature": 1.0}]}},
        400,
        "not a feature",
    ),
    "wrong_type": (
        lambda g, c: {"json": {"dataframe_records": [{**_record(g), _numeric(c): "abc"}]}},
        400,
        "NUMERIC",
    ),
    "nan": (
        lambda g, c: {
            "content": (
                '{"dataframe_split": {"columns": ["' + g["features"][0] + '"], "data": [[NaN]]}}'
            ).encode(),
            "headers": {"Content-Type": "application/json"},
        },
        400,
        "",
    ),
    "empty_batch": (lambda g, c: {"json": {"dataframe_records": []}}, 400, ""),
    "unknown_format_key": (lambda g, c: {"json": {"records": [_record(g)]}}, 400, ""),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_its_documented_4xx_naming_the_problem(
    http: httpx.Client, golden: dict[str, Any], card: dict[str, Any], case: str
) -> None:
    build, status, needle = CASES[case]
    needle = needle.replace("FEATURE3", golden["features"][3]).replace("NUMERIC", _numeric(card))
    response = http.post("/invocations", **build(golden, card))
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"error_code", "message"}
    assert needle in body["message"]
    assert http.get("/ping").status_code == 200


def _max_items(node: Any) -> list[int]:
    found: list[int] = []
    if isinstance(node, dict):
        found += [node["maxItems"]] if isinstance(node.get("maxItems"), int) else []
        for value in node.values():
            found += _max_items(value)
    elif isinstance(node, list):
        for value in node:
            found += _max_items(value)
    return found


def test_too_many_rows_gets_413_and_the_server_keeps_serving(
    http: httpx.Client, golden: dict[str, Any]
) -> None:
    limit = max(_max_items(http.get("/openapi.json").json()))  # the row limit is the largest
    rows = [list(golden["rows"][0]["inputs"].values())] * (limit + 1)
    response = http.post(
        "/invocations", json={"dataframe_split": {"columns": golden["features"], "data": rows}}
    )
    assert response.status_code == 413, response.text[:300]
    assert "error_code" in response.json()
    again = http.post("/invocations", json={"dataframe_records": [golden["rows"][0]["inputs"]]})
    (answer,) = again.json()["predictions"]
    label = golden["rows"][0]["label"]
    if golden["classes"]:
        assert answer == label
    else:  # a regressor: its value, to float32 precision at worst
        assert abs(answer - label) <= 1e-5 * max(1.0, abs(label))


def test_v2_bad_shape_gets_400_naming_the_shape(
    http: httpx.Client, golden: dict[str, Any], infer_path: str
) -> None:
    body = {"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2.0]}]}
    response = http.post(infer_path, json=body)
    assert response.status_code == 400
    assert "error" in response.json() or "message" in response.json()


def test_unknown_model_name_gets_404(http: httpx.Client) -> None:
    assert http.get("/v2/models/no-such-model").status_code == 404
