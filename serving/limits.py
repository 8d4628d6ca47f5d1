"""What one request may cost, decided before anything is allocated, and who waits for what.

Every bound is checked before the memory it protects is taken:

1. **Bytes.** ``SERVING_MAX_BODY_BYTES`` is refused from ``Content-Length`` before a byte is
   read, or as soon as the bytes read pass it. Its default is derived from the model
   (:func:`derived_body_limit`): what ``SERVING_MAX_ROWS`` rows of its columns take in the most
   verbose format a client may send, so a legitimate batch always fits and nothing much larger
   does.
2. **JSON values.** A parsed JSON value costs up to ~72 bytes of Python objects (an empty list
   or object), against 2-3 bytes of JSON: a body within the byte limit can still ask for 25x
   its size. Before a large body is parsed, its structural bytes (``,``, ``[``, ``{``; one C
   scan each) bound the number of values the parser can create; more than a request of
   ``SERVING_MAX_ROWS`` rows can hold is a 413 (:func:`json_value_budget`). Small bodies skip
   the scan: 64 KiB cannot become more than ~2 MB.
3. **Rows and cells.** Rows are counted first (CSV: while reading, stopping at ``max_rows +
   1``), every row's width is checked before one value is converted, and values are converted
   with an explicit float64 dtype, never an inferred one (:mod:`serving.schema`).

The event loop: a body larger than ``SERVING_LARGE_BODY_BYTES`` waits for one of
``SERVING_LARGE_REQUESTS`` slots (:class:`Gate`) *before* it is read, and is parsed and predicted
in a thread; at most ``SERVING_LARGE_QUEUE`` wait, each at most ``SERVING_QUEUE_TIMEOUT_S``, the
rest get 503 with ``Retry-After``. So the memory of requests in flight is about
``LARGE_REQUESTS x (body + 72 B x values + matrix)`` plus small bodies, and liveness answers
while a 10,000-row batch is parsed. A thread hop costs more than a 1-row request, which stays
on the loop. Clients that send slowly are cut off by :class:`Deadlines` (408).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

from serving.errors import ServingError

__all__ = [
    "Deadlines",
    "Gate",
    "Limits",
    "derived_body_limit",
    "json_value_budget",
    "structural_bytes",
]

#: Bytes a value may take on the wire beyond its column name: the longest float64 repr
#: ("-2.2250738585072014e-308", 24), "": " and ", ", a newline and 8 spaces of indentation.
VALUE_BYTES = 40
#: Per row: braces or brackets, separators, its newline, a pandas index entry.
ROW_BYTES = 24
#: Keys, the column list, ``params``, V2 tensor headers.
HEADROOM_BYTES = 64 * 1024
#: The most memory one JSON value costs as a Python object (an empty dict: 64 B + its slot).
BYTES_PER_JSON_VALUE = 72
#: Bodies up to this size are not scanned for values: they cannot cost more than ~2 MB.
SCAN_ABOVE_BYTES = 64 * 1024


def structural_bytes(body: bytes | str) -> int:
    """An upper bound of the values a JSON parser creates from ``body``: each value but the
    first follows a ``,`` or opens a container (bytes inside strings only make it larger)."""
    if isinstance(body, str):
        return body.count(",") + body.count("[") + body.count("{")
    return body.count(b",") + body.count(b"[") + body.count(b"{")


def derived_body_limit(names: Sequence[str], max_rows: int) -> int:
    """Bytes ``max_rows`` rows of these columns take in the most verbose format a client may
    send: ``dataframe_records``, every column name repeated per row (JSON-escaped), full
    float64 precision, indented; plus :data:`HEADROOM_BYTES`."""
    per_value = max(len(json.dumps(name)) for name in names) + VALUE_BYTES
    return max_rows * (len(names) * per_value + ROW_BYTES) + HEADROOM_BYTES


def json_value_budget(names: Sequence[str], max_rows: int) -> int:
    """The most values (by :func:`structural_bytes`) a legitimate request of ``max_rows`` rows
    holds: two per cell (a V2 per-column tensor nests each value, ``[[v], [v]]``), a row's
    container and index entry, separators inside column names repeated per record, and the
    keys, the column list and tensor headers."""
    in_names = sum(structural_bytes(json.dumps(name)) for name in names)
    per_row = 2 * len(names) + 2 + in_names
    return max_rows * per_row + 8 * len(names) + in_names + 1024


@dataclass(frozen=True)
class Limits:
    """The transport bounds for one served model, built once when the model is ready (the
    content bounds, rows and JSON values, are :class:`serving.schema.InputSchema`'s)."""

    max_body_bytes: int
    body_limit_derived: bool
    large_body_bytes: int

    @classmethod
    def derive(
        cls,
        names: Sequence[str],
        *,
        max_rows: int,
        max_body_bytes: int | None,
        large_body_bytes: int,
    ) -> Limits:
        if max_body_bytes is None:
            max_body_bytes = derived_body_limit(names, max_rows)
            derived = True
        else:
            derived = False
        return cls(
            max_body_bytes=max_body_bytes,
            body_limit_derived=derived,
            large_body_bytes=large_body_bytes,
        )


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


class Deadlines:
    """Body-read deadlines for tasks, enforced by one reaper task that ticks while any deadline
    is pending: registering costs a dictionary insert, where a timer per request would cost a
    timer heap entry (measurable on 1-row requests). A task past its deadline is cancelled,
    and :meth:`expired` tells that cancellation from any other."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._tick = min(1.0, seconds / 4)
        self._due: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._reaper: asyncio.Task[None] | None = None

    def start(self, task: asyncio.Task[object], *, seconds: float | None = None) -> None:
        self._due[task] = time.monotonic() + (self.seconds if seconds is None else seconds)
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(self._reap())

    def remaining(self, task: asyncio.Task[object]) -> float:
        return max(0.0, self._due.get(task, 0.0) - time.monotonic())

    def stop(self, task: asyncio.Task[object]) -> None:
        self._due.pop(task, None)
        self._expired.discard(task)

    def expired(self, task: asyncio.Task[object]) -> bool:
        """True once, for a task this reaper cancelled (which is then uncancelled)."""
        if task in self._expired:
            self._expired.discard(task)
            task.uncancel()
            return True
        return False

    async def _reap(self) -> None:
        try:
            while self._due:
                await asyncio.sleep(self._tick)
                now = time.monotonic()
                for task, due in list(self._due.items()):
                    if due <= now:
                        del self._due[task]
                        self._expired.add(task)
                        task.cancel()
        finally:
            self._reaper = None

    def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
