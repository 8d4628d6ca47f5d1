"""Open Inference Protocol (KServe V2): health, metadata and inference as KServe and Triton
clients send them (JSON tensors, one tensor per column, and Triton's binary extension)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from tests.support.serving import Client

NAME = "breast-cancer-classifier"
INFER = f"/v2/models/{NAME}/infer"


def matrix(model_dir: Any, n: int) -> list[list[float]]:
    return [[g["inputs"][f] for f in model_dir.features] for g in model_dir.golden[:n]]


def outputs(response: Any) -> dict[str, dict[str, Any]]:
    assert response.status_code == 200, response.text
    return {o["name"]: o for o in response.json()["outputs"]}


def test_liveness_answers_200(client: Client) -> None:
    response = client.get("/v2/health/live")
    assert (response.status_code, response.json()) == (200, {"live": True})


def test_readiness_answers_200_once_the_model_is_verified(client: Client) -> None:
    response = client.get("/v2/health/ready")
    assert (response.status_code, response.json()) == (200, {"ready": True})


def test_server_metadata_names_the_binary_extension(client: Client) -> None:
    body = client.get("/v2").json()
    assert body["name"] and body["version"]
    assert "binary_tensor_data" in body["extensions"]


@pytest.mark.parametrize("prefix", [f"/v2/models/{NAME}", f"/v2/models/{NAME}/versions/3"])
def test_model_metadata_describes_input_and_output_tensors(
    client: Client, model_dir: Any, prefix: str
) -> None:
    body = client.get(prefix).json()
    assert body["name"] == NAME and body["versions"] == ["3"]
    assert body["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 30]}]
    names = {o["name"]: o for o in body["outputs"]}
    assert names["label"] == {"name": "label", "datatype": "INT64", "shape": [-1]}
    assert names["probabilities"]["shape"] == [-1, 2]
    assert body["parameters"]["feature_names"] == model_dir.features


@pytest.mark.parametrize("prefix", [f"/v2/models/{NAME}", f"/v2/models/{NAME}/versions/3"])
def test_model_ready_answers_200(client: Client, prefix: str) -> None:
    response = client.get(prefix + "/ready")
    assert (response.status_code, response.json()["ready"]) == (200, True)


def test_infer_with_one_nested_tensor_returns_label_and_probabilities(
    client: Client, model_dir: Any
) -> None:
    body = {"id": "abc", "inputs": [{"name": "input", "shape": [3, 30], "datatype": "FP64",
                                     "data": matrix(model_dir, 3)}]}  # fmt: skip
    response = client.post(INFER, json=body)
    out = outputs(response)
    assert response.json()["id"] == "abc"
    assert response.json()["model_name"] == NAME and response.json()["model_version"] == "3"
    assert out["label"]["data"] == [g["label"] for g in model_dir.golden[:3]]
    assert out["label"]["shape"] == [3] and out["label"]["datatype"] == "INT64"
    assert out["probabilities"]["shape"] == [3, 2]
    assert len(out["probabilities"]["data"]) == 6


def test_infer_accepts_flat_row_major_data_and_fp32(client: Client, model_dir: Any) -> None:
    flat = [v for r in matrix(model_dir, 2) for v in r]
    body = {"inputs": [{"name": "input-0", "shape": [2, 30], "datatype": "FP32", "data": flat}]}
    assert outputs(client.post(INFER, json=body))["label"]["data"] == [
        g["label"] for g in model_dir.golden[:2]
    ]


def test_infer_accepts_one_tensor_per_column_as_kserve_sklearn_does(
    client: Client, model_dir: Any
) -> None:
    inputs = [
        {
            "name": f,
            "shape": [2],
            "datatype": "FP64",
            "data": [g["inputs"][f] for g in model_dir.golden[:2]],
        }
        for f in model_dir.features
    ]
    out = outputs(client.post(INFER, json={"inputs": inputs}))
    assert out["label"]["data"] == [g["label"] for g in model_dir.golden[:2]]


def test_infer_reads_triton_binary_tensor_extension(client: Client, model_dir: Any) -> None:
    x = np.array(matrix(model_dir, 4), dtype=np.float32)
    header = json.dumps({
        "inputs": [{"name": "input", "shape": [4, 30], "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes}}],
        "outputs": [{"name": "label", "parameters": {"binary_data": True}}],
    }).encode()  # fmt: skip
    response = client.post(
        INFER,
        content=header + x.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header)),
                 "Content-Type": "application/octet-stream"},
    )  # fmt: skip
    out = outputs(response)
    assert list(out) == ["label"]
    assert out["label"]["data"] == [g["label"] for g in model_dir.golden[:4]]


def test_requested_outputs_limit_the_answer(client: Client, model_dir: Any) -> None:
    body = {"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP64",
                        "data": matrix(model_dir, 1)}],
            "outputs": [{"name": "probabilities"}]}  # fmt: skip
    assert list(outputs(client.post(INFER, json=body))) == ["probabilities"]


def test_versioned_infer_route_answers(client: Client, model_dir: Any) -> None:
    body = {"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP64",
                        "data": matrix(model_dir, 1)}]}  # fmt: skip
    response = client.post(f"/v2/models/{NAME}/versions/3/infer", json=body)
    assert outputs(response)["label"]["data"] == [model_dir.golden[0]["label"]]


def test_unknown_model_name_returns_404_with_both_error_keys(client: Client) -> None:
    response = client.post("/v2/models/other/infer", json={"inputs": []})
    assert response.status_code == 404
    body = response.json()
    assert body["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    assert "other" in body["message"] and body["error"] == body["message"]


def test_unknown_model_version_returns_404(client: Client) -> None:
    assert client.get(f"/v2/models/{NAME}/versions/99").status_code == 404


@pytest.mark.parametrize(
    ("tensor", "words"),
    [
        (
            {"name": "input", "shape": [1, 29], "datatype": "FP64", "data": [0.0] * 29},
            ["[1, 29]", "30"],
        ),
        ({"name": "input", "shape": [2, 30], "datatype": "FP64", "data": [0.0] * 30}, ["needs 60"]),
        ({"name": "input", "shape": [1, 30], "datatype": "BYTES", "data": ["a"] * 30}, ["BYTES"]),
        ({"name": "input", "shape": [1, 30], "datatype": "FP64", "data": ["a"] * 30}, ["numbers"]),
        ({"name": "input", "shape": [1, 30], "datatype": "FP64", "data": [True] * 30}, ["numbers"]),
        (
            {"name": "input", "shape": [1, 30], "datatype": "INT64", "data": [0.5] * 30},
            ["fractions"],
        ),
        ({"name": "input", "shape": [0, 30], "datatype": "FP64", "data": []}, ["empty batch"]),
        ({"name": "input", "shape": "1,30", "datatype": "FP64", "data": []}, ["shape"]),
    ],
)
def test_malformed_tensor_returns_400_naming_the_problem(
    client: Client, tensor: dict[str, Any], words: list[str]
) -> None:
    response = client.post(INFER, json={"inputs": [tensor]})
    assert response.status_code == 400, response.text
    for word in words:
        assert word in response.json()["message"]


def test_per_column_tensors_with_a_missing_column_return_400_naming_it(
    client: Client, model_dir: Any
) -> None:
    inputs = [
        {"name": f, "shape": [1], "datatype": "FP64", "data": [1.0]} for f in model_dir.features[1:]
    ]
    response = client.post(INFER, json={"inputs": inputs})
    assert response.status_code == 400
    assert "mean radius" in response.json()["message"]


def test_nan_in_a_tensor_returns_400_naming_the_column(client: Client, model_dir: Any) -> None:
    values = [repr(v) for v in matrix(model_dir, 1)[0]]
    values[5] = "NaN"
    body = ('{"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP64", "data": ['
            + ",".join(values) + "]}]}")  # fmt: skip
    response = client.post(INFER, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert model_dir.features[5] in response.json()["message"]


def test_unknown_requested_output_returns_400(client: Client, model_dir: Any) -> None:
    tensor = {"name": "input", "shape": [1, 30], "datatype": "FP64", "data": matrix(model_dir, 1)}
    body = {"inputs": [tensor], "outputs": [{"name": "logits"}]}
    response = client.post(INFER, json=body)
    assert response.status_code == 400 and "logits" in response.json()["message"]


def test_binary_size_that_does_not_match_the_shape_returns_400(client: Client) -> None:
    header = json.dumps({"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 8}}]}).encode()  # fmt: skip
    response = client.post(
        INFER, content=header + b"\0" * 8,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )  # fmt: skip
    assert response.status_code == 400 and "binary_data_size" in response.json()["message"]


def test_too_many_rows_in_a_tensor_returns_413(client: Client) -> None:
    body = {"inputs": [{"name": "input", "shape": [501, 30], "datatype": "FP64",
                        "data": [1.0] * 501 * 30}]}  # fmt: skip
    assert client.post(INFER, json=body).status_code == 413


def test_a_shape_of_more_than_two_dimensions_returns_400_not_500(client: Client) -> None:
    # Found by the contract fuzzer: 13 dimensions whose sizes overflow numpy's reshape.
    shape = [2573, 1537, 4369, 155, 576, 2701434215676, 2**61, 6188639831033, 3459, 0]
    body = {"inputs": [{"name": "x", "shape": shape, "datatype": "INT64", "data": [[], []]}]}
    response = client.post(INFER, json=body)
    assert response.status_code == 400 and "1 or 2 dimensions" in response.json()["message"]
