"""Micro-batching (serving.batching) through the real server process: concurrent 1-row requests
share model calls, and each still gets exactly the answer, status, request id and access-log
line it gets alone."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.contract import clients as http_clients
from tests.support.serving import Server, start_server

pytestmark = pytest.mark.integration

MODEL = "/v2/models/breast-cancer-classifier/infer"


def _rows(model_dir: Any) -> list[list[float]]:
    return [[g["inputs"][f] for f in model_dir.features] for g in model_dir.golden]


def _batches(server: Server) -> tuple[float, float]:
    text = http_clients.get(server.url + "/metrics").text
    found = dict(re.findall(r"^(serving_batch(?:es|ed_rows)_total) (\S+)$", text, re.M))
    return float(found["serving_batches_total"]), float(found["serving_batched_rows_total"])


async def _concurrently(
    server: Server, requests: list[tuple[str, dict[str, Any]]], *, clients: int
) -> list[httpx.Response]:
    """Each request on one of ``clients`` keep-alive connections, all sent at once."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=server.url, limits=limits, timeout=30, verify=http_clients.tls()
    ) as client:
        return await asyncio.gather(*(client.post(path, **kw) for path, kw in requests))


@pytest.fixture
def batching_server(model_dir: Any, tmp_path: Path) -> Any:
    server = start_server(model_dir.models, tmp_path)  # batching on: the default
    server.wait_ready()
    yield server
    server.stop()


def test_concurrent_1_row_requests_are_batched_and_get_exactly_the_sequential_answers(
    batching_server: Server, model_dir: Any
) -> None:
    server, rows = batching_server, _rows(model_dir)
    with http_clients.client(server.url, timeout=5) as client:
        metadata = client.get("/metadata").json()
        assert metadata["batching"] == {"enabled": True, "window_ms": 0.0, "max_rows": 32}
        alone = [client.post("/invocations", json={"inputs": [r]}).json() for r in rows]
        infer_alone = [
            client.post(MODEL, json=_infer(r, outputs=i % 2 == 0)).json()
            for i, r in enumerate(rows)
        ]
    assert _batches(server) == (0, 0), "a request alone never waits for a batch"
    assert alone == [{"predictions": [g["label"]]} for g in model_dir.golden]

    requests = [
        (
            "/invocations",
            {"json": {"inputs": [rows[i % len(rows)]]}, "headers": {"X-Request-ID": f"mlflow-{i}"}},
        )
        for i in range(4 * len(rows))
    ] + [
        (
            MODEL,
            {
                "json": _infer(rows[i % len(rows)], outputs=i % 2 == 0),
                "headers": {"X-Request-ID": f"oip-{i}"},
            },
        )
        for i in range(2 * len(rows))
    ]
    for _ in range(5):  # until the scheduler let requests arrive together (first try, so far)
        responses = asyncio.run(_concurrently(server, requests, clients=32))
        batches, batched = _batches(server)
        if batches:
            break
    assert batches > 0 and batched > batches, (batches, batched, server.logs()[-2000:])

    n = len(rows)
    for i, response in enumerate(responses):
        assert response.status_code == 200, response.text
        if i < 4 * n:
            assert response.headers["x-request-id"] == f"mlflow-{i}"
            assert response.json() == alone[i % n]
        else:
            j = i - 4 * n
            assert response.headers["x-request-id"] == f"oip-{j}"
            assert response.json() == {**infer_alone[j % n], "id": f"oip-{j}"}
    ids = {f"mlflow-{i}" for i in range(4 * n)} | {f"oip-{j}" for j in range(2 * n)}
    access = server.access(lambda lines: ids <= {a["request_id"] for a in lines})
    per_id = Counter(a["request_id"] for a in access if a["request_id"] in ids)
    assert set(per_id) == ids
    assert set(per_id.values()) == {1}, "one access-log line per request"


def _infer(row: list[float], *, outputs: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "inputs": [{"name": "input", "shape": [1, len(row)], "datatype": "FP64", "data": row}]
    }
    if outputs:
        body["outputs"] = [{"name": "label"}, {"name": "probabilities"}]
    return body


def test_a_bad_request_among_concurrent_good_ones_gets_its_own_400_and_they_their_200s(
    batching_server: Server, model_dir: Any
) -> None:
    server, rows = batching_server, _rows(model_dir)
    good = {"json": {"inputs": [rows[0]]}}
    beyond_float32 = {"json": {"inputs": [[1e39, *rows[0][1:]]]}}
    short_row = {"json": {"inputs": [rows[0][1:]]}}
    broken = {"content": b'{"inputs": [[1', "headers": {"Content-Type": "application/json"}}
    kinds = [good] * 12 + [beyond_float32] + [good] * 12 + [short_row] + [good] * 6 + [broken]
    expected = {id(good): 200, id(beyond_float32): 400, id(short_row): 400, id(broken): 400}
    for _ in range(5):
        before = _batches(server)
        responses = asyncio.run(
            _concurrently(server, [("/invocations", k) for k in kinds], clients=32)
        )
        if _batches(server)[0] > before[0]:
            break
    else:
        pytest.fail(f"no batch formed in 5 rounds:\n{server.logs()[-2000:]}")
    label = model_dir.golden[0]["label"]
    for kind, response in zip(kinds, responses, strict=True):
        assert response.status_code == expected[id(kind)], response.text
        if kind is good:
            assert response.json() == {"predictions": [label]}
        else:
            assert response.json()["error_code"] in ("BAD_REQUEST", "INVALID_PARAMETER_VALUE")
    assert "beyond float32" in responses[12].json()["message"]
    assert "Traceback" not in server.logs()


def test_batching_can_be_turned_off_with_max_rows_1(model_dir: Any, tmp_path: Path) -> None:
    server = start_server(model_dir.models, tmp_path, SERVING_BATCH_MAX_ROWS="1")
    try:
        server.wait_ready()
        metadata = http_clients.get(server.url + "/metadata").json()
        assert metadata["batching"] == {"enabled": False, "window_ms": 0.0, "max_rows": 1}
        body = {"json": {"inputs": [_rows(model_dir)[0]]}}
        responses = asyncio.run(_concurrently(server, [("/invocations", body)] * 64, clients=32))
        assert {r.status_code for r in responses} == {200}
        assert _batches(server) == (0, 0)
    finally:
        server.stop()


def test_the_shutdown_log_says_how_many_rows_went_in_how_many_batches(
    batching_server: Server, model_dir: Any
) -> None:
    body = {"json": {"inputs": [_rows(model_dir)[0]]}}
    for _ in range(5):
        asyncio.run(_concurrently(batching_server, [("/invocations", body)] * 64, clients=32))
        batches, batched = _batches(batching_server)
        if batches:
            break
    assert batching_server.stop() == 0
    lines = [json.loads(line) for line in batching_server.logs().splitlines() if "batches" in line]
    assert any(
        line["message"] == f"micro-batching: {batched:.0f} rows in {batches:.0f} batches"
        for line in lines
    ), lines
