"""Oversized and hostile input is refused before it is allocated, with a 4xx naming the limit
and the setting that raises it, and large bodies wait for a slot (serving/limits.py). The
connection-level bounds (deadlines, head size, connections) are tested against the real server
process: tests/integration/serving/test_server_bounds.py.

Memory is measured with tracemalloc (numpy and orjson's Python objects report to it), in this
process: the payloads are sized so that the old behaviour (numpy inferring a string dtype,
a CSV read whole) would need hundreds of MB while the bounded one needs a few.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from serving.app import ServingApp, create_app
from serving.limits import derived_body_limit, json_parse_cost
from serving.settings import Settings
from tests.support.serving import Client, ready_client

MAX_ROWS = 500  # the session clients'


@pytest.fixture(scope="module")
def roomy(model_dir: Any) -> Any:
    """MAX_ROWS rows, but a body limit far above what they take: what is bounded here is
    rows, cells and parse memory, not bytes."""
    client = ready_client(model_dir.models, runtime="onnx", max_rows=MAX_ROWS, max_body_bytes=2**27)
    yield client
    client.close()


@pytest.fixture(scope="module")
def full(model_dir: Any) -> Any:
    """The default limits (10,000 rows, the derived body limit)."""
    client = ready_client(model_dir.models, runtime="onnx")
    yield client
    client.close()


def row(model_dir: Any, i: int = 0) -> list[float]:
    return [model_dir.golden[i]["inputs"][f] for f in model_dir.features]


def peak_mb(call: Callable[[], Any]) -> tuple[Any, float]:
    tracemalloc.start()
    try:
        result = call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak / 2**20


def message(response: Any) -> str:
    return str(response.json()["message"])


# -- rows, cells and types ---------------------------------------------------------------------


@pytest.mark.parametrize("key", ["instances", "inputs"])
def test_one_long_string_in_a_full_batch_is_refused_without_allocating_for_it(
    onnx_client: Client, model_dir: Any, key: str
) -> None:
    """numpy inferring a dtype from these rows asked for 500 x 30 x 2,000 x 4 = 114 MiB."""
    rows: list[list[Any]] = [[0.0] * 30 for _ in range(MAX_ROWS)]
    rows[-1][-1] = "x" * 2000
    response, peak = peak_mb(lambda: onnx_client.post("/invocations", json={key: rows}))
    assert response.status_code == 400
    assert "'worst fractal dimension' (row 499)" in message(response)
    assert "(2000 characters)" in message(response) and len(message(response)) < 300
    assert peak < 10, f"{peak:.0f} MiB traced for a 0.1 MB body"


def test_a_long_string_in_a_v2_tensor_is_refused_without_allocating_for_it(
    onnx_client: Client, model_dir: Any
) -> None:
    data: list[Any] = [0.0] * (MAX_ROWS * 30)
    data[0] = "x" * 2000
    tensor = {"name": "input", "shape": [MAX_ROWS, 30], "datatype": "FP64", "data": data}
    path = "/v2/models/breast-cancer-classifier/infer"
    response, peak = peak_mb(lambda: onnx_client.post(path, json={"inputs": [tensor]}))
    assert response.status_code == 400 and "must hold only numbers" in message(response)
    assert peak < 10, f"{peak:.0f} MiB traced"


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("1.5", "(row 1) in {key}: expected a number, got string '1.5'"),
        (None, "(row 1) in {key}: expected a number, got null"),
        ([1.0], "(row 1) in {key}: expected a number, got list"),
        ({"a": 1}, "(row 1) in {key}: expected a number, got object"),
        (10**400, "number is infinity"),  # the JSON parser's words, with the offset
    ],
    ids=["numeric_string", "null", "list", "object", "huge_int"],
)
def test_a_value_that_is_not_a_number_is_never_converted_into_one(
    client: Client, model_dir: Any, value: Any, says: str
) -> None:
    bad = row(model_dir)
    bad[4] = value
    good = row(model_dir)
    for key in ("instances", "dataframe_records"):
        rows: list[Any] = [good, bad]
        if key == "dataframe_records":
            rows = [dict(zip(model_dir.features, r, strict=True)) for r in rows]
        response = client.post("/invocations", json={key: rows})
        assert response.status_code == 400, response.text
        assert says.format(key=key) in message(response)


def test_a_two_million_wide_row_is_a_400_not_a_413_and_costs_no_matrix(full: Client) -> None:
    response = full.post(
        "/invocations",
        content=b'{"instances": [[' + b"0," * 1_999_999 + b"0]]}",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert "has 2000000 values; the model takes 30 columns" in message(response)


def test_sixty_thousand_column_names_are_checked_in_linear_time(full: Client) -> None:
    names = [f"c{i}" for i in range(60_000)]
    started = time.perf_counter()
    response = full.post(
        "/invocations", json={"dataframe_split": {"columns": names, "data": [[0] * 60_000]}}
    )
    assert time.perf_counter() - started < 5  # names.count(c) per name: 3.6e9 comparisons
    assert response.status_code == 400
    assert "... and 59990 more" in message(response) and len(message(response)) < 2000


def test_v2_outputs_named_twice_are_refused(onnx_client: Client, model_dir: Any) -> None:
    tensor = {"name": "input", "shape": [1, 30], "datatype": "FP64", "data": [row(model_dir)]}
    body = {"inputs": [tensor], "outputs": [{"name": "probabilities"}] * 1000}
    response = onnx_client.post("/v2/models/breast-cancer-classifier/infer", json=body)
    assert response.status_code == 400 and "more than once" in message(response)


@pytest.mark.parametrize(
    ("shape", "status"),
    [([1, 2_000_000], 400), ([10**12, 30], 413), ([MAX_ROWS + 1], 413)],
)
def test_a_v2_shape_is_checked_before_its_data(
    onnx_client: Client, shape: list[int], status: int
) -> None:
    tensor = {"name": "input", "shape": shape, "datatype": "FP64", "data": [0.0]}
    response = onnx_client.post(
        "/v2/models/breast-cancer-classifier/infer", json={"inputs": [tensor]}
    )
    assert response.status_code == status, response.text
    assert ("SERVING_MAX_ROWS" in message(response)) == (status == 413)


# -- CSV ------------------------------------------------------------------------------------------


def test_a_csv_of_200000_rows_is_refused_at_row_max_rows_plus_one(
    roomy: Client, model_dir: Any
) -> None:
    """Read whole, these rows were 6 million cells as Python strings: ~400 MB."""
    line = ",".join(["0"] * 30) + "\n"
    body = (",".join(model_dir.features) + "\n" + line * 200_000).encode()  # 12 MB
    response, peak = peak_mb(
        lambda: roomy.post("/invocations", content=body, headers={"Content-Type": "text/csv"})
    )
    assert response.status_code == 413
    assert f"more than {MAX_ROWS} rows" in message(response)
    assert "SERVING_MAX_ROWS" in message(response)
    assert peak < 40, f"{peak:.0f} MiB traced for a 12 MB body"  # the client copies it twice


def test_a_csv_row_longer_than_the_columns_can_be_is_refused_before_it_is_split(
    roomy: Client, model_dir: Any
) -> None:
    body = (",".join(model_dir.features) + "\n" + "0," * 2_000_000 + "0\n").encode()
    response, peak = peak_mb(
        lambda: roomy.post("/invocations", content=body, headers={"Content-Type": "text/csv"})
    )
    assert response.status_code == 400 and "CSV row 0 is longer than" in message(response)
    assert peak < 20, f"{peak:.0f} MiB traced"  # 2M cells as strings: ~110 MB


def test_a_csv_of_empty_lines_is_refused(roomy: Client, model_dir: Any) -> None:
    body = (",".join(model_dir.features) + "\n" + "\n" * 1_000_000).encode()
    response = roomy.post("/invocations", content=body, headers={"Content-Type": "text/csv"})
    assert response.status_code == 413 and "empty lines" in message(response)


# -- bytes and parse memory -----------------------------------------------------------------


def test_the_default_body_limit_holds_the_most_verbose_full_batch_and_is_published(
    onnx_client: Client, model_dir: Any
) -> None:
    limits = onnx_client.get("/metadata").json()["limits"]
    assert limits["max_body_bytes"] == derived_body_limit(model_dir.features, MAX_ROWS)
    assert limits["max_body_bytes_derived"] is True
    tiny = -2.2250738585072014e-308  # the longest float64 repr
    records = [dict.fromkeys(model_dir.features, tiny) for _ in range(MAX_ROWS)]
    body = json.dumps({"dataframe_records": records}, indent=4).encode()
    assert len(body) <= limits["max_body_bytes"]
    response = onnx_client.post(
        "/invocations", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200 and len(response.json()["predictions"]) == MAX_ROWS


def test_a_body_past_the_limit_is_refused_from_its_content_length_naming_the_setting(
    onnx_client: Client,
) -> None:
    limit = onnx_client.get("/metadata").json()["limits"]["max_body_bytes"]
    response = onnx_client.post(
        "/invocations",
        content=b"{" + b" " * limit + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413 and "SERVING_MAX_BODY_BYTES" in message(response)
    assert response.headers["connection"] == "close"  # the rest of the body is never read


def test_a_body_of_empty_arrays_is_refused_for_its_parse_cost_before_it_is_parsed(
    model_dir: Any,
) -> None:
    client = ready_client(model_dir.models, runtime="onnx", max_parse_bytes=64 * 2**20)
    try:
        body = b'{"instances": [' + b"[]," * 2_000_000 + b"[]]}"  # 6 MB; ~200 MB to parse
        response, peak = peak_mb(
            lambda: client.post(
                "/invocations", content=body, headers={"Content-Type": "application/json"}
            )
        )
        assert response.status_code == 413, response.text
        assert "SERVING_MAX_PARSE_BYTES" in message(response)
        assert peak < 40, f"{peak:.0f} MiB traced"  # the client copies the 6 MB body
    finally:
        client.close()


PEAK_RSS = """
import resource, sys, orjson
body = sys.stdin.buffer.read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
parsed = orjson.loads(body)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


