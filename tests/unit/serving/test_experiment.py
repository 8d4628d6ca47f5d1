"""A/B evidence from the service itself: variant labels on metrics, one exposure line per
prediction, and POST /feedback validated like every other input."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.ab.assignment import user_hash as pipeline_user_hash
from pipeline.ab.outcomes import from_logs
from serving.errors import SettingsError
from serving.experiment import MAX_FEEDBACK_BYTES, user_hash
from serving.logs import JsonFormatter
from serving.settings import Settings
from tests.support.serving import Client, ready_client
from tests.unit.ab.conftest import experiment

ARM_HEADERS = {
    "X-User-Id": "alice",
    "X-Experiment-Share": "50",
    "X-Experiment-Bucket": "7",
    "X-Experiment-Assigned": "b",
}


@pytest.fixture(scope="module")
def arm_b(model_dir: Any) -> Iterator[Client]:
    """The candidate's service in experiment exp-test."""
    client = ready_client(
        model_dir.models, runtime="onnx", variant="b", experiment="exp-test", max_rows=500
    )
    yield client
    client.close()


def rows(model_dir: Any, n: int = 1) -> list[list[float]]:
    return [[g["inputs"][f] for f in model_dir.features] for g in model_dir.golden[:n]]


def lines(caplog: pytest.LogCaptureFixture, logger: str) -> list[dict[str, Any]]:
    formatter = JsonFormatter()
    return [json.loads(formatter.format(r)) for r in caplog.records if r.name == logger]


def test_each_prediction_writes_one_exposure_line_with_the_hashed_user(
    arm_b: Client, model_dir: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="serving.exposure"):
        answer = arm_b.post(
            "/invocations",
            json={"inputs": rows(model_dir, 3)},
            headers={**ARM_HEADERS, "X-Request-ID": "req-1"},
        )
        arm_b.post(
            "/v2/models/breast-cancer-classifier/infer",
            json={
                "inputs": [
                    {
                        "name": "input",
                        "shape": [1, len(model_dir.features)],
                        "datatype": "FP64",
                        "data": rows(model_dir)[0],
                    }
                ]
            },
            headers={"X-User-Id": "bob"},
        )
        arm_b.get("/metadata", headers=ARM_HEADERS)  # not a prediction: no exposure
    exposures = lines(caplog, "serving.exposure")
    assert len(exposures) == 2
    first, second = exposures
    assert first["predictions"] == answer.json()["predictions"]
    assert {k: first[k] for k in ("experiment", "variant", "assigned", "fallback")} == {
        "experiment": "exp-test",
        "variant": "b",
        "assigned": "b",
        "fallback": False,
    }
    assert (first["share"], first["bucket"], first["rows"]) == (50, 7, 3)
    assert first["request_id"] == "req-1"
    assert first["user"] == user_hash("alice") != "alice"
    assert first["model_version"] == model_dir.card["model_version"]
    assert second["share"] is None  # it did not pass the split: the analysis ignores it
    assert "alice" not in caplog.text and "bob" not in caplog.text


def test_a_request_the_proxy_assigned_to_b_but_served_by_a_is_tagged_fallback(
    model_dir: Any, caplog: pytest.LogCaptureFixture
) -> None:
    arm_a = ready_client(model_dir.models, runtime="onnx", variant="a", experiment="exp-test")
    try:
        with caplog.at_level(logging.INFO, logger="serving.exposure"):
            arm_a.post("/invocations", json={"inputs": rows(model_dir)}, headers=ARM_HEADERS)
    finally:
        arm_a.close()
    (line,) = lines(caplog, "serving.exposure")
    assert (line["variant"], line["assigned"], line["fallback"]) == ("a", "b", True)


def test_outside_an_experiment_no_exposure_is_logged_and_metrics_keep_their_labels(
    onnx_client: Client, model_dir: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="serving.exposure"):
        onnx_client.post("/invocations", json={"inputs": rows(model_dir)}, headers=ARM_HEADERS)
    assert lines(caplog, "serving.exposure") == []
    assert 'variant="' not in onnx_client.get("/metrics").text


def test_metrics_of_an_arm_carry_its_variant_and_experiment(arm_b: Client, model_dir: Any) -> None:
    arm_b.post("/invocations", json={"inputs": rows(model_dir)})
    text = arm_b.get("/metrics").text
    assert (
        'serving_requests_total{experiment="exp-test",method="POST",route="/invocations",'
        'status="200",variant="b"}' in text
    )
    assert 'serving_request_duration_seconds_bucket{experiment="exp-test",le="0.001"' in text


