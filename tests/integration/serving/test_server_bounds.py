"""The real server process bounds its connections: deadlines for headers and bodies, the size
of a request's head, the number of open connections, idle keep-alive (serving/server.py), and
the body deadline does not run while a large request waits for its slot."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.contract import clients
from tests.hostile.wire import connect, exchange, head, read_answer
from tests.support.serving import Server, start_server

pytestmark = pytest.mark.integration

QUICK = {
    "SERVING_HEADER_TIMEOUT_S": "1",
    "SERVING_BODY_TIMEOUT_S": "2",
    "SERVING_KEEPALIVE_TIMEOUT_S": "2",
}


@pytest.fixture
def quick(model_dir: Any, tmp_path: Path) -> Any:
    server = start_server(model_dir.models, tmp_path, **QUICK, SERVING_MAX_CONNECTIONS="20")
    server.wait_ready()
    yield server
    server.stop()


def test_a_body_that_stops_coming_gets_408_and_the_access_log_says_so(quick: Server) -> None:
    request = head("POST", "/invocations", "Content-Type: application/json", "Content-Length: 900")
    answer = exchange(quick.url, request, [b'{"inputs": [[1'], timeout=10)
    assert answer.status == 408 and b"SERVING_BODY_TIMEOUT_S" in answer.body
    assert 2 <= answer.seconds < 4.5
    timed_out = quick.access(lambda lines: any(a["status"] == 408 for a in lines))
    assert any(a["path"] == "/invocations" and a["status"] == 408 for a in timed_out)


def test_headers_that_stop_coming_get_408_and_a_silent_connection_is_closed(
    quick: Server,
) -> None:
    with connect(quick.url) as dripping, connect(quick.url) as silent:
        dripping.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        started = time.monotonic()
        raw = read_answer(dripping, timeout=10)
        assert raw.startswith(b"HTTP/1.1 408") and b"SERVING_HEADER_TIMEOUT_S" in raw
        assert 1 <= time.monotonic() - started < 3.5
        assert read_answer(silent, timeout=10) == b""  # closed, nothing said


def test_a_head_past_64_kib_gets_431_and_an_idle_keep_alive_connection_closes(
    quick: Server,
) -> None:
    filler = "\r\n".join(f"X-Filler-{i}: {'v' * 200}" for i in range(400))  # ~85 KB
    answer = exchange(quick.url, head("GET", "/ping", filler), timeout=10)
    assert answer.status == 431
    with connect(quick.url) as sock:
        sock.sendall(head("GET", "/v2/health/live"))
        assert read_answer(sock, timeout=5).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert sock.recv(1) == b""  # closed by the server after the keep-alive timeout
        assert 1.5 <= time.monotonic() - started < 4


def test_past_the_connection_limit_requests_get_503_but_health_answers(quick: Server) -> None:
    """20 connections allowed: the 21st's request gets 503 with Retry-After, its health
    probe 200; past 20 + 64 a new connection is answered 503 and closed at once."""
    held: list[socket.socket] = []
    try:
        for _ in range(20):
            held.append(connect(quick.url))
        extra = connect(quick.url)
        held.append(extra)
        extra.sendall(head("GET", "/metadata"))
        busy = read_answer(extra, timeout=5)
        assert busy.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in busy.lower()
        assert b"SERVING_MAX_CONNECTIONS" in busy
        with clients.client(quick.url, timeout=5) as client:
            assert client.get("/v2/health/live").status_code == 200
            assert client.get("/v2/health/ready").status_code == 200
        for _ in range(70):
            held.append(connect(quick.url))
        time.sleep(0.2)
        refused = read_answer(held[-1], timeout=5)
        assert refused.startswith(b"HTTP/1.1 503")
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.5)
    assert clients.get(quick.url + "/metadata", timeout=5).status_code == 200


def test_the_body_deadline_does_not_run_while_a_large_request_waits_for_its_slot(
    model_dir: Any, tmp_path: Path
) -> None:
    """One slot: A takes it and stalls (408 after 2 s); B, sent whole meanwhile but larger
    than the server reads ahead, waits longer than the body deadline for the slot, and is
    served, not timed out."""
    server = start_server(model_dir.models, tmp_path, **QUICK, SERVING_LARGE_REQUESTS="1")
    try:
        server.wait_ready()
        rows = [[g["inputs"][f] for f in model_dir.features] for g in model_dir.golden] * 20
        body = json.dumps({"inputs": rows}).encode()
        assert len(body) > 200_000
        request = head(
            "POST", "/invocations", "Content-Type: application/json", f"Content-Length: {len(body)}"
        )
        with connect(server.url) as first:
            first.sendall(request + body[:1000])  # takes the slot, then stalls
            time.sleep(0.3)
            answer = exchange(server.url, request, [body], timeout=20)
            assert read_answer(first, timeout=10).startswith(b"HTTP/1.1 408")
        assert answer.status == 200, answer.raw[:300]
        assert answer.seconds > 1.5  # it waited for the slot
        assert len(json.loads(answer.body)["predictions"]) == len(rows)
    finally:
        server.stop()


def test_a_pipelined_burst_is_answered_whole_and_resets_leave_no_tracebacks(
    server: Server, model_dir: Any
) -> None:
    """A client that pipelines a burst (3,000 requests, ~2.5 MB, in one send) gets every
    answer (default settings): the head bound counts only the head, not the whole requests
    before it in the same read (it answered 431 after a few). Then clients that send requests
    and close or reset the connection before reading: the server writes nothing to a closed
    connection (uvloop raised, logged as an ASGI application error) and stays ready."""
    server.wait_ready()
    golden = model_dir.golden[0]["inputs"]
    body = json.dumps({"inputs": [[golden[f] for f in model_dir.features]]}).encode()
    post = head("POST", "/invocations", "Content-Type: application/json",
                f"Content-Length: {len(body)}") + body  # fmt: skip
    with connect(server.url) as sock:
        sock.settimeout(20)
        sock.sendall(post * 3000)
        answers = b""
        while answers.count(b"HTTP/1.1 ") < 3000:
            chunk = sock.recv(1 << 20)
            assert chunk, f"closed after {answers.count(b'HTTP/1.1 ')} answers: {answers[-300:]!r}"
            answers += chunk
    assert answers.count(b"HTTP/1.1 200 OK") == 3000

    linger_0 = (1).to_bytes(4, "little") + (0).to_bytes(4, "little")  # close = reset

    def reset_after_sending() -> None:
        for i in range(50):
            with connect(server.url) as sock:
                if i % 2:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_0)
                sock.sendall(post * 3)

    threads = [threading.Thread(target=reset_after_sending) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with connect(server.url) as sock:
        sock.sendall(head("GET", "/v2/health/ready"))
        assert read_answer(sock, timeout=5).startswith(b"HTTP/1.1 200")
    time.sleep(0.5)
    assert "Exception in ASGI application" not in server.logs()
    assert '"level":"error"' not in server.logs()
