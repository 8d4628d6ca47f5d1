"""Hostile and oversized input: the server answers each with its 4xx, stays alive, keeps its
memory, keeps answering liveness, and still gives the validated answer (conftest's ``case``).

The first case is the legitimate worst case, a full batch of ``max_rows`` rows through every
format: it must succeed, and its peak memory is what the hostile cases are held against in the
report. The payloads are built from the server's own limits (``/metadata``), so the suite
needs no knowledge of how the server was configured.
"""

from __future__ import annotations

import csv
import io
import json
import random
import socket
import string
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.contract import clients
from tests.contract.test_golden_parity import assert_answers
from tests.hostile.conftest import Case, ServerLimits
from tests.hostile.wire import Answer, connect, exchange, head, read_answer

JSON_FORMATS = (
    "dataframe_split",
    "dataframe_records",
    "instances",
    "inputs",
    "inputs_columns",
    "v2_tensor",
    "v2_flat",
    "v2_columns",
)
FORMATS = (*JSON_FORMATS, "csv")
JSON_HEADERS = {"Content-Type": "application/json"}
CSV_HEADERS = {"Content-Type": "text/csv"}


# -- payloads ----------------------------------------------------------------------------------


def encode(
    fmt: str,
    rows: list[list[Any]],
    features: list[str],
    infer_path: str,
    text: frozenset[str] = frozenset(),
) -> tuple[str, bytes, dict[str, str]]:
    """(path, body, headers) carrying ``rows`` (values of any JSON type) in format ``fmt``;
    ``text``: the categorical columns, sent as ``BYTES`` tensors in ``v2_columns``."""
    n, width = len(rows), len(features)
    if fmt == "csv":
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(features)
        writer.writerows(rows)
        return "/invocations", text.getvalue().encode(), CSV_HEADERS
    payload: dict[str, Any]
    if fmt == "dataframe_split":
        payload = {"dataframe_split": {"columns": features, "data": rows}}
    elif fmt == "dataframe_records":
        payload = {"dataframe_records": [dict(zip(features, r, strict=True)) for r in rows]}
    elif fmt in ("instances", "inputs"):
        payload = {fmt: rows}
    elif fmt == "inputs_columns":
        payload = {"inputs": {f: [r[j] for r in rows] for j, f in enumerate(features)}}
    elif fmt == "v2_tensor":
        tensor = {"name": "input", "shape": [n, width], "datatype": "FP64", "data": rows}
        payload = {"inputs": [tensor]}
    elif fmt == "v2_flat":
        flat = [v for r in rows for v in r]
        payload = {
            "inputs": [{"name": "input", "shape": [n, width], "datatype": "FP64", "data": flat}]
        }
    elif fmt == "v2_columns":
        payload = {
            "inputs": [
                {
                    "name": f,
                    "shape": [n],
                    "datatype": "BYTES" if f in text else "FP64",
                    "data": [r[j] for r in rows],
                }
                for j, f in enumerate(features)
            ]
        }
    else:
        raise ValueError(fmt)
    path = infer_path if fmt.startswith("v2") else "/invocations"
    return path, json.dumps(payload).encode(), JSON_HEADERS


def categorical(card: dict[str, Any]) -> frozenset[str]:
    return frozenset(f["name"] for f in card["features"] if f.get("kind") == "categorical")


def numeric_column(card: dict[str, Any], golden: dict[str, Any]) -> tuple[int, bool]:
    """(position in the golden rows, nullable) of a numeric column, a non-nullable one if the
    model has one: where a wrong type or a non-finite number must be refused."""
    numeric = [f for f in card["features"] if f.get("kind", "numeric") == "numeric"]
    feature = min(numeric, key=lambda f: bool(f.get("nullable")))
    return golden["features"].index(feature["name"]), bool(feature.get("nullable"))


def golden_rows(golden: dict[str, Any], n: int) -> tuple[list[list[float]], list[Any]]:
    """``n`` rows cycling through the golden rows, and their validated labels."""
    source = golden["rows"]
    rows = [[source[i % len(source)]["inputs"][f] for f in golden["features"]] for i in range(n)]
    return rows, [source[i % len(source)]["label"] for i in range(n)]


