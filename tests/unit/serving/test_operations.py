"""Metadata, OpenAPI, docs, Prometheus metrics, request ids, access log, routing errors and
settings: what operators and client generators rely on."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from typing import Any

import pytest

from serving.errors import SettingsError
from serving.logs import BatchedHandler, JsonFormatter, direct_handler
from serving.settings import Settings
from tests.support.serving import REPO, Client


def test_metadata_carries_the_facts_the_image_labels_carry(client: Client, model_dir: Any) -> None:
    body = client.get("/metadata").json()
    card = model_dir.card
    for key in ("model_name", "model_version", "run_id", "git_commit", "data_hash", "sha256"):
        assert body[key] == card[key]
    assert body["classes"] == [0, 1]
    assert body["input_schema"] == card["features"]
    assert set(body["holdout_metrics"]) == {"accuracy", "roc_auc"}
    assert 0.9 < body["holdout_metrics"]["accuracy"] <= 1


def test_openapi_describes_the_real_feature_columns(client: Client, model_dir: Any) -> None:
    document = client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.")
    record = document["components"]["schemas"]["Record"]
    assert record["required"] == model_dir.features
    assert record["properties"]["mean radius"] == {"type": "number", "format": "double"}
    assert record["additionalProperties"] is False
    assert {"/invocations", "/v2/models/{name}/infer", "/metadata"} <= set(document["paths"])
    assert document["components"]["schemas"]["Predictions"]["properties"]["predictions"][
        "items"
    ] == {"type": "integer", "enum": [0, 1]}


def test_docs_page_lists_routes_and_an_example_without_a_cdn(client: Client) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    for text in ("/invocations", "/v2/models/{name}/infer", "/openapi.json", "curl", "mean radius"):
        assert text in response.text


def test_metrics_count_requests_by_route_and_status_and_predictions_by_class(
    onnx_client: Client, model_dir: Any
) -> None:
    rows = [[g["inputs"][f] for f in model_dir.features] for g in model_dir.golden[:5]]
    onnx_client.post("/invocations", json={"inputs": rows})
    onnx_client.post("/invocations", json={"inputs": []})
    onnx_client.get("/v2/models/breast-cancer-classifier/versions/3")
    text = onnx_client.get("/metrics").text
    assert 'serving_requests_total{method="POST",route="/invocations",status="200"}' in text
    assert 'serving_requests_total{method="POST",route="/invocations",status="400"}' in text
    assert 'route="/v2/models/{name}/versions/{version}"' in text
    assert "serving_request_duration_seconds_bucket" in text
    assert 'serving_predictions_total{class="1"}' in text
    assert 'serving_model_info{git_commit="unknown",model_name="breast-cancer-classifier"' in text
    assert "serving_ready 1.0" in text


def test_request_id_is_honoured_when_sent(client: Client) -> None:
    response = client.get("/v2/health/live", headers={"X-Request-ID": "trace-42"})
    assert response.headers["x-request-id"] == "trace-42"


def test_request_id_is_generated_when_absent(client: Client) -> None:
    first = client.get("/v2/health/live").headers["x-request-id"]
    second = client.get("/v2/health/live").headers["x-request-id"]
    assert len(first) == 32 and first != second


def test_each_request_writes_one_structured_access_log_line(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="serving.access"):
        client.get("/nowhere", headers={"X-Request-ID": "r-1"})
    records = [r for r in caplog.records if r.name == "serving.access"]
    assert len(records) == 1
    line = json.loads(JsonFormatter().format(records[0]))
    assert line["method"] == "GET" and line["path"] == "/nowhere" and line["status"] == 404
    assert line["request_id"] == "r-1" and line["latency_ms"] >= 0
    assert line["level"] == "info" and line["ts"].endswith("Z")


def test_the_servers_access_log_writes_the_line_a_record_would(client: Client) -> None:
    """Configured as the server configures it (one BatchedHandler, no propagation), the
    access log skips the LogRecord; the line must be the one the record would have made."""
    stream = io.StringIO()
    handler = BatchedHandler(stream)
    handler.setFormatter(JsonFormatter())
    access = logging.getLogger("serving.access")
    saved = access.handlers[:], access.propagate, access.level
    access.handlers[:], access.propagate = [handler], False
    access.setLevel(logging.INFO)
    try:
        assert direct_handler(access, logging.INFO) is handler
        client.get("/nowhere", headers={"X-Request-ID": "r-2"})
        handler.flush()
    finally:
        access.handlers[:], access.propagate = saved[:2]
        access.setLevel(saved[2])
    (written,) = stream.getvalue().splitlines()
    line = json.loads(written)
    fields = {k: line[k] for k in ("method", "path", "status", "latency_ms", "request_id")}
    record = access.makeRecord(
        access.name, logging.INFO, "", 0, "%s %s %d", ("GET", "/nowhere", 404), None,
        extra={"fields": fields},
    )  # fmt: skip
    want = json.loads(JsonFormatter().format(record))
    assert list(line) == list(want)  # same keys, same order
    assert {**line, "ts": ""} == {**want, "ts": ""} and line["request_id"] == "r-2"
    assert line["ts"][:16] == want["ts"][:16] and line["ts"].endswith("Z")


def test_unknown_route_returns_404_envelope(client: Client) -> None:
    response = client.get("/predict")
    assert response.status_code == 404
    assert response.json()["error_code"] == "ENDPOINT_NOT_FOUND"


def test_wrong_method_returns_405_with_allow_header(client: Client) -> None:
    response = client.get("/invocations")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["error_code"] == "METHOD_NOT_ALLOWED"


def test_settings_are_read_from_documented_environment_variables() -> None:
    settings = Settings.from_env(
        {"SERVING_PORT": "9000", "SERVING_WORKERS": "2", "SERVING_MAX_ROWS": "50",
         "SERVING_LOG_LEVEL": "DEBUG", "SERVING_RUNTIME": "sklearn", "SERVING_ACCESS_LOG": "false",
         "SERVING_MODEL_DIR": "/srv/models", "SERVING_GRACEFUL_TIMEOUT": "5"}
    )  # fmt: skip
    assert (settings.port, settings.workers, settings.max_rows) == (9000, 2, 50)
    assert (settings.log_level, settings.runtime, settings.access_log) == (
        "debug",
        "sklearn",
        False,
    )
    assert str(settings.model_dir) == "/srv/models" and settings.graceful_timeout == 5


@pytest.mark.parametrize(
    ("name", "value"),
    [("SERVING_PORT", "http"), ("SERVING_WORKERS", "0"), ("SERVING_RUNTIME", "tensorrt"),
     ("SERVING_ACCESS_LOG", "maybe"), ("SERVING_MAX_ROWS", "-1")],
)  # fmt: skip
def test_a_bad_setting_is_an_error_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_micro_batching_is_on_by_default_with_window_0_and_max_rows_1_turns_it_off() -> None:
    default = Settings.from_env({})
    assert (default.batch_window_ms, default.batch_max_rows, default.batching) == (0, 32, True)
    tuned = Settings.from_env({"SERVING_BATCH_WINDOW_MS": "1.5", "SERVING_BATCH_MAX_ROWS": "8"})
    assert (tuned.batch_window_ms, tuned.batch_max_rows, tuned.batching) == (1.5, 8, True)
    assert not Settings.from_env({"SERVING_BATCH_MAX_ROWS": "1"}).batching


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [("SERVING_BATCH_WINDOW_MS", "-1", r"SERVING_BATCH_WINDOW_MS=-1 is outside 0\.\.1000"),
     ("SERVING_BATCH_WINDOW_MS", "soon", r"SERVING_BATCH_WINDOW_MS='soon' is not a number"),
     ("SERVING_BATCH_WINDOW_MS", "nan", r"SERVING_BATCH_WINDOW_MS=nan is outside"),
     ("SERVING_BATCH_WINDOW_MS", "inf", r"SERVING_BATCH_WINDOW_MS=inf is outside"),
     ("SERVING_BATCH_MAX_ROWS", "0", r"SERVING_BATCH_MAX_ROWS=0 is outside 1\.\.10000"),
     ("SERVING_BATCH_MAX_ROWS", "2.5", r"SERVING_BATCH_MAX_ROWS='2.5' is not an integer")],
)  # fmt: skip
def test_a_bad_batching_setting_is_a_one_line_error_naming_the_variable(
    name: str, value: str, message: str
) -> None:
    with pytest.raises(SettingsError, match=f"^{message}") as raised:
        Settings.from_env({name: value})
    assert "\n" not in str(raised.value)


def test_a_bad_batching_setting_stops_the_server_before_it_listens() -> None:
    environ = {**os.environ, "PYTHONPATH": str(REPO), "SERVING_BATCH_WINDOW_MS": "-2"}
    done = subprocess.run(
        [sys.executable, "-m", "serving", "models"],
        env=environ, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "SERVING_BATCH_WINDOW_MS=-2 is outside 0..1000" in done.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("runtime", ["onnx", "sklearn"])
def test_serving_works_without_the_packages_the_serving_image_lacks(
    model_dir: Any, runtime: str
) -> None:
    """The image holds only requirements/serving.in: serving must load, verify and predict with
    MLflow, pandas, pydantic, skl2onnx and onnx made unimportable."""
    banned = ("mlflow", "pandas", "pydantic", "skl2onnx", "onnx", "fastapi", "starlette")
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "class Absent:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {banned!r}:\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Absent())\n"
        "import numpy as np\n"
        "from serving.app import create_app\nfrom serving.settings import Settings\n"
        f"app = create_app(model_dir=Path({str(model_dir.models)!r}), "
        f"settings=Settings(runtime={runtime!r}))\n"
        "app.start(); assert app.state.wait(30), app.state.error\n"
        "print(app.state.served.loaded.runtime.predict(np.zeros((1, 30))).tolist())\n"
        "print('sklearn' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    prediction, sklearn = result.stdout.splitlines()
    assert prediction in ("[0]", "[1]")
    assert sklearn == str(runtime == "sklearn")  # ONNX serving never pays for scikit-learn


def test_access_lines_are_written_in_order_in_batches_within_the_flush_delay() -> None:
    import asyncio
    import io
    import logging

    from serving.logs import BatchedHandler

    stream = io.StringIO()
    handler = BatchedHandler(stream, delay_s=0.05, max_bytes=10_000)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.batched")
    logger.handlers[:], logger.propagate = [handler], False
    logger.setLevel(logging.INFO)

    def lines() -> list[str]:
        return [json.loads(line)["message"] for line in stream.getvalue().splitlines()]

    async def on_the_loop() -> tuple[list[str], list[str]]:
        for i in range(5):
            logger.info("line %d", i)
        waiting = lines()
        await asyncio.sleep(0.2)
        return waiting, lines()

    waiting, written = asyncio.run(on_the_loop())
    assert waiting == [] and written == [f"line {i}" for i in range(5)]

    logger.info("off the loop")  # no loop to flush it later: written at once
    assert lines()[-1] == "off the loop"

    async def many() -> list[str]:
        for i in range(200):  # ~100 bytes a line: past max_bytes long before the delay
            logger.info("bulk %03d", i)
        return lines()

    assert len(asyncio.run(many())) > 5 + 1 + 50
    handler.flush()  # what logging.shutdown does at exit
    assert lines()[-1] == "bulk 199" and len(lines()) == 206
