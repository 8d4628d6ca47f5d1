"""A fault-injecting HTTP proxy in front of a real service (the OCI registry, an MLflow server),
for the half-way cases of a release: a request that reached the service but whose answer was
lost, a request refused once, the third PUT of a tag failing.

Every request is forwarded to ``upstream`` unless a :class:`Fault` matches it. A fault matches a
method and a path pattern, optionally only after an arming request was seen (``after``: "the
read-back after the PUT"), skips its first ``skip`` matches, then fires ``times`` times:
``forward=True`` sends the request on and replaces the answer (the change happened, the client
does not learn it), ``forward=False`` answers without forwarding (nothing happened). A
:class:`Gate` holds requests until several clients reach the same point, to race them.
"""

from __future__ import annotations

import contextlib
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from tests.contract import clients


@dataclass
class Fault:
    method: str
    path: str  # a regular expression searched in the request path
    status: int = 503
    forward: bool = False
    after: tuple[str, str] | None = None  # (method, path pattern) that arms this fault
    skip: int = 0
    times: int = 1
    fired: int = 0
    _armed: bool = False
    _seen: int = 0

    def matches(self, method: str, path: str) -> bool:
        return method == self.method and re.search(self.path, path) is not None


@dataclass
class Gate:
    """Hold the first ``parties`` requests matching ``method`` and ``path`` until all of them
    have arrived (or ``timeout`` passed), then let them through together: two clients racing
    from the same point."""

    method: str
    path: str
    parties: int = 2
    timeout: float = 180
    passed: int = 0

    def __post_init__(self) -> None:
        self._barrier = threading.Barrier(self.parties, timeout=self.timeout)

    def wait(self, method: str, path: str, lock: threading.Lock) -> None:
        with lock:
            if (
                method != self.method
                or not re.search(self.path, path)
                or self.passed >= self.parties
            ):
                return
            self.passed += 1
        with contextlib.suppress(threading.BrokenBarrierError):
            self._barrier.wait()


class FaultProxy:
    """``with FaultProxy(upstream=...) as proxy``: ``proxy.address`` (host:port), ``faults``."""

    def __init__(self, *, upstream: str) -> None:
        self.faults: list[Fault] = []
        self.gates: list[Gate] = []
        self.log: list[str] = []  # "METHOD path -> status", every request
        self._lock = threading.Lock()
        client = httpx.Client(
            base_url=upstream, timeout=30, follow_redirects=False, verify=clients.tls()
        )
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                for gate in list(proxy.gates):
                    gate.wait(self.command, self.path, proxy._lock)
                fault = proxy._decide(self.command, self.path)
                if fault is not None and not fault.forward:
                    self._answer(fault.status, {}, b'{"errors":[{"code":"UNAVAILABLE"}]}')
                    return
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "content-length", "connection")
                }
                answer = client.request(self.command, self.path, content=body, headers=headers)
                if fault is not None:
                    self._answer(fault.status, {}, b'{"errors":[{"code":"UNAVAILABLE"}]}')
                    return
                self._answer(answer.status_code, dict(answer.headers), answer.content)

            def _answer(self, status: int, headers: dict[str, str], payload: bytes) -> None:
                proxy.log.append(f"{self.command} {self.path} -> {status}")
                self.send_response(status)
                for key, value in headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                if "content-type" not in {k.lower() for k in headers}:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _handle

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _decide(self, method: str, path: str) -> Fault | None:
        with self._lock:
            chosen = None
            for fault in self.faults:
                if fault.after is not None and not fault._armed:
                    continue
                if chosen is None and fault.matches(method, path) and fault.fired < fault.times:
                    fault._seen += 1
                    if fault._seen > fault.skip:
                        fault.fired += 1
                        chosen = fault
            for fault in self.faults:  # arm after deciding: the arming request passes itself
                if fault.after is not None and not fault._armed:
                    arm_method, arm_path = fault.after
                    if method == arm_method and re.search(arm_path, path):
                        fault._armed = True
            return chosen

    def inject(self, *faults: Fault) -> FaultProxy:
        with self._lock:
            self.faults = list(faults)
        return self

    def clear(self) -> None:
        with self._lock:
            self.faults, self.gates = [], []

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