def post(http: httpx.Client, case: Case, path: str, body: bytes, headers: dict[str, str]) -> int:
    """POST over a connection of its own (a hostile request may close it); record the answer."""
    with clients.client(str(http.base_url), timeout=120) as client:
        status = case.saw(client.post(path, content=body, headers=headers))
    assert status is not None
    return status


def chunks(data: bytes, size: int = 256 * 1024) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


# -- the legitimate worst case -------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_full_batch_of_legitimate_rows_is_served_in_every_format(
    case: Case,
    http: httpx.Client,
    golden: dict[str, Any],
    infer_path: str,
    limits: ServerLimits,
    card: dict[str, Any],
    tolerance: float,
    fmt: str,
) -> None:
    text = categorical(card)
    if text and fmt in ("v2_tensor", "v2_flat"):
        pytest.skip("a model with categorical columns takes one V2 tensor per column")
    rows, labels = golden_rows(golden, limits.max_rows)
    path, body, headers = encode(fmt, rows, golden["features"], infer_path, text)
    with clients.client(str(http.base_url), timeout=120) as client:
        started = time.perf_counter()
        response = client.post(path, content=body, headers=headers)
        seconds = time.perf_counter() - started
    case.saw(response)
    assert response.status_code == 200, response.text[:300]
    answer = response.json()
    got = answer["predictions"] if "predictions" in answer else answer["outputs"][0]["data"]
    assert_answers(card, got, labels, tolerance)
    print(f"{fmt}: {limits.max_rows} rows, {len(body) / 2**20:.1f} MiB in {seconds:.2f} s")


# -- the cases of issue #12 ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_long_strings_in_a_full_batch_get_400_in_every_format(
    case: Case,
    http: httpx.Client,
    golden: dict[str, Any],
    infer_path: str,
    limits: ServerLimits,
    fmt: str,
) -> None:
    """One 2,000-character string among rows of zeros: numpy inferring a dtype from it asked
    for rows x columns x 8 KB before the request was refused."""
    width = len(golden["features"])
    rows: list[list[Any]] = [[0] * width for _ in range(limits.max_rows)]
    rows[0][0] = "a" * 2000
    rows[-1][-1] = "z" * 2000
    path, body, headers = encode(fmt, rows, golden["features"], infer_path)
    assert post(http, case, path, body, headers) == 400


def test_a_five_million_line_csv_gets_4xx(case: Case, http: httpx.Client, golden: dict[str, Any]):
    body = (",".join(golden["features"]) + "\n" + "0\n" * 5_000_000).encode()
    assert post(http, case, "/invocations", body, CSV_HEADERS) in (400, 413)


