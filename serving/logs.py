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

__all__ = [
    "ACCESS_FLUSH_S",
    "BatchedHandler",
    "JsonFormatter",
    "configure_logging",
    "direct_handler",
]

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
        fields = getattr(record, "fields", None)
        exception = self.formatException(record.exc_info) if record.exc_info else None
        return self.line(
            record.created,
            record.levelname,
            record.name,
            record.getMessage(),
            fields if isinstance(fields, dict) else None,
            exception,
        )

    def line(
        self,
        created: float,
        level: str,
        logger: str,
        message: str,
        fields: dict[str, object] | None = None,
        exception: str | None = None,
    ) -> str:
        """The line for a record with these attributes (``created``: ``time.time()``)."""
        second = int(created)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        line: dict[str, object] = {
            "ts": f"{self._prefix}.{int((created - second) * 1000):03d}Z",
            "level": level.lower(),
            "logger": logger,
            "message": message,
        }
        if fields:
            line.update(fields)
        if exception:
            line["exception"] = exception
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
        self.add(line)

    def add(self, line: str) -> None:
        """Queue a formatted line (callers hold ``self.lock``, as ``emit``'s do)."""
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


def direct_handler(logger: logging.Logger, level: int) -> BatchedHandler | None:
    """The one handler a ``level`` record of ``logger`` would reach, when nothing else would
    see or change it (a filter, another handler, a parent's: pytest's ``caplog``), and it is a
    :class:`BatchedHandler` with a :class:`JsonFormatter`; else None. A caller that gets one
    may hand it the formatted line (:meth:`JsonFormatter.line`, :meth:`BatchedHandler.add`)
    instead of a record: the same line, without building a ``LogRecord`` (the access log:
    ~10 us of a request's ~15 us of logging)."""
    handlers = logger.handlers
    if len(handlers) != 1 or logger.propagate or logger.filters or logger.disabled:
        return None
    handler = handlers[0]
    if (
        type(handler) is not BatchedHandler
        or handler.filters
        or handler.level > level
        or type(handler.formatter) is not JsonFormatter
        or not logger.isEnabledFor(level)
    ):
        return None
    return handler
