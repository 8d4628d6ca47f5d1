"""The two outside systems of an experiment, at their edges: Prometheus' HTTP API answers
(a local HTTP server plays Prometheus: the real one runs in tests/integration/ab) and the
runtime API's map read-back (what HAProxy's `show map` prints)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from pipeline.ab import prometheus
from pipeline.ab.assignment import bucket_map
from pipeline.deploy import haproxy_runtime
from pipeline.errors import ServiceError, SwarmError

ANSWERS: dict[str, Any] = {}


class _Prometheus(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        query = parse_qs(urlparse(self.path).query)["query"][0]
        ANSWERS.setdefault("queries", []).append(query)
        body = ANSWERS["body"](query)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body if isinstance(body, bytes) else json.dumps(body).encode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Prometheus)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    ANSWERS.clear()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def vector(values: dict[str, float]) -> dict[str, Any]:
    result = [{"metric": {"variant": v}, "value": [0, str(x)]} for v, x in values.items()]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def test_guardrails_read_requests_5xx_and_p95_per_variant_for_the_experiment(server: str) -> None:
    def answer(query: str) -> dict[str, Any]:
        if query.startswith("histogram_quantile"):
            return vector({"a": 0.008, "b": 0.0125})
        if 'status=~"5.."' in query:
            return vector({"a": 1.0, "b": 4.2})
        return vector({"a": 1000.4, "b": 990.0})

    ANSWERS["body"] = answer
    data = prometheus.guardrails(server, window_s=3600, experiment="exp-1")
    assert (data.a.requests, data.a.errors_5xx, data.a.p95_ms) == (1000, 1, 8.0)
    assert (data.b.requests, data.b.errors_5xx, data.b.p95_ms) == (990, 4, 12.5)
    assert all('experiment="exp-1"' in q and "[3600s]" in q for q in ANSWERS["queries"])


def test_prometheus_failures_are_service_errors_that_say_what_failed(server: str) -> None:
    ANSWERS["body"] = lambda q: b"<html>not prometheus</html>"
    with pytest.raises(ServiceError, match="not JSON"):
        prometheus.query(server, "up")
    ANSWERS["body"] = lambda q: {"status": "error", "error": "parse error"}
    with pytest.raises(ServiceError, match="refused"):
        prometheus.query(server, "up{")
    ANSWERS["body"] = lambda q: b"x" * (prometheus.MAX_ANSWER_BYTES + 10)
    with pytest.raises(ServiceError, match="more than"):
        prometheus.query(server, "up")
    with pytest.raises(ServiceError, match="did not answer"):
        prometheus.query("http://127.0.0.1:9", "up", timeout=2)


def test_show_map_output_parses_to_the_map_the_share_writes() -> None:
    shown = "".join(f"0x55d0{b:04x} {line}\n" for b, line in enumerate(bucket_map(30).splitlines()))
    assert haproxy_runtime.parse_map(shown) == haproxy_runtime.expected(30)
    assert sum(v.startswith("b") for v in haproxy_runtime.expected(30).values()) == 30


class _Entry:
    """The entry's tasks as :meth:`Swarm.run_in_tasks` reaches them: `show` answers the map
    held, `set` answers what the task holds afterwards (``broken``: a task that ignores it)."""

    def __init__(self, share: int, *, broken: bool = False) -> None:
        self.held, self.broken, self.sets = bucket_map(share), broken, 0

    def run_in_tasks(self, service: str, argv: list[str], *, stdin: str = "") -> list[str]:
        if argv[3] == "set":
            self.sets += 1
            if not self.broken:
                self.held = stdin
        return ["".join(f"0x0 {line}\n" for line in self.held.splitlines())]


def test_apply_share_changes_the_map_only_when_it_differs_and_checks_the_read_back() -> None:
    entry = _Entry(10)
    assert haproxy_runtime.apply_share(entry, "s_entry", 10) is False  # type: ignore[arg-type]
    assert entry.sets == 0
    assert haproxy_runtime.apply_share(entry, "s_entry", 50) is True  # type: ignore[arg-type]
    assert entry.held == bucket_map(50)
    stuck = _Entry(10, broken=True)
    with pytest.raises(SwarmError, match="did not take the share 50"):
        haproxy_runtime.apply_share(stuck, "s_entry", 50)  # type: ignore[arg-type]
