"""JSON log lines on stderr: one object per line, so a log shipper needs no parsing rules.

Every line has ``ts``, ``level``, ``logger``, ``message``; the access log adds ``method``,
``path``, ``status``, ``latency_ms`` and ``request_id`` (passed as ``extra={"fields": ...}``).

Access-log lines are written in batches (:class:`BatchedHandler`): at most
:data:`ACCESS_FLUSH_S` after the request, or as soon as 64 KiB are waiting, and on shutdown.
One ``write`` per line was 9 % of the server's CPU under load (py-spy, bench/README.md).
Everything else (warnings, errors, start-up) is written at once.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import TextIO

import orjson

__all__ = ["ACCESS_FLUSH_S", "BatchedHandler", "JsonFormatter", "configure_logging"]

#: the longest an access-log line waits in memory before it is written
ACCESS_FLUSH_S = 0.05
#: written at once when this much is waiting
ACCESS_FLUSH_BYTES = 64 * 1024


class JsonFormatter(logging.Formatter):
    """One JSON object per record. The access log writes a line per request, so the
    second-resolution part of the timestamp is formatted once per second, not per line."""

    _second = -1
    _prefix = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        line = {
            "ts": f"{self._prefix}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class BatchedHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Formats each record at once and writes the lines in batches: when a flush scheduled on
    the running event loop comes due (``delay_s`` after the first waiting line), when
    ``max_bytes`` are waiting, and on :meth:`flush` (``logging.shutdown`` at exit). A record
    emitted off the event loop (a worker thread) is written at once, with what waits."""

    def __init__(
        self,
        stream: TextIO,
        *,
        delay_s: float = ACCESS_FLUSH_S,
        max_bytes: int = ACCESS_FLUSH_BYTES,
    ) -> None:
        super().__init__(stream)
        self.delay_s, self.max_bytes = delay_s, max_bytes
        self._lines: list[str] = []
        self._size = 0
        self._due: asyncio.TimerHandle | None = None

    def emit(self, record: logging.LogRecord) -> None:  # called with self.lock held
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._lines.append(line)
        self._size += len(line) + 1
        if self._size >= self.max_bytes:
            self._write()
        elif self._due is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # not on the loop: nothing would flush it later
                self._write()
                return
            self._due = loop.call_later(self.delay_s, self.flush)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write()

    def _write(self) -> None:
        if self._due is not None:
            self._due.cancel()
            self._due = None
        if not self._lines:
            return
        lines, self._lines, self._size = self._lines, [], 0
        try:
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()
        except Exception:  # a closed or broken stderr: like StreamHandler, say so and go on
            self.handleError(logging.makeLogRecord({"msg": "access log write failed"}))


def configure_logging(level: str) -> None:
    """Send every log line (ours and uvicorn's) to stderr as JSON. Called by the entry point,
    never on import."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    # Serving runs no threads or subprocesses worth naming in a line: skip those look-ups.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    access = logging.getLogger("serving.access")
    batched = BatchedHandler(sys.stderr)
    batched.setFormatter(handler.formatter)
    access.handlers[:] = [batched]
    access.propagate = False
