"""What one request may cost, decided before anything is allocated, and who waits for what.

Every bound is checked before the memory it protects is taken:

1. **Bytes.** ``SERVING_MAX_BODY_BYTES`` is refused from ``Content-Length`` before a byte is
   read, or as soon as the bytes read pass it. Its default is derived from the model
   (:func:`derived_body_limit`): what ``SERVING_MAX_ROWS`` rows of its columns take in the most
   verbose format a client may send, so a legitimate batch always fits and nothing much larger
   does.
2. **Parse memory.** A parsed JSON value costs up to ~90 bytes at peak (orjson's intermediate
   document, then an empty list or object), against 2-3 bytes of JSON: a body within the byte
   limit can still ask for 25x its size. Before a large body is parsed, six C scans for single
   bytes (``,``, ``[``, ``{``, ``"``, ``:``) bound what parsing it takes
   (:func:`json_parse_cost`); past ``SERVING_MAX_PARSE_BYTES`` (default twice a full batch,
   :func:`derived_parse_budget`) it is a 413. Small bodies skip the scan: 64 KiB cannot cost
   more than ~3 MB.
3. **Rows and cells.** Rows are counted first (CSV: while reading, stopping at ``max_rows +
   1``), every row's width is checked before one value is converted, and values are converted
   with an explicit float64 dtype, never an inferred one (:mod:`serving.schema`).

The event loop: a body larger than ``SERVING_LARGE_BODY_BYTES`` waits for one of
``SERVING_LARGE_REQUESTS`` slots (:class:`Gate`) *before* it is read, and is parsed and predicted
in a thread; at most ``SERVING_LARGE_QUEUE`` wait, each at most ``SERVING_QUEUE_TIMEOUT_S``, the
rest get 503 with ``Retry-After``. So requests in flight take at most about
``LARGE_REQUESTS x (MAX_BODY_BYTES + MAX_PARSE_BYTES)`` plus a few MB of small bodies
(:meth:`Limits.worst_case_bytes`; the server warns at start-up when its container's memory
limit is below that), and liveness answers while a 10,000-row batch is parsed. A thread hop
costs more than a 1-row request, which stays on the loop. Clients that send slowly are cut off
by :class:`serving.server.GuardedProtocol` (408).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from serving.errors import ServingError

__all__ = [
    "Gate",
    "Limits",
    "container_memory_limit",
    "derived_body_limit",
    "derived_parse_budget",
    "json_parse_cost",
    "release_memory",
]

#: Bytes a value may take on the wire beyond its column name: the longest float64 repr
#: ("-2.2250738585072014e-308", 24), "": " and ", ", a newline and 20 spaces of indentation
#: (records indented by 4 put 12 before each key).
VALUE_BYTES = 48
#: Per row: braces or brackets, separators, its newline, a pandas index entry.
ROW_BYTES = 24
#: Keys, the column list, ``params``, V2 tensor headers.
HEADROOM_BYTES = 64 * 1024
#: Bodies up to this size are not estimated: whatever they hold costs at most ~3 MB to parse.
SCAN_ABOVE_BYTES = 64 * 1024
#: Parse budget floor: below this, a budget would refuse requests that cost a server nothing.
MIN_PARSE_BYTES = 128 * 2**20


def json_parse_cost(body: bytes) -> int:
    """An upper bound of the peak memory, in bytes, orjson takes to parse ``body``, from six
    counts of single bytes (C scans; bytes inside strings only raise the bound).

    Measured on orjson 3.x: every value costs 16 bytes in its intermediate document plus its
    8-byte slot; then a container ~72 bytes (an empty list or dict, GC header included), a
    string ~64 plus its text, a number ~32 (a float; small ints cost nothing), a dict entry
    ~32. So 19.8 MB of ``[],`` peaks at 555 MB (estimated 790), of ``0.5,`` at 265 MB (277),
    and a full batch of records at ~50 MB.
    """
    containers = body.count(b"[") + body.count(b"{")
    values = body.count(b",") + containers + 1
    strings = body.count(b'"') // 2
    entries = body.count(b":")
    scalars = max(0, values - containers - strings)
    return 24 * values + 72 * containers + 64 * strings + 32 * scalars + 32 * entries + len(body)


def derived_body_limit(names: Sequence[str], max_rows: int, *, text_bytes: int = 0) -> int:
    """Bytes ``max_rows`` rows of these columns take in the most verbose format a client may
    send: ``dataframe_records``, every column name repeated per row (JSON-escaped), full
    float64 precision, indented; plus :data:`HEADROOM_BYTES`. ``text_bytes``: the longest
    JSON-encoded category of a categorical column (a value may be that instead of a number)."""
    per_value = max(len(json.dumps(name)) for name in names) + VALUE_BYTES + text_bytes
    return max_rows * (len(names) * per_value + ROW_BYTES) + HEADROOM_BYTES


def derived_parse_budget(names: Sequence[str], max_rows: int, *, text_bytes: int = 0) -> int:
    """Twice what :func:`json_parse_cost` gives the costliest legitimate full batch (records:
    a key, a value and a dict entry per cell; a string value too when the model has categorical
    columns), at least :data:`MIN_PARSE_BYTES`. A row of two million zeros (4 MB, ~120 MB
    estimated) still parses and gets its 400 for its width."""
    cells = max_rows * len(names)
    strings = 64 * cells if text_bytes else 0
    records = 24 * (cells + max_rows) + 72 * max_rows + (64 + 32 + 32) * cells + strings
    body = derived_body_limit(names, max_rows, text_bytes=text_bytes)
    return max(2 * (records + body), MIN_PARSE_BYTES)


@dataclass(frozen=True)
class Limits:
    """The transport bounds for one served model, built once when the model is ready (the
    content bounds, rows and JSON values, are :class:`serving.schema.InputSchema`'s)."""

    max_body_bytes: int
    body_limit_derived: bool
    large_body_bytes: int
    large_requests: int

    @classmethod
    def derive(
        cls,
        names: Sequence[str],
        *,
        text_bytes: int = 0,
        max_rows: int,
        max_body_bytes: int | None,
        large_body_bytes: int,
        large_requests: int,
    ) -> Limits:
        if max_body_bytes is None:
            max_body_bytes = derived_body_limit(names, max_rows, text_bytes=text_bytes)
            derived = True
        else:
            derived = False
        return cls(
            max_body_bytes=max_body_bytes,
            body_limit_derived=derived,
            large_body_bytes=large_body_bytes,
            large_requests=large_requests,
        )

    def worst_case_bytes(self, max_parse_bytes: int) -> int:
        """Memory requests in flight may take at once: every slot holding a full body being
        parsed, plus 64 MiB for small bodies, answers and the rest."""
        return self.large_requests * (self.max_body_bytes + max_parse_bytes) + 64 * 2**20


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    trim: Callable[[int], int] | None = getattr(libc, "malloc_trim", None)
    return trim


_TRIM = _malloc_trim()


def release_memory() -> None:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim``; elsewhere a
    no-op). After a large request the parse's freed memory otherwise stays in the process:
    measured, 40 MB idle became 150 MB after one full batch, and stayed there, eating the
    headroom the next request needs."""
    if _TRIM is not None:
        _TRIM(0)


def container_memory_limit() -> int | None:
    """This process's cgroup memory limit (v2 or v1), None when unlimited or unknown."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = Path(path).read_text().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < 2**60:
            return int(raw)
        return None
    return None


