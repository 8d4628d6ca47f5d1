"""Every kind of bad input gets a 4xx with an envelope naming what is wrong, never a 5xx, and
the server keeps serving afterwards."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.serving import Client, ready_client


def row(model_dir: Any, i: int = 0) -> list[float]:
    return [model_dir.golden[i]["inputs"][f] for f in model_dir.features]


def record(model_dir: Any, i: int = 0) -> dict[str, float]:
    return dict(model_dir.golden[i]["inputs"])


def assert_error(response: Any, status: int, code: str, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error_code"] == code
    for word in words:
        assert word in body["message"], body["message"]


def test_invalid_json_returns_400_bad_request(client: Client) -> None:
    response = client.post(
        "/invocations", content=b'{"inputs": [[1, 2', headers={"Content-Type": "application/json"}
    )
    assert_error(response, 400, "BAD_REQUEST", "not valid JSON")


def test_wrong_content_type_returns_415(client: Client, model_dir: Any) -> None:
    response = client.post(
        "/invocations", content=b"inputs=1", headers={"Content-Type": "text/plain"}
    )
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE", "text/plain")


def test_missing_content_type_returns_415(client: Client) -> None:
    assert_error(client.post("/invocations", content=b"{}"), 415, "UNSUPPORTED_MEDIA_TYPE")


def test_non_utf8_charset_returns_415(client: Client, model_dir: Any) -> None:
    response = client.post(
        "/invocations", content=b"{}", headers={"Content-Type": "application/json; charset=latin-1"}
    )
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE", "charset")


def test_body_without_a_known_format_returns_400_listing_the_formats(client: Client) -> None:
    response = client.post("/invocations", json={"data": [[1.0]]})
    assert_error(response, 400, "BAD_REQUEST", "dataframe_split", "data")


def test_two_formats_at_once_return_400(client: Client, model_dir: Any) -> None:
    response = client.post("/invocations", json={"inputs": [row(model_dir)], "instances": []})
    assert_error(response, 400, "BAD_REQUEST", "exactly one")


def test_a_json_list_instead_of_an_object_returns_400(client: Client, model_dir: Any) -> None:
    assert_error(client.post("/invocations", json=[row(model_dir)]), 400, "BAD_REQUEST", "list")


def test_missing_column_returns_400_naming_the_column(client: Client, model_dir: Any) -> None:
    bad = record(model_dir)
    del bad["mean radius"]
    response = client.post("/invocations", json={"dataframe_records": [bad]})
    assert_error(response, 400, "INVALID_PARAMETER_VALUE", "missing columns", "mean radius")


def test_unknown_column_returns_400_naming_the_column(client: Client, model_dir: Any) -> None:
    bad = record(model_dir) | {"patient id": 7}
    response = client.post("/invocations", json={"dataframe_records": [bad]})
    assert_error(response, 400, "INVALID_PARAMETER_VALUE", "unknown columns", "patient id")


def test_split_with_a_missing_column_name_returns_400_naming_it(
    client: Client, model_dir: Any
) -> None:
    columns = model_dir.features[1:]
    body = {"dataframe_split": {"columns": columns, "data": [row(model_dir)[1:]]}}
    response = client.post("/invocations", json=body)
    assert_error(response, 400, "INVALID_PARAMETER_VALUE", "mean radius")


def test_row_of_the_wrong_length_returns_400_with_the_expected_columns(
    client: Client, model_dir: Any
) -> None:
    response = client.post("/invocations", json={"inputs": [row(model_dir)[:-1]]})
    assert_error(response, 400, "INVALID_PARAMETER_VALUE", "29 values", "30 columns")


@pytest.mark.parametrize(
    ("value", "shown"), [("12.5", "string"), (None, "null"), (True, "boolean"), ([1.0], "list")]
)
def test_wrong_type_returns_400_naming_column_and_type(
    client: Client, model_dir: Any, value: Any, shown: str
) -> None:
    bad = record(model_dir) | {"mean texture": value}
    response = client.post("/invocations", json={"dataframe_records": [bad]})
    assert_error(response, 400, "INVALID_PARAMETER_VALUE", "mean texture", shown)


def test_boolean_in_a_row_of_numbers_is_not_silently_read_as_1(
    client: Client, model_dir: Any
) -> None:
    values = row(model_dir)
    values[3] = True
    response = client.post("/invocations", json={"inputs": [values]})
    assert_error(response, 400, "INVALID_PARAMETER_VALUE", model_dir.features[3], "boolean")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_or_infinity_returns_400_naming_the_column(
    client: Client, model_dir: Any, literal: str
) -> None:
    values = [repr(v) for v in row(model_dir)]
    values[2] = literal
    body = '{"inputs": [[' + ", ".join(values) + "]]}"
    response = client.post(
        "/invocations", content=body, headers={"Content-Type": "application/json"}
    )
    assert_error(response, 400, "INVALID_PARAMETER_VALUE", model_dir.features[2], "finite")


def test_nan_in_csv_returns_400_naming_the_column(client: Client, model_dir: Any) -> None:
    header = ",".join(model_dir.features)
    values = [repr(v) for v in row(model_dir)]
    values[0] = "nan"
    response = client.post(
        "/invocations",
        content=header + "\n" + ",".join(values),
        headers={"Content-Type": "text/csv"},
    )
    assert_error(response, 400, "INVALID_PARAMETER_VALUE", "mean radius", "finite")


def test_empty_cell_in_csv_returns_400_naming_the_column(client: Client, model_dir: Any) -> None:
    header = ",".join(model_dir.features)
    values = [repr(v) for v in row(model_dir)]
    values[1] = ""
    response = client.post(
        "/invocations",
        content=header + "\n" + ",".join(values),
        headers={"Content-Type": "text/csv"},
    )
    assert_error(response, 400, "INVALID_PARAMETER_VALUE", "mean texture", "empty value")


@pytest.mark.parametrize(
    "body",
    [
        {"inputs": []},
        {"instances": []},
        {"dataframe_records": []},
        {"dataframe_split": {"columns": [], "data": []}},
    ],
)
def test_empty_batch_returns_400(client: Client, body: dict[str, Any]) -> None:
    response = client.post("/invocations", json=body)
    assert_error(response, 400, "INVALID_PARAMETER_VALUE")
    assert "empty batch" in response.json()["message"] or "missing" in response.json()["message"]


def test_empty_csv_returns_400(client: Client) -> None:
    response = client.post("/invocations", content=b"", headers={"Content-Type": "text/csv"})
    assert_error(response, 400, "INVALID_PARAMETER_VALUE", "empty batch")


def test_too_many_rows_returns_413_naming_the_limit(client: Client, model_dir: Any) -> None:
    response = client.post("/invocations", json={"inputs": [row(model_dir)] * 501})
    assert_error(response, 413, "REQUEST_LIMIT_EXCEEDED", "501 rows", "500", "SERVING_MAX_ROWS")


def test_body_over_the_byte_limit_returns_413(model_dir: Any) -> None:
    small = ready_client(model_dir.models, max_body_bytes=1000)
    try:
        response = small.post("/invocations", json={"inputs": [row(model_dir)] * 10})
        assert_error(response, 413, "REQUEST_LIMIT_EXCEEDED", "SERVING_MAX_BODY_BYTES")
    finally:
        small.close()


def test_server_keeps_serving_after_every_kind_of_bad_input(client: Client, model_dir: Any) -> None:
    for content in (b"{", b"[]", b'{"inputs": [["x"]]}', b'{"inputs": []}', b"\xff\xfe"):
        response = client.post(
            "/invocations", content=content, headers={"Content-Type": "application/json"}
        )
        assert 400 <= response.status_code < 500
    response = client.post("/invocations", json={"inputs": [row(model_dir)]})
    assert response.status_code == 200


def test_invalid_utf8_csv_returns_400(client: Client) -> None:
    response = client.post(
        "/invocations", content=b"\xff\xfe\x00", headers={"Content-Type": "text/csv"}
    )
    assert_error(response, 400, "BAD_REQUEST", "UTF-8")


def test_value_beyond_float32_range_returns_400_on_onnx_and_is_served_by_sklearn(
    client: Client, model_dir: Any
) -> None:
    values = row(model_dir)
    values[4] = 1e300
    response = client.post("/invocations", json={"inputs": [values]})
    if client.app.settings.runtime == "onnx":
        assert_error(response, 400, "INVALID_PARAMETER_VALUE", model_dir.features[4], "float32")
    else:
        assert response.status_code == 200
