"""A model with categorical columns and missing values (the Palmer penguins), on both runtimes:
text and nulls through every format, what is refused and why, unseen categories counted, and a
regressor's answers."""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator
from typing import Any

import pytest

from serving.schema import MAX_TEXT_LENGTH
from tests.support.serving import Client, ModelDir, build_typed_model_dir, ready_client


@pytest.fixture(scope="session")
def penguins(tmp_path_factory: pytest.TempPathFactory) -> ModelDir:
    return build_typed_model_dir(tmp_path_factory.mktemp("penguins"))


@pytest.fixture(scope="session")
def masses(tmp_path_factory: pytest.TempPathFactory) -> ModelDir:
    return build_typed_model_dir(tmp_path_factory.mktemp("masses"), task="regression")


@pytest.fixture(scope="session", params=["onnx", "sklearn"])
def typed(request: pytest.FixtureRequest, penguins: ModelDir) -> Iterator[Client]:
    client = ready_client(penguins.models, runtime=request.param, max_rows=500)
    yield client
    client.close()


@pytest.fixture(scope="session", params=["onnx", "sklearn"])
def regressor(request: pytest.FixtureRequest, masses: ModelDir) -> Iterator[Client]:
    client = ready_client(masses.models, runtime=request.param, max_rows=500)
    yield client
    client.close()


def full_record(model: ModelDir) -> dict[str, Any]:
    return dict(next(g["inputs"] for g in model.golden if None not in g["inputs"].values()))


def nullable(model: ModelDir) -> list[str]:
    return [f["name"] for f in model.card["features"] if f["nullable"]]


def strict(model: ModelDir) -> list[str]:
    return [f["name"] for f in model.card["features"] if not f["nullable"]]


def assert_400(response: Any, *words: str) -> None:
    assert response.status_code == 400, response.text
    for word in words:
        assert word in response.json()["message"], response.json()["message"]


def test_the_card_records_kind_dtype_nullability_and_categories(penguins: ModelDir) -> None:
    features = {f["name"]: f for f in penguins.card["features"]}
    assert features["island"] == {
        "name": "island",
        "dtype": "string",
        "kind": "categorical",
        "nullable": False,
        "categories": ["Biscoe", "Dream", "Torgersen"],
    }
    assert features["sex"]["kind"] == "categorical" and features["sex"]["nullable"]
    assert features["bill_length_mm"]["kind"] == "numeric"
    assert features["bill_length_mm"]["dtype"] == "float64"
    assert penguins.card["classes"] == ["Adelie", "Chinstrap", "Gentoo"]


def test_golden_rows_hold_text_nulls_and_an_unseen_category(penguins: ModelDir) -> None:
    values = [v for g in penguins.golden for v in g["inputs"].values()]
    assert any(isinstance(v, str) for v in values) and None in values
    assert any(
        g["inputs"]["island"] not in ("Biscoe", "Dream", "Torgersen") for g in penguins.golden
    )


def test_every_json_format_and_csv_return_the_golden_labels(
    typed: Client, penguins: ModelDir
) -> None:
    names = penguins.features
    records = [g["inputs"] for g in penguins.golden]
    rows = [[r[n] for n in names] for r in records]
    expected = [g["label"] for g in penguins.golden]
    cell = lambda v: "" if v is None else repr(v) if isinstance(v, float) else v  # noqa: E731
    csv = ",".join(names) + "\n" + "\n".join(",".join(cell(v) for v in row) for row in rows)
    for kwargs in (
        {"json": {"dataframe_records": records}},
        {"json": {"dataframe_split": {"columns": names, "data": rows}}},
        {"json": {"dataframe_split": {"columns": names[::-1], "data": [r[::-1] for r in rows]}}},
        {"json": {"instances": records}},
        {"json": {"inputs": rows}},
        {"json": {"inputs": {n: [r[n] for r in records] for n in names}}},
        {"content": csv.encode(), "headers": {"Content-Type": "text/csv"}},
    ):
        response = typed.post("/invocations", **kwargs)
        assert response.status_code == 200, (kwargs.keys(), response.text)
        assert response.json()["predictions"] == expected


def test_v2_takes_one_tensor_per_column_with_bytes_for_text_in_json_and_binary(
    typed: Client, penguins: ModelDir
) -> None:
    features = penguins.card["features"]
    records = [g["inputs"] for g in penguins.golden if None not in g["inputs"].values()]
    expected = [g["label"] for g in penguins.golden if None not in g["inputs"].values()]
    path = f"/v2/models/{penguins.card['model_name']}/infer"
    tensors = [
        {
            "name": f["name"],
            "shape": [len(records), 1],
            "datatype": "BYTES" if f["kind"] == "categorical" else "FP64",
            "data": [[r[f["name"]]] for r in records],
        }
        for f in features
    ]
    response = typed.post(path, json={"inputs": tensors})
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["label"]["data"] == expected and outputs["label"]["datatype"] == "BYTES"
    # Triton's binary extension: BYTES elements as a 4-byte little-endian length and UTF-8.
    binary, described = b"", []
    for f in features:
        values = [r[f["name"]] for r in records]
        if f["kind"] == "categorical":
            chunk = b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)
            datatype = "BYTES"
        else:
            chunk, datatype = struct.pack(f"<{len(values)}d", *values), "FP64"
        binary += chunk
        described.append(
            {
                "name": f["name"],
                "shape": [len(values)],
                "datatype": datatype,
                "parameters": {"binary_data_size": len(chunk)},
            }
        )
    header = json.dumps({"inputs": described}).encode()
    response = typed.post(
        path,
        content=header + binary,
        headers={
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(len(header)),
        },
    )
    assert response.status_code == 200, response.text
    labels = next(o for o in response.json()["outputs"] if o["name"] == "label")
    assert labels["data"] == expected


