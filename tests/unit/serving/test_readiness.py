"""Readiness is not liveness: a model that fails to verify or load never reports ready, the
process says why, and liveness keeps answering."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from serving.app import create_app
from serving.settings import Settings
from tests.support.serving import Client


def not_ready_client(model_dir: Path, **settings: Any) -> Client:
    app = create_app(model_dir=model_dir, settings=Settings(**settings))
    app.start()
    assert app.state.wait(30) is False
    return Client(app)


def test_tampered_model_file_never_becomes_ready(
    fresh_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (fresh_model_dir / "model.pkl").open("ab") as handle:
        handle.write(b"\0")
    with caplog.at_level(logging.ERROR, logger="serving"):
        client = not_ready_client(fresh_model_dir)
    try:
        ready = client.get("/v2/health/ready")
        assert ready.status_code == 503
        assert ready.json()["status"] == "failed" and "sha256" in ready.json()["message"]
        assert client.get("/ping").status_code == 503
        assert client.get("/v2/health/live").status_code == 200
        response = client.post("/invocations", json={"inputs": [[0.0] * 30]})
        assert response.status_code == 503
        assert response.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
        assert any("never be ready" in r.message and "sha256" in r.message for r in caplog.records)
    finally:
        client.close()


def test_tampered_onnx_file_is_never_fallen_back_from(fresh_model_dir: Path) -> None:
    with (fresh_model_dir / "model.onnx").open("ab") as handle:
        handle.write(b"\0")
    client = not_ready_client(fresh_model_dir, runtime="auto")
    try:
        assert "model.onnx" in client.get("/v2/health/ready").json()["message"]
    finally:
        client.close()


def test_model_that_disagrees_with_the_golden_set_never_becomes_ready(
    fresh_model_dir: Path,
) -> None:
    golden = json.loads((fresh_model_dir / "golden.json").read_text())
    golden["rows"][0]["label"] = 1 - golden["rows"][0]["label"]
    (fresh_model_dir / "golden.json").write_text(json.dumps(golden))
    client = not_ready_client(fresh_model_dir, runtime="sklearn")
    try:
        assert "golden.json" in client.get("/v2/health/ready").json()["message"]
    finally:
        client.close()


def test_missing_model_card_never_becomes_ready(tmp_path: Path) -> None:
    client = not_ready_client(tmp_path)
    try:
        assert "model.json does not exist" in client.get("/v2/health/ready").json()["message"]
    finally:
        client.close()


def test_onnx_runtime_required_but_absent_never_becomes_ready(fresh_model_dir: Path) -> None:
    card = json.loads((fresh_model_dir / "model.json").read_text())
    card["onnx"] = None
    (fresh_model_dir / "model.json").write_text(json.dumps(card))
    client = not_ready_client(fresh_model_dir, runtime="onnx")
    try:
        assert "SERVING_RUNTIME=onnx" in client.get("/v2/health/ready").json()["message"]
    finally:
        client.close()


def test_auto_runtime_falls_back_to_sklearn_when_there_is_no_onnx_model(
    fresh_model_dir: Path,
) -> None:
    card = json.loads((fresh_model_dir / "model.json").read_text())
    card["onnx"] = None
    (fresh_model_dir / "model.json").write_text(json.dumps(card))
    (fresh_model_dir / "model.onnx").unlink()
    app = create_app(model_dir=fresh_model_dir, settings=Settings(runtime="auto"))
    app.start()
    assert app.state.wait(30)
    assert app.state.served is not None and app.state.served.loaded.runtime.name == "sklearn"


def test_auto_runtime_prefers_onnx_when_it_passes_the_golden_check(model_dir: Any) -> None:
    app = create_app(model_dir=model_dir.models, settings=Settings(runtime="auto"))
    app.start()
    assert app.state.wait(30)
    assert app.state.served is not None and app.state.served.loaded.runtime.name == "onnx"


def test_lifespan_startup_starts_loading_and_liveness_answers_before_ready(model_dir: Any) -> None:
    app = create_app(model_dir=model_dir.models, settings=Settings())
    sent: list[dict[str, Any]] = []
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

    async def receive() -> dict[str, Any]:
        return inbox.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(dict(message))

    asyncio.run(app({"type": "lifespan"}, receive, send))
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert app.state.wait(30)