def test_a_csv_of_more_rows_than_the_limit_gets_413_while_it_is_read(
    case: Case, http: httpx.Client, golden: dict[str, Any], limits: ServerLimits
) -> None:
    width = len(golden["features"])
    row = ",".join(["0"] * width) + "\n"
    rows = max(limits.max_rows * 3, (limits.max_body_bytes - 4096) // len(row) - 1)
    body = (",".join(golden["features"]) + "\n" + row * rows).encode()[: limits.max_body_bytes]
    assert post(http, case, "/invocations", body, CSV_HEADERS) == 413


def test_a_csv_of_millions_of_empty_lines_gets_4xx(
    case: Case, http: httpx.Client, golden: dict[str, Any], limits: ServerLimits
) -> None:
    lines = min(5_000_000, limits.max_body_bytes - 8192)
    body = (",".join(golden["features"]) + "\n" + "\n" * lines).encode()
    assert post(http, case, "/invocations", body, CSV_HEADERS) in (400, 413)


@pytest.mark.parametrize("chunked", [False, True], ids=["content_length", "chunked"])
def test_a_40_mb_json_body_gets_413(
    case: Case, base_url: str, golden: dict[str, Any], chunked: bool
) -> None:
    row = json.dumps([golden["rows"][0]["inputs"][f] for f in golden["features"]])
    count = 40 * 2**20 // (len(row) + 2)
    body = ('{"instances": [' + ", ".join([row] * count) + "]}").encode()
    if chunked:
        framing = "Transfer-Encoding: chunked"
        parts: Iterator[bytes] = (b"%x\r\n%s\r\n" % (len(c), c) for c in chunks(body))
    else:
        framing = f"Content-Length: {len(body)}"
        parts = chunks(body)
    request = head("POST", "/invocations", "Content-Type: application/json", framing)
    answer = exchange(base_url, request, parts)
    case.saw(answer)
    assert answer.status == 413, answer.raw[:300]
    print(f"40 MiB body: 413 after {answer.sent / 2**20:.1f} MiB sent")


@pytest.mark.parametrize(
    "framing",
    [
        "Content-Length: 1000000000000000",
        "Content-Length: abc",
        "Content-Length: -1",
        "Content-Length: 4\r\nContent-Length: 9",
        "Content-Length: 6\r\nTransfer-Encoding: chunked",
        "Content-Length: 2",  # then more bytes than that: the rest is garbage, not a request
    ],
    ids=["huge", "not_a_number", "negative", "two_lengths", "length_and_chunked", "short"],
)
def test_a_content_length_that_lies_gets_4xx(case: Case, base_url: str, framing: str) -> None:
    request = head("POST", "/invocations", "Content-Type: application/json", framing)
    answer = exchange(base_url, request, [b'{"instances": [[1, 2, 3]]}\r\n\r\nGARBAGE'], timeout=20)
    case.saw(answer)
    assert answer.status is None or 400 <= answer.status < 500, answer.raw[:300]


@pytest.mark.parametrize("fmt", ["instances", "v2_tensor", "csv", "dataframe_split_columns"])
def test_a_two_million_wide_row_gets_400(
    case: Case,
    http: httpx.Client,
    golden: dict[str, Any],
    infer_path: str,
    limits: ServerLimits,
    fmt: str,
) -> None:
    wide = 2_000_000
    if fmt == "dataframe_split_columns":
        names = [f"c{i}" for i in range(wide)]
        body = json.dumps({"dataframe_split": {"columns": names, "data": [[0] * wide]}}).encode()
        path, headers = "/invocations", JSON_HEADERS
    else:
        path, body, headers = encode(fmt, [[0] * wide], [f"c{i}" for i in range(wide)], infer_path)
        if fmt == "csv":  # the model's own header, then the wide row
            body = (",".join(golden["features"]) + "\n" + ",".join(["0"] * wide)).encode()
    status = post(http, case, path, body, headers)
    # Two million column names are two million strings to parse first, and a model of few
    # columns may take fewer bytes than the row has: 413 is as right then.
    too_large = fmt == "dataframe_split_columns" or len(body) > limits.max_body_bytes
    assert status == 400 or (too_large and status == 413)


def test_two_hundred_connections_that_promise_a_body_and_stall_get_408(
    case: Case, base_url: str, limits: ServerLimits
) -> None:
    """Headers with a Content-Length of 1000, 14 bytes of body, then nothing; plus 50 that
    stall inside their headers (slowloris). Meanwhile the server keeps answering (the prober,
    a readiness request, the golden row after); each stalled request gets 408 in time."""
    stalled: list[socket.socket] = []
    dripping: list[socket.socket] = []
    try:
        body_head = head(
            "POST", "/invocations", "Content-Type: application/json", "Content-Length: 1000"
        )
        for _ in range(200):
            sock = connect(base_url)
            sock.sendall(body_head + b'{"instances": ')
            stalled.append(sock)
        for _ in range(50):
            sock = connect(base_url)
            sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: hostile.test\r\nX-Slow: ")
            dripping.append(sock)
        with clients.client(base_url, timeout=10) as client:  # served meanwhile
            assert case.saw(client.get("/v2/health/ready")) == 200
        started = time.monotonic()
        deadline = max(limits.body_timeout_s, limits.header_timeout_s) + 10
        answers = [read_answer(sock, timeout=deadline) for sock in stalled + dripping]
        waited = time.monotonic() - started
    finally:
        for sock in stalled + dripping:
            sock.close()
    statuses = [Answer(_status(raw), raw, 0, 0) for raw in answers]
    for answer in statuses:
        case.saw(answer)
    assert [a.status for a in statuses[:200]] == [408] * 200
    assert all(a.status in (408, None) for a in statuses[200:])
    assert waited < max(limits.body_timeout_s, limits.header_timeout_s) + 5


def _status(raw: bytes) -> int | None:
    parts = raw.split(b"\r\n", 1)[0].split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def test_a_burst_of_random_paths_gets_404_or_405_and_adds_no_metric_series(
    case: Case, http: httpx.Client, card: dict[str, Any]
) -> None:
    rng = random.Random(12)
    model = card["model_name"]
    kinds = (
        "/{w}",
        "/{w}/{w}/{w}",
        "/v2/models/{w}",
        "/v2/models/{w}/versions/{w}/infer",
        f"/v2/models/{model}/versions/{{w}}/{{w}}",
        f"/v2/models/{model}/{{w}}",
        "/invocations/{w}",
    )

    def path(kind: str) -> str:
        return kind.format(w="".join(rng.choices(string.ascii_letters + string.digits, k=12)))

    def series() -> int:
        text = http.get("/metrics").text
        return sum(line.startswith("serving_") and "{" in line for line in text.splitlines())

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]
    for method in methods:  # every kind of path with every method once: the label sets
        for kind in kinds:  # they make exist from here on
            case.saw(http.request(method, path(kind)))
    series()  # the first scrape adds /metrics's own series
    before = series()
    burst = [(rng.choice(methods), path(rng.choice(kinds))) for _ in range(2000)]

    def send(requests: list[tuple[str, str]]) -> list[httpx.Response]:
        with clients.client(str(http.base_url), timeout=30) as client:
            return [client.request(method, url) for method, url in requests]

    with ThreadPoolExecutor(8) as pool:
        answers = [r for part in pool.map(send, [burst[i::8] for i in range(8)]) for r in part]
    statuses = {case.saw(answer) for answer in answers}
    assert statuses <= {400, 404, 405}, statuses
    assert series() == before