def test_a_null_is_served_where_the_model_takes_one_and_a_400_naming_the_column_elsewhere(
    typed: Client, penguins: ModelDir
) -> None:
    assert nullable(penguins) and strict(penguins)
    for name in nullable(penguins):
        body = {"dataframe_records": [full_record(penguins) | {name: None}]}
        assert typed.post("/invocations", json=body).status_code == 200, name
    for name in strict(penguins):
        body = {"dataframe_records": [full_record(penguins) | {name: None}]}
        assert_400(typed.post("/invocations", json=body), repr(name), "null is not allowed")


def test_an_empty_string_in_a_categorical_column_counts_as_missing(
    typed: Client, penguins: ModelDir
) -> None:
    (name,) = [n for n in strict(penguins) if n in ("island", "species")]
    body = {"dataframe_records": [full_record(penguins) | {name: ""}]}
    assert_400(typed.post("/invocations", json=body), repr(name), "null")
    (text,) = [n for n in nullable(penguins) if n == "sex"]
    body = {"dataframe_records": [full_record(penguins) | {text: ""}]}
    assert typed.post("/invocations", json=body).status_code == 200


def test_an_unseen_category_is_served_and_counted_per_column(
    typed: Client, penguins: ModelDir
) -> None:
    def counted() -> float:
        text = typed.get("/metrics").text
        found = re.search(
            r'^serving_unknown_categories_total\{column="island"\} (\S+)$', text, re.M
        )
        return float(found.group(1)) if found else 0.0

    before = counted()
    records = [full_record(penguins) | {"island": "Atlantis"}] * 3
    response = typed.post("/invocations", json={"dataframe_records": records})
    assert response.status_code == 200 and len(response.json()["predictions"]) == 3
    assert counted() == before + 3


@pytest.mark.parametrize(
    ("column", "value", "words"),
    [
        ("island", 3, ("expected a string", "number")),
        ("island", True, ("expected a string", "boolean")),
        ("island", ["Dream"], ("expected a string", "list")),
        ("bill_length_mm", "41.5", ("expected a number", "string")),
        ("bill_length_mm", False, ("expected a number", "boolean")),
        ("island", "x" * (MAX_TEXT_LENGTH + 1), (f"at most {MAX_TEXT_LENGTH}",)),
    ],
)
def test_a_value_of_the_wrong_kind_is_a_400_naming_the_column(
    typed: Client, penguins: ModelDir, column: str, value: Any, words: tuple[str, ...]
) -> None:
    for body in (
        {"dataframe_records": [full_record(penguins) | {column: value}]},
        {
            "dataframe_split": {
                "columns": penguins.features,
                "data": [[(full_record(penguins) | {column: value})[n] for n in penguins.features]],
            }
        },
    ):
        assert_400(typed.post("/invocations", json=body), repr(column), *words)


def test_csv_with_text_in_a_numeric_column_is_a_400_naming_the_column(
    typed: Client, penguins: ModelDir
) -> None:
    record = full_record(penguins) | {"bill_depth_mm": "deep"}
    body = ",".join(penguins.features) + "\n" + ",".join(str(record[n]) for n in penguins.features)
    response = typed.post(
        "/invocations", content=body.encode(), headers={"Content-Type": "text/csv"}
    )
    assert_400(response, "'bill_depth_mm'", "expected a number")


def test_v2_a_text_column_sent_as_numbers_or_a_matrix_is_a_400(
    typed: Client, penguins: ModelDir
) -> None:
    path = f"/v2/models/{penguins.card['model_name']}/infer"
    record = full_record(penguins)
    tensors = [
        {"name": n, "shape": [1], "datatype": "FP64", "data": [1.0 if isinstance(v, str) else v]}
        for n, v in record.items()
    ]
    assert_400(typed.post(path, json={"inputs": tensors}), "BYTES")
    matrix = {"name": "input", "shape": [1, len(record)], "datatype": "FP64", "data": [0.0] * 6}
    assert_400(typed.post(path, json={"inputs": [matrix]}), "one tensor per column")
    bad = [{**t, "datatype": "BYTES", "parameters": {"binary_data_size": 10**9}} for t in tensors]
    assert typed.post(path, json={"inputs": bad[:1]}).status_code == 400