def test_feedback_by_request_id_or_user_is_accepted_and_logged_hashed(
    arm_b: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="serving.feedback"):
        by_request = arm_b.post("/feedback", json={"request_id": "req-1", "outcome": 1})
        by_user = arm_b.post("/feedback", json={"user": "alice", "outcome": False})
        by_label = arm_b.post("/feedback", json={"request_id": "req-1", "label": 0})
    assert [r.status_code for r in (by_request, by_user, by_label)] == [200, 200, 200]
    assert by_request.json() == {"accepted": 1}
    logged = lines(caplog, "serving.feedback")
    assert [line.get("outcome", line.get("label")) for line in logged] == [1, 0, 0]
    assert logged[1]["user"] == user_hash("alice")
    assert "alice" not in caplog.text


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"outcome": 1}, 400, "request_id or user"),
        ({"request_id": "r", "outcome": 1, "label": 1}, 400, "exactly one of outcome or label"),
        ({"request_id": "r"}, 400, "exactly one of outcome or label"),
        ({"request_id": "r", "outcome": 2}, 400, "outcome must be 0, 1"),
        ({"request_id": "r", "outcome": 0.5}, 400, "outcome must be 0, 1"),
        ({"request_id": "r", "outcome": "1"}, 400, "outcome must be 0, 1"),
        ({"request_id": "r", "label": 7}, 400, "not one of the model's classes [0, 1]"),
        ({"request_id": "r", "label": True}, 400, "not one of the model's classes"),
        ({"user": "u", "label": 1}, 400, "give its request_id"),
        ({"user": "u", "outcome": 1, "extra": 1}, 400, "unknown feedback field(s) ['extra']"),
        ({"user": "", "outcome": 1}, 400, "user must be a printable string of 1..256"),
        ({"user": "u" * 257, "outcome": 1}, 400, "1..256"),
        ({"request_id": "a\nb", "outcome": 1}, 400, "printable"),
        ({"request_id": ["r"], "outcome": 1}, 400, "request_id must be"),
        ([{"user": "u", "outcome": 1}], 400, "a JSON object"),
    ],
)
def test_bad_feedback_is_a_400_naming_the_field(
    arm_b: Client, body: Any, status: int, words: str
) -> None:
    answer = arm_b.post("/feedback", json=body)
    assert answer.status_code == status, answer.text
    assert words in answer.json()["message"]


def test_the_worst_feedback_bodies_are_refused_before_they_are_parsed(arm_b: Client) -> None:
    huge = arm_b.post(
        "/feedback",
        content=b'{"user": "' + b"u" * (MAX_FEEDBACK_BYTES * 100) + b'", "outcome": 1}',
        headers={"Content-Type": "application/json"},
    )
    assert huge.status_code == 413
    deep = arm_b.post(
        "/feedback", content=b"[" * 4000, headers={"Content-Type": "application/json"}
    )
    assert deep.status_code == 400
    text = arm_b.post("/feedback", content=b"user=u", headers={"Content-Type": "text/plain"})
    assert text.status_code == 415
    assert arm_b.get("/feedback").status_code == 405
    assert arm_b.get("/v2/health/ready").status_code == 200  # still serving


def test_openapi_documents_feedback_with_the_model_labels(arm_b: Client) -> None:
    document = arm_b.get("/openapi.json").json()
    operation = document["paths"]["/feedback"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/FeedbackRequest"
    }
    assert set(operation["responses"]) >= {"200", "400", "413", "415"}
    schema = document["components"]["schemas"]["FeedbackRequest"]
    assert schema["properties"]["label"]["enum"] == [0, 1]
    assert schema["additionalProperties"] is False
    assert "/feedback" in arm_b.get("/docs").text


def test_the_exposure_log_feeds_the_analysis_end_to_end(
    arm_b: Client, model_dir: Any, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    formatter = JsonFormatter()
    with caplog.at_level(logging.INFO, logger="serving"):
        for i in range(6):
            headers = {**ARM_HEADERS, "X-User-Id": f"user-{i}", "X-Request-ID": f"r{i}"}
            arm_b.post("/invocations", json={"inputs": rows(model_dir)}, headers=headers)
        arm_b.post("/feedback", json={"user": "user-0", "outcome": 1})
        arm_b.post("/feedback", json={"request_id": "r1", "outcome": 1})
        arm_b.post("/feedback", json={"request_id": "r2", "outcome": 0})
    log = tmp_path / "b.log"
    log.write_text(
        "\n".join(
            "model_b.1.x@node | " + formatter.format(r)
            for r in caplog.records
            if r.name in ("serving.exposure", "serving.feedback")
        )
    )
    observed = from_logs([log], experiment())
    assert (observed.a.n, observed.b.n) == (0, 6)
    assert int(observed.b.outcomes.sum()) == 2  # user-0 by user, user-1 by request id


def test_serving_and_the_pipeline_hash_user_keys_alike() -> None:
    for key in ("alice", "ü-ñ", "x" * 256):
        assert user_hash(key) == pipeline_user_hash(key)


def test_experiment_settings_are_validated_at_start_up() -> None:
    settings = Settings.from_env(
        {"SERVING_VARIANT": "b", "SERVING_EXPERIMENT": "exp-1", "SERVING_USER_HEADER": "X-Uid"}
    )
    assert (settings.variant, settings.experiment, settings.user_header) == ("b", "exp-1", "X-Uid")
    with pytest.raises(SettingsError, match="SERVING_VARIANT"):
        Settings.from_env({"SERVING_VARIANT": "c"})
    with pytest.raises(SettingsError, match="SERVING_EXPERIMENT"):
        Settings.from_env({"SERVING_EXPERIMENT": "bad id; drop"})
    with pytest.raises(SettingsError, match="SERVING_USER_HEADER"):
        Settings.from_env({"SERVING_USER_HEADER": "X-User\r\nX: 1"})
