"""Micro-batching in process: requests driven through the ASGI app with the server's task set in
the scope (serving.server puts it there), so the batch is formed deterministically."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from serving.app import TASKS, ServingApp
from tests.support import serving as fixtures


@pytest.fixture
def app(model_dir: Any) -> Iterator[ServingApp]:
    client = fixtures.ready_client(model_dir.models, runtime="onnx")
    yield client.app
    client.close()


async def _post(
    app: ServingApp, body: bytes, *, request_id: str, tasks: set[object]
) -> tuple[int, dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/invocations",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id.encode()),
        ],
        TASKS: tasks,
    }
    await app(scope, receive, send)
    return sent[0]["status"], json.loads(sent[1]["body"])


async def _together(app: ServingApp, bodies: list[bytes]) -> list[tuple[int, dict[str, Any]]]:
    tasks: set[object] = {object() for _ in bodies}  # as many requests in flight as bodies
    return await asyncio.gather(
        *(_post(app, b, request_id=f"r{i}", tasks=tasks) for i, b in enumerate(bodies))
    )


def _bodies(model_dir: Any, n: int) -> list[bytes]:
    golden = model_dir.golden
    rows = [[golden[i % len(golden)]["inputs"][f] for f in model_dir.features] for i in range(n)]
    return [json.dumps({"inputs": [row]}).encode() for row in rows]


def test_requests_in_flight_together_share_one_model_call_and_keep_their_own_answers(
    app: ServingApp, model_dir: Any
) -> None:
    bodies = _bodies(model_dir, 8)
    alone = [asyncio.run(_post(app, b, request_id="a", tasks={object()})) for b in bodies]
    assert app.metrics.batch_totals == (0, 0)
    together = asyncio.run(_together(app, bodies))
    assert together == alone
    assert [status for status, _ in together] == [200] * 8
    assert app.metrics.batch_totals == (1, 8)


def test_a_runtime_failure_fails_every_request_of_the_batch_with_the_500_it_has_alone(
    app: ServingApp, model_dir: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(x: Any) -> Any:
        raise RuntimeError("onnxruntime fell over")

    served = app.state.served
    assert served is not None and served.batcher is not None
    monkeypatch.setattr(served.loaded.runtime.session, "run", broken)  # type: ignore[attr-defined]
    monkeypatch.setattr(served.batcher, "_run", broken)
    bodies = _bodies(model_dir, 4)
    alone = asyncio.run(_post(app, bodies[0], request_id="r0", tasks={object()}))
    together = asyncio.run(_together(app, bodies))
    assert alone == (500, {"error_code": "INTERNAL_ERROR", "message": "internal error; request r0"})
    assert together == [
        (500, {"error_code": "INTERNAL_ERROR", "message": f"internal error; request r{i}"})
        for i in range(4)
    ]
    assert app.metrics.batch_totals == (0, 0)


def test_a_client_gone_while_its_batch_waits_does_not_break_the_batch(
    app: ServingApp, model_dir: Any
) -> None:
    bodies = _bodies(model_dir, 6)
    alone = [asyncio.run(_post(app, b, request_id="a", tasks={object()})) for b in bodies]

    async def scenario() -> list[Any]:
        in_flight: set[object] = {object() for _ in range(len(bodies) + 1)}  # one never joins
        requests = [
            asyncio.ensure_future(_post(app, b, request_id=f"r{i}", tasks=in_flight))
            for i, b in enumerate(bodies)
        ]
        await asyncio.sleep(0)  # each request ran up to waiting for its batch
        requests[2].cancel()  # as the server cancels a request whose client went away
        return await asyncio.wait_for(asyncio.gather(*requests, return_exceptions=True), 10)

    results = asyncio.run(scenario())
    assert isinstance(results[2], asyncio.CancelledError)
    assert [r for i, r in enumerate(results) if i != 2] == [
        a for i, a in enumerate(alone) if i != 2
    ]
    assert app.metrics.batch_totals == (1, 6)