def test_non_finite_numbers_get_400_in_every_format(
    case: Case, http: httpx.Client, golden: dict[str, Any], card: dict[str, Any], infer_path: str
) -> None:
    """NaN is a missing value where the model takes one (a nullable column), else a 400."""
    column, nullable = numeric_column(card, golden)
    text = categorical(card)
    for fmt in FORMATS:
        if text and fmt in ("v2_tensor", "v2_flat"):
            continue  # refused whatever the values: one tensor per column
        rows, _ = golden_rows(golden, 3)
        for bad in (float("nan"), float("inf"), float("-inf")):
            rows[1][column] = bad
            path, body, headers = encode(fmt, rows, golden["features"], infer_path, text)
            wanted = 200 if nullable and bad != bad else 400
            assert post(http, case, path, body, headers) == wanted, (fmt, bad)
        path, body, headers = encode(fmt, rows, golden["features"], infer_path, text)
        body = body.replace(b"-Infinity", b"1e999").replace(b"-inf", b"1e999")  # > float64
        assert post(http, case, path, body, headers) == 400, (fmt, "1e999")


def test_wrong_types_booleans_and_nested_arrays_get_400_in_every_format(
    case: Case, http: httpx.Client, golden: dict[str, Any], card: dict[str, Any], infer_path: str
) -> None:
    column, nullable = numeric_column(card, golden)
    text = categorical(card)
    for fmt in FORMATS:
        if text and fmt in ("v2_tensor", "v2_flat"):
            continue  # refused whatever the values: one tensor per column
        for bad in ("abc", "1.5", None, {"a": 1}, True, False, [1.0], [[1.0]], 10**400):
            if fmt == "csv" and isinstance(bad, dict | list | bool):
                continue  # no such thing in a CSV cell: its text form is a wrong type already
            rows, _ = golden_rows(golden, 3)
            rows[2][column] = bad
            path, body, headers = encode(fmt, rows, golden["features"], infer_path, text)
            status = post(http, case, path, body, headers)
            if fmt == "csv" and bad == "1.5":
                assert status == 200  # a CSV cell is text: "1.5" is the number
            elif bad is None and nullable:
                assert status == 200, (fmt, "null in a nullable column")
            else:
                assert status == 400, (fmt, bad, status)


def test_json_nested_a_hundred_thousand_deep_gets_400(case: Case, http: httpx.Client) -> None:
    body = b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert post(http, case, "/invocations", body, JSON_HEADERS) == 400


# -- beyond the list: what else an attacker tries ------------------------------------------


def test_a_body_of_empty_arrays_within_the_byte_limit_gets_413_before_it_is_parsed(
    case: Case, http: httpx.Client, limits: ServerLimits
) -> None:
    """Each ``[]`` costs 3 bytes of JSON and ~64 bytes of Python object: within the byte limit
    such a body asks for 20x its size."""
    count = (min(limits.max_body_bytes, 64 * 2**20) - 64) // 3
    body = b'{"instances": [' + b"[]," * (count - 1) + b"[]]}"
    assert post(http, case, "/invocations", body, JSON_HEADERS) in (400, 413)


