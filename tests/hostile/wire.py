"""HTTP/1.1 on a raw socket, for requests no well-behaved client sends: bodies that lie about
their length, headers that never end, bodies sent while the server has already answered.

An answer may come before the request is fully sent (a 413 from Content-Length, a 503 for a
full queue): :func:`exchange` looks for one before each chunk it sends and stops sending when
it has one, as curl does, so the status is read before the server closes the connection.
"""

from __future__ import annotations

import http.client
import select
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = ["Answer", "connect", "exchange", "head", "probe_liveness", "read_answer", "target"]


@dataclass(frozen=True)
class Answer:
    status: int | None  # None: the connection closed or reset with no status line
    raw: bytes
    seconds: float
    sent: int  # body bytes the server accepted before it answered or closed

    @property
    def body(self) -> bytes:
        return self.raw.partition(b"\r\n\r\n")[2]

    def header(self, name: str) -> str | None:
        lines = self.raw.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]
        for line in lines:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower().encode():
                return value.strip().decode("latin-1")
        return None


def target(base_url: str) -> tuple[str, int]:
    parts = urlsplit(base_url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def connect(base_url: str, *, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(target(base_url), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def head(method: str, path: str, *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: hostile.test", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def exchange(
    base_url: str,
    request_head: bytes,
    body: Iterable[bytes] = (),
    *,
    timeout: float = 60.0,
) -> Answer:
    """Send ``request_head`` then ``body`` chunk by chunk, stopping early if the server answers
    or closes; return the answer (the connection is closed after)."""
    started = time.monotonic()
    sent = 0
    with connect(base_url, timeout=timeout) as sock:
        try:
            sock.sendall(request_head)
        except OSError:  # the server refused the head and closed; a proxy may turn it to a reset
            body = ()
        for chunk in body:
            if _readable(sock):
                break
            try:
                sock.sendall(chunk)
            except OSError:  # the server answered and closed, or reset
                break
            sent += len(chunk)
        raw = read_answer(sock, timeout=max(0.1, timeout - (time.monotonic() - started)))
    status = _status(raw)
    return Answer(status=status, raw=raw, seconds=time.monotonic() - started, sent=sent)


def read_answer(sock: socket.socket, *, timeout: float) -> bytes:
    """One response: the head, and the body its Content-Length announces (or until close)."""
    sock.settimeout(timeout)
    raw = b""
    try:
        while b"\r\n\r\n" not in raw:
            chunk = sock.recv(65536)
            if not chunk:
                return raw
            raw += chunk
        head_part = raw.partition(b"\r\n\r\n")[0].lower()
        length = None
        for line in head_part.split(b"\r\n")[1:]:
            if line.startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        while length is None or len(raw.partition(b"\r\n\r\n")[2]) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            raw += chunk
    except (TimeoutError, OSError):
        pass
    return raw


def _status(raw: bytes) -> int | None:
    line = raw.split(b"\r\n", 1)[0].split()
    if len(line) >= 2 and line[0].startswith(b"HTTP/") and line[1].isdigit():
        return int(line[1])
    return None


def _readable(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


def probe_liveness(base_url: str, slowest: Any, probes: Any, failures: Any, stop: Any) -> None:
    """Ask for liveness every 100 ms on a keep-alive connection of its own, until ``stop`` is
    set; keep the slowest answer's seconds, the count of probes and of failures in the shared
    values. Runs in a process of its own (the suite's own work must not delay a probe)."""
    host, port = target(base_url)
    conn: http.client.HTTPConnection | None = None
    while not stop.is_set():
        started = time.perf_counter()
        try:
            if conn is None:
                conn = http.client.HTTPConnection(host, port, timeout=10)
            conn.request("GET", "/v2/health/live")
            response = conn.getresponse()
            response.read()
            ok = response.status == 200
        except (OSError, http.client.HTTPException):
            ok = False
            if conn is not None:
                conn.close()
            conn = None
        elapsed = time.perf_counter() - started
        with slowest.get_lock():
            slowest.value = max(slowest.value, elapsed)
        with probes.get_lock():
            probes.value += 1
        if not ok:
            with failures.get_lock():
                failures.value += 1
        stop.wait(0.1)
