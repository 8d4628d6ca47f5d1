"""Adaptive micro-batching of concurrent 1-row requests (issue 18), on by default.

Concurrent single-row requests share one model call, as BentoML and MLServer offer: measured in
tools/bench/README.md (Micro-batching), it lowers CPU per 1-row request at 8 and 32 concurrent
clients and leaves p99 at one client unchanged.

Who joins: a request whose parsed input is one numeric row, for an ONNX classifier, that asks
for labels only (``/invocations``; ``/v2/.../infer`` with ``outputs`` naming only ``label``)
and finds other requests in flight (serving.server counts the requests of the same wake-up
and the running request tasks).
A request that is alone predicts at once, exactly as without batching (one client pays one
comparison). Probabilities and a regressor's values are never batched: onnxruntime's float32
sums depend on the batch's shape (measured: 3.5018e-05 batched vs 3.5048e-05 alone, within the
runtime's 1e-5 tolerance but not bit-equal), and a served answer should not depend on who else
was asking. Labels are the same batched or alone (a row would have to sit within float32
rounding of a tie between two classes to differ).

Each request keeps its own parsing and validation (its own 400/413/415, the float32 range
check included), request id, access-log line, metrics and exposure; only the runtime call is
shared (:meth:`serving.handlers.Handlers.predict`, which ``invocations`` and ``infer`` call).

When a batch runs: at the end of the current event-loop turn (``SERVING_BATCH_WINDOW_MS=0``,
the default: every request whose bytes arrived in the same wake-up), or after the window; at
once when it holds ``SERVING_BATCH_MAX_ROWS`` rows or every request in flight has joined it.
``SERVING_BATCH_MAX_ROWS=1`` turns batching off. A runtime failure fails every request of
that batch alike, each with the 500 it would have had alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["MicroBatcher", "Outputs"]

#: (labels, probabilities) as :meth:`serving.runtime.OnnxSession.run` returns them
Outputs = tuple[npt.NDArray[Any], npt.NDArray[Any]]
Run = Callable[[npt.NDArray[Any]], Outputs]


class MicroBatcher:
    """Gathers 1-row matrices into one ``run`` call; one per app, used on the event loop only."""

    def __init__(
        self, *, run: Run, window_s: float, max_rows: int, observe: Callable[[int], None]
    ) -> None:
        self._run = run
        self._window_s = window_s
        self._max_rows = max_rows
        self._observe = observe
        self._rows: list[npt.NDArray[Any]] = []
        self._waiting: list[asyncio.Future[Outputs]] = []
        self._handle: asyncio.Handle | asyncio.TimerHandle | None = None

    def submit(self, x: npt.NDArray[Any], *, running: int) -> asyncio.Future[Outputs]:
        """A future of the outputs of ``x`` (one row), settled when its batch has run;
        ``running``: the requests in flight, this one included (once they have all joined,
        waiting longer gains nothing)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outputs] = loop.create_future()
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
        try:
            labels, probabilities = self._run(x)
        except Exception as exc:  # the runtime's own failure: every request of the batch sees it
            for future in waiting:
                if not future.done():
                    future.set_exception(exc)
            return
        self._observe(len(rows))
        for i, future in enumerate(waiting):
            if not future.done():  # a cancelled waiter (client gone) is skipped
                future.set_result((labels[i : i + 1], probabilities[i : i + 1]))