def test_openapi_declares_strings_with_an_enum_and_nullable_columns(
    typed: Client, penguins: ModelDir
) -> None:
    schemas = typed.get("/openapi.json").json()["components"]["schemas"]
    props = schemas["Record"]["properties"]
    assert props["island"]["type"] == "string"
    assert props["island"]["enum"] == ["Biscoe", "Dream", "Torgersen"]
    assert "nullable" not in props["island"]
    assert props["sex"]["nullable"] is True and props["sex"]["enum"] == ["female", "male", None]
    assert props["bill_length_mm"]["type"] == "number"
    assert (
        "BYTES"
        in schemas["InferenceRequest"]["properties"]["inputs"]["items"]["properties"]["datatype"][
            "enum"
        ]
    )
    meta = typed.get(f"/v2/models/{penguins.card['model_name']}").json()
    assert {i["name"]: i["datatype"] for i in meta["inputs"]}["island"] == "BYTES"


def test_a_regressor_answers_values_as_mlflow_does_and_fp64_over_v2(
    regressor: Client, masses: ModelDir
) -> None:
    records = [g["inputs"] for g in masses.golden]
    expected = [g["label"] for g in masses.golden]
    response = regressor.post("/invocations", json={"dataframe_records": records})
    assert response.status_code == 200, response.text
    served = response.json()["predictions"]
    assert all(isinstance(v, float) for v in served)
    assert max(abs(a - b) / max(1.0, abs(b)) for a, b in zip(served, expected, strict=True)) <= 1e-5
    path = f"/v2/models/{masses.card['model_name']}/infer"
    from serving.card import read_card
    from serving.protocols.oip import request_tensors

    features = read_card(masses.models / "model.json").features
    answer = regressor.post(path, json={"inputs": request_tensors(features, records)})
    assert answer.status_code == 200, answer.text
    (output,) = answer.json()["outputs"]
    assert output["name"] == "prediction" and output["datatype"] == "FP64"
    assert output["shape"] == [len(records)]
    assert (
        regressor.post(
            path,
            json={"inputs": request_tensors(features, records), "outputs": [{"name": "label"}]},
        ).status_code
        == 400
    )
    metrics = regressor.get("/metrics").text
    assert 'serving_predictions_total{class="value"}' in metrics
    assert (
        regressor.get("/openapi.json").json()["components"]["schemas"]["Predictions"]["properties"][
            "predictions"
        ]["items"]["type"]
        == "number"
    )


def test_a_column_trained_from_booleans_takes_json_booleans_and_others_still_refuse_them() -> None:
    """pandas writes a bool column as "False"/"True" categories; an MLflow client with a bool
    column in its DataFrame sends JSON true/false: that is the category, not a wrong kind."""
    from serving.card import Feature
    from serving.errors import ServingError
    from serving.schema import Columns, InputSchema

    schema = InputSchema(
        [
            Feature("organic", "string", "categorical", categories=("False", "True")),
            Feature("color", "string", "categorical", nullable=True, categories=("red", "ruby")),
        ],
        max_rows=10,
    )
    records = [{"organic": True, "color": "red"}, {"organic": False, "color": None}]
    as_bools = schema.from_records(records, "dataframe_records", check_booleans=True)
    as_text = schema.from_records(
        [{"organic": "True", "color": "red"}, {"organic": "False", "color": None}],
        "dataframe_records",
        check_booleans=True,
    )
    assert isinstance(as_bools, Columns) and isinstance(as_text, Columns)
    assert [list(a) for a in as_bools.arrays] == [list(a) for a in as_text.arrays]
    assert as_bools.unknown == as_text.unknown
    with pytest.raises(ServingError, match=r"'color' \(row 0\).*expected a string.*boolean"):
        schema.from_records([{"organic": True, "color": True}], "x", check_booleans=True)


def test_nan_in_a_nullable_text_column_is_missing_as_pandas_means_it() -> None:
    """MLflow's client sends a DataFrame's missing text value as NaN; a column that takes nulls
    takes it as one, a column that does not still says so."""
    from serving.card import Feature
    from serving.errors import ServingError
    from serving.schema import Columns, InputSchema

    schema = InputSchema(
        [
            Feature("color", "string", "categorical", nullable=True, categories=("red", "ruby")),
            Feature("grape", "string", "categorical", categories=("nebbiolo", "barbera")),
        ],
        max_rows=10,
    )
    nan = float("nan")
    rows = [[nan, "nebbiolo"], ["red", "barbera"]]  # dataframe_split's data, as MLflow sends it
    got = schema.from_rows(rows, "dataframe_split.data", check_booleans=True)
    assert isinstance(got, Columns) and list(got.arrays[0]) == ["", "red"]
    by_column = schema.from_columns(
        {"color": [nan, "red"], "grape": ["nebbiolo", "barbera"]}, "inputs", check_booleans=True
    )
    assert isinstance(by_column, Columns) and list(by_column.arrays[0]) == ["", "red"]
    with pytest.raises(ServingError, match=r"'grape'"):
        schema.from_rows([["red", nan]], "x", check_booleans=True)
