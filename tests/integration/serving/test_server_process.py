"""The real server process: starts on a free port, gets ready, serves, shuts down gracefully
on SIGTERM while a request is in flight, and never gets ready with a tampered model."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from tests.contract import clients
from tests.support.serving import Server, start_server

pytestmark = pytest.mark.integration


def rows(model_dir: Any, n: int) -> list[list[float]]:
    golden = model_dir.golden
    return [[golden[i % len(golden)]["inputs"][f] for f in model_dir.features] for i in range(n)]


def test_server_gets_ready_and_answers_both_protocols(server: Server, model_dir: Any) -> None:
    seconds = server.wait_ready()
    assert seconds < 10, f"ready after {seconds:.2f} s"
    with clients.client(server.url, timeout=5) as client:
        assert client.get("/v2/health/live").status_code == 200
        predictions = client.post("/invocations", json={"inputs": rows(model_dir, 3)}).json()
        assert predictions == {"predictions": [g["label"] for g in model_dir.golden[:3]]}
        body = {"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP64",
                            "data": rows(model_dir, 1)}]}  # fmt: skip
        infer = client.post("/v2/models/breast-cancer-classifier/infer", json=body)
        assert infer.status_code == 200
        assert (
            client.post(
                "/invocations", content=b"{", headers={"Content-Type": "application/json"}
            ).status_code
            == 400
        )
        assert client.get("/v2/health/ready").status_code == 200
    access = server.access(lambda lines: sum(a["path"] == "/invocations" for a in lines) >= 2)
    assert {(a["method"], a["path"], a["status"]) for a in access} >= {
        ("POST", "/invocations", 200),
        ("POST", "/invocations", 400),
    }


def test_sigterm_lets_the_in_flight_request_finish_then_exits_0(
    server: Server, model_dir: Any
) -> None:
    server.wait_ready()
    body = json.dumps({"inputs": rows(model_dir, 2000)}).encode()
    head = (
        f"POST /invocations HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head + body[: len(body) // 2])  # a slow client: half the batch so far
        time.sleep(0.3)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert server.process.poll() is None, "exited with a request in flight"
        with pytest.raises(OSError):  # no longer accepting new connections
            socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
        sock.sendall(body[len(body) // 2 :])
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    status_line, _, rest = response.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 200 OK", response[:300]
    payload = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert len(payload["predictions"]) == 2000
    assert server.process.wait(15) == 0, server.logs()


def test_tampered_model_never_becomes_ready_and_the_process_logs_why(
    model_dir: Any, tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(model_dir.root, copy)
    with (copy / "models" / "model.pkl").open("ab") as handle:
        handle.write(b"tampered")
    server = start_server(copy / "models", tmp_path)
    try:
        deadline = time.monotonic() + 10
        while "never be ready" not in server.logs() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "sha256" in server.logs()
        for _ in range(5):
            assert clients.get(server.url + "/v2/health/ready").status_code == 503
            assert clients.get(server.url + "/v2/health/live").status_code == 200
            time.sleep(0.1)
    finally:
        assert server.stop() == 0


@pytest.mark.slow
def test_two_workers_keep_alive_requests_do_not_pay_the_nagle_delay(
    model_dir: Any, tmp_path: Path
) -> None:
    """uvicorn #3149: asyncio/h11 workers lose TCP_NODELAY and add ~40 ms per keep-alive
    request; uvloop + httptools must not."""
    server = start_server(model_dir.models, tmp_path, SERVING_WORKERS="2")
    try:
        server.wait_ready()
        body = {"inputs": rows(model_dir, 1)}
        with clients.client(server.url, timeout=5) as client:
            client.post("/invocations", json=body)
            timings = []
            for _ in range(40):
                started = time.perf_counter()
                assert client.post("/invocations", json=body).status_code == 200
                timings.append(time.perf_counter() - started)
        timings.sort()
        assert timings[len(timings) // 2] < 0.02, f"median {timings[len(timings) // 2]:.4f} s"
    finally:
        assert server.stop() == 0


def test_pipelined_requests_head_and_100_continue_get_whole_answers_each_head_with_its_body(
    server: Server, model_dir: Any
) -> None:
    """The server writes a response's head and body in one write (serving.server._OneWrite):
    pipelined answers come back whole and in order, a HEAD answer (no body) is not held back,
    and ``100 Continue`` goes out before the body is sent."""
    server.wait_ready()
    port = int(server.url.rsplit(":", 1)[1])
    body = json.dumps({"inputs": rows(model_dir, 1)}).encode()
    post = (
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\nHEAD /ping HTTP/1.1\r\nHost: x\r\n\r\n"
            + post
            + b"GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)
    assert statuses == [b"200", b"405", b"200", b"200"], answer
    label = model_dir.golden[0]["label"]
    assert json.dumps({"predictions": [label]}, separators=(",", ":")).encode() in answer
    assert answer.endswith(model_dir.card["model_version"].encode())

    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            post.split(b"\r\n\r\n")[0].replace(b"Host: x", b"Host: x\r\nExpect: 100-continue")
            + b"\r\n\r\n"
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")


def _exchange(sock: socket.socket, parts: list[bytes]) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """Send ``parts`` as separate reads (a pause between them) and read one whole response:
    its status line, headers (lowercase names) and body."""
    for i, part in enumerate(parts):
        if i:
            time.sleep(0.1)  # the server has read and parsed what came before
        sock.sendall(part)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = dict(line.lower().split(b": ", 1) for line in lines)
    while len(body) < int(headers[b"content-length"]):
        body += sock.recv(65536)
    return status, headers, body


def test_a_request_read_at_once_gets_the_same_answer_as_one_whose_body_comes_later(
    server: Server, model_dir: Any
) -> None:
    """A request whose head and body arrive in one read is answered without an ASGI task
    (serving.server, GuardedProtocol.on_message_complete); one whose body arrives later goes
    through the app's ASGI path. Both answer alike (status, headers, body, keep-alive),
    errors included, and both write their access-log line."""
    server.wait_ready()
    port = int(server.url.rsplit(":", 1)[1])
    good = json.dumps({"inputs": rows(model_dir, 3)}).encode()
    requests = [
        (b"/invocations", b"application/json", good),
        (b"/invocations", b"application/json", b'{"inputs": [[1, 2'),  # 400
        (b"/invocations", b"text/plain", good),  # 415
        (b"/v2/models/other/infer", b"application/json", b"{}"),  # 404, V2 envelope
    ]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for path, content_type, body in requests:
            head = (
                b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nX-Request-ID: r-%d\r\n"
                b"Content-Length: %d\r\n\r\n" % (path, content_type, len(body), len(body))
            )
            at_once = _exchange(sock, [head + body])  # the same connection: kept alive
            later = _exchange(sock, [head, body])
            assert at_once == later, (path, body)
            assert b"connection" not in at_once[1]
    wanted = [status for status in (200, 400, 415, 404) for _ in "ab"]
    deadline = time.monotonic() + 5  # the access log is written in batches
    while True:
        statuses = [json.loads(line)["status"] for line in server.logs().splitlines()
                    if '"serving.access"' in line and '"r-' in line]  # fmt: skip
        if statuses == wanted or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert statuses == wanted

    # HTTP/1.0 without keep-alive: the answer says so and the connection closes after it
    body = json.dumps({"inputs": rows(model_dir, 1)}).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"POST /invocations HTTP/1.0\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        status, headers, _ = _exchange(sock, [])
        assert status == b"HTTP/1.1 200 OK" and headers[b"connection"] == b"close"
        assert sock.recv(65536) == b""  # closed by the server
