"""Adaptive micro-batching of concurrent 1-row requests (a prototype, off by default).

Issue 18: gather concurrent single-row requests into one model call, as BentoML and MLServer
offer, only if it measurably raises 1-row throughput at c=8/c=32 without hurting p99 at c=1.

How it gathers: a request that finds no other request in flight predicts at once, on the loop,
exactly as without batching (c=1 pays one comparison). Otherwise its parsed row joins a queue;
the queue is dispatched as one ``session.run`` at the end of the current event-loop iteration
(``SERVING_BATCH_WINDOW_MS=0``: every request whose bytes arrived in the same wake-up), or
after the window, or at once when it holds ``SERVING_BATCH_MAX_ROWS`` rows or every request in
progress has joined it. Each request keeps
its own parsing and validation (its own 4xx), request id, access-log line and metrics; only the
runtime call is shared. A runtime error fails every request of that batch alike.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["MicroBatcher"]

Run = Any  # OnnxSession.run: (matrix) -> (labels, probabilities)


class MicroBatcher:
    def __init__(self, *, run: Run, window_s: float, max_rows: int) -> None:
        self._run = run
        self._window_s = window_s
        self._max_rows = max_rows
        self._rows: list[npt.NDArray[Any]] = []
        self._waiting: list[asyncio.Future[Any]] = []
        self._handle: asyncio.Handle | asyncio.TimerHandle | None = None
        self.batches = 0
        self.batched_rows = 0

    def submit(self, x: npt.NDArray[Any], *, running: int) -> asyncio.Future[Any]:
        """A future of the labels of ``x`` (one row), settled when its batch has run;
        ``running``: the requests in progress, this one included (once they have all joined,
        waiting longer gains nothing)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._rows.append(x)
        self._waiting.append(future)
        if len(self._rows) >= min(self._max_rows, running):
            self._flush()
        elif self._handle is None:
            if self._window_s > 0:
                self._handle = loop.call_later(self._window_s, self._flush)
            else:
                self._handle = loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        rows, waiting = self._rows, self._waiting
        self._rows, self._waiting = [], []
        if not rows:
            return
        x = rows[0] if len(rows) == 1 else np.concatenate(rows)
        self.batches += 1
        self.batched_rows += len(rows)
        try:
            labels = self._run(x)[0]
        except Exception as exc:  # the runtime's own failure: every request of the batch sees it
            for future in waiting:
                if not future.done():
                    future.set_exception(exc)
            return
        for i, future in enumerate(waiting):
            if not future.done():  # a cancelled waiter (client gone) is skipped
                future.set_result(labels[i : i + 1])