def test_headers_and_urls_of_a_megabyte_are_refused(case: Case, base_url: str) -> None:
    many = "\r\n".join(f"X-Filler-{i}: {'v' * 1000}" for i in range(1000))
    answer = exchange(base_url, head("GET", "/ping", many), timeout=30)
    case.saw(answer)
    assert answer.status is None or 400 <= answer.status < 500
    answer = exchange(base_url, head("GET", "/" + "a" * 1_000_000), timeout=30)
    case.saw(answer)
    assert answer.status is None or 400 <= answer.status < 500


def test_v2_outputs_named_a_hundred_thousand_times_get_400(
    case: Case, http: httpx.Client, golden: dict[str, Any], infer_path: str
) -> None:
    """Each named output is one tensor in the answer: repeated, a small request would ask for
    an answer of gigabytes."""
    rows, _ = golden_rows(golden, 1000)
    path, body, headers = encode("v2_tensor", rows, golden["features"], infer_path)
    payload = json.loads(body)
    payload["outputs"] = [{"name": "probabilities"}] * 100_000
    assert post(http, case, path, json.dumps(payload).encode(), headers) == 400


def test_v2_binary_data_that_lies_about_its_size_gets_400(
    case: Case, http: httpx.Client, golden: dict[str, Any], infer_path: str
) -> None:
    width = len(golden["features"])
    for shape, size, header_extra in (
        ([1, width], 8 * width * 1000, 0),
        ([10**12, width], 8 * width, 0),
        ([1, width], 8 * width, 10**9),
    ):
        tensor = {
            "name": "input",
            "shape": shape,
            "datatype": "FP64",
            "parameters": {"binary_data_size": size},
        }
        header = json.dumps({"inputs": [tensor]}).encode()
        headers = {
            **JSON_HEADERS,
            "Inference-Header-Content-Length": str(len(header) + header_extra),
        }
        body = header + b"\0" * (8 * width)
        assert post(http, case, infer_path, body, headers) in (400, 413)


def test_a_v2_shape_of_a_trillion_rows_without_data_gets_4xx(
    case: Case, http: httpx.Client, golden: dict[str, Any], infer_path: str
) -> None:
    width = len(golden["features"])
    for shape in ([10**12, width], [10**6, 10**6], [2**62, 2**62]):
        tensor = {"name": "input", "shape": shape, "datatype": "FP64", "data": [0.0] * width}
        body = json.dumps({"inputs": [tensor]}).encode()
        assert post(http, case, infer_path, body, JSON_HEADERS) in (400, 413)


def test_a_request_id_of_300_characters_is_replaced(case: Case, http: httpx.Client) -> None:
    response = http.get("/v2/health/live", headers={"X-Request-ID": "r" * 300})
    case.saw(response)
    assert response.status_code == 200
    assert 0 < len(response.headers["x-request-id"]) <= 200


def test_full_batches_sent_at_once_are_served_or_told_to_retry_never_dropped(
    case: Case,
    base_url: str,
    golden: dict[str, Any],
    card: dict[str, Any],
    tolerance: float,
    limits: ServerLimits,
) -> None:
    """More full batches at once than the server has slots and queue for: each gets its
    answer, or 503 with Retry-After; none hangs, none is a 500."""
    case.allow_busy = True
    rows, labels = golden_rows(golden, limits.max_rows)
    body = json.dumps({"dataframe_split": {"columns": golden["features"], "data": rows}})
    senders = limits.large_requests + limits.large_queue + 8

    def send(_: int) -> httpx.Response:
        with clients.client(base_url, timeout=120) as client:
            return client.post("/invocations", content=body, headers=JSON_HEADERS)

    barrier = threading.Barrier(senders)

    def together(i: int) -> httpx.Response:
        barrier.wait(30)
        return send(i)

    with ThreadPoolExecutor(senders) as pool:
        responses = list(pool.map(together, range(senders)))
    statuses = [case.saw(r) for r in responses]
    assert set(statuses) <= {200, 503}, statuses
    for response in responses:
        if response.status_code == 200:
            assert_answers(card, response.json()["predictions"], labels, tolerance)
        else:
            assert response.headers.get("retry-after")
    assert statuses.count(200) >= limits.large_requests