@pytest.mark.parametrize(
    "body",
    [
        b"[" + b"[]," * 2_000_000 + b"[]]",
        b"[" + b"0.5," * 2_000_000 + b"0.5]",
        b"[" + b'"ab",' * 1_000_000 + b'"ab"]',
        b"[" + b'{"a": 1.5, "b": [1]},' * 300_000 + b"{}]",
        json.dumps([{f"feature {i}": 0.123456789 for i in range(30)}] * 10_000).encode(),
    ],
    ids=["empty_arrays", "floats", "strings", "objects", "records"],
)
def test_the_parse_cost_estimate_is_above_what_parsing_really_takes(body: bytes) -> None:
    """The 413 is decided on the estimate: it must never be below the real peak (measured in a
    fresh process, as the growth of its peak RSS while orjson parses the body)."""
    done = subprocess.run(
        [sys.executable, "-c", PEAK_RSS], input=body, capture_output=True, check=True
    )
    real = int(done.stdout)
    assert json_parse_cost(body) >= real, (json_parse_cost(body) / 2**20, real / 2**20)


# -- deadlines, slots, memory -------------------------------------------------------------------


async def _call(
    app: ServingApp, body_chunks: list[bytes], *, stall: bool = False
) -> tuple[int, dict[bytes, bytes], bytes]:
    """One POST /invocations through the ASGI interface, the body in chunks; ``stall``: the
    last chunk never comes."""
    length = sum(map(len, body_chunks))
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/invocations",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(length).encode()),
        ],
    }
    pending = list(body_chunks)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if stall and len(pending) == 1:
            await asyncio.Event().wait()  # the client never sends the rest
        chunk = pending.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), 10)  # a server that reads, hangs
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]