class Gate:
    """At most ``slots`` large requests at once; at most ``queue`` waiting for a slot, each for
    at most ``wait_s`` seconds. Anything beyond is refused at once with 503 and
    ``Retry-After``: a full server says so rather than hang or buffer without bound."""

    def __init__(self, *, slots: int, queue: int, wait_s: float) -> None:
        self.slots = slots
        self.queue = queue
        self.wait_s = wait_s
        self._semaphore = asyncio.Semaphore(slots)
        self.waiting = 0
        self.taken = 0

    async def acquire(self) -> None:
        if not self._semaphore.locked():
            await self._semaphore.acquire()
            self.taken += 1
            return
        if self.waiting >= self.queue:
            raise ServingError.busy(
                f"all {self.slots} slots for large requests are taken and {self.waiting} wait "
                "(SERVING_LARGE_REQUESTS, SERVING_LARGE_QUEUE); retry later or send smaller "
                "batches",
                retry_after_s=1,
            )
        self.waiting += 1
        try:
            async with asyncio.timeout(self.wait_s):
                await self._semaphore.acquire()
            self.taken += 1
        except TimeoutError:
            raise ServingError.busy(
                f"no slot for a large request freed up within {self.wait_s:g} s "
                "(SERVING_QUEUE_TIMEOUT_S); retry later",
                retry_after_s=max(1, round(self.wait_s)),
            ) from None
        finally:
            self.waiting -= 1

    def release(self) -> None:
        self.taken -= 1
        self._semaphore.release()