def _app(model_dir: Any, **settings: Any) -> ServingApp:
    app = create_app(model_dir=model_dir.models, settings=Settings(runtime="onnx", **settings))
    app.start()
    assert app.state.wait(30), app.state.error
    return app


def test_large_bodies_past_the_slots_and_the_queue_get_503_with_retry_after(
    model_dir: Any,
) -> None:
    """One slot, no queue: while a large body is being received, another is refused at once;
    a small one is still served on the loop."""
    app = _app(model_dir, large_requests=1, large_queue=0, large_body_bytes=1000)
    good = json.dumps({"inputs": [row(model_dir)] * 5}).encode()  # ~2 KB: large

    async def scenario() -> list[tuple[int, dict[bytes, bytes], bytes]]:
        first = asyncio.ensure_future(_call(app, [good[:50], good[50:]], stall=True))
        await asyncio.sleep(0.2)  # the first holds the only slot, its body half received
        second = await _call(app, [good])
        small = await _call(app, [json.dumps({"inputs": [row(model_dir)]}).encode()])
        first.cancel()
        return [second, small]

    (busy, busy_headers, busy_body), (small, _, _) = asyncio.run(scenario())
    assert busy == 503 and busy_headers[b"retry-after"] == b"1"
    assert b"SERVING_LARGE_REQUESTS" in busy_body
    assert small == 200


def test_a_large_request_is_parsed_and_predicted_off_the_loop_and_gives_the_same_answer(
    model_dir: Any,
) -> None:
    app = _app(model_dir, large_body_bytes=100)
    rows = [row(model_dir, i) for i in range(40)]
    status, _, body = asyncio.run(_call(app, [json.dumps({"inputs": rows}).encode()]))
    assert status == 200
    assert json.loads(body)["predictions"] == [g["label"] for g in model_dir.golden[:40]]
    assert app._pool is not None  # it went through the worker thread


def test_running_out_of_memory_is_a_413_naming_the_setting_not_a_500(
    model_dir: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _app(model_dir)
    served = app.state.served
    assert served is not None

    def exhausted(x: Any) -> Any:
        raise MemoryError

    monkeypatch.setattr(served.loaded.runtime, "predict", exhausted)
    status, _, body = asyncio.run(_call(app, [json.dumps({"inputs": [row(model_dir)]}).encode()]))
    assert status == 413 and b"SERVING_MAX_ROWS" in body


def test_a_post_to_a_server_that_is_not_ready_is_not_read_and_closes_the_connection(
    fresh_model_dir: Any,
) -> None:
    with (fresh_model_dir / "model.pkl").open("ab") as handle:
        handle.write(b"\0")  # never ready
    app = create_app(model_dir=fresh_model_dir, settings=Settings())
    app.start()
    assert app.state.wait(30) is False
    status, headers, _ = asyncio.run(_call(app, [b'{"inputs": ', b"[[1]]}"], stall=True))
    assert status == 503 and headers[b"connection"] == b"close"
