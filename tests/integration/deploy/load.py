"""A bounded load client: fixed concurrency, one golden row per request, through one port.

Each worker keeps one keep-alive connection (re-opened after an error) and posts the row at
most ``rate`` times a second (None: as fast as answers come) until told to stop or until the
time or request bound is hit, whichever comes first. A paced client is the "constant load" of a
rollout test: it leaves the 2 cores to the servers being rolled, instead of starving them. A request
counts as failed when it raises, answers other than 200, or predicts another label than the
golden one: a wrong answer is as lost as no answer.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LoadReport:
    sent: int = 0
    failed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def line(self) -> str:
        rate = self.sent / self.seconds if self.seconds else 0.0
        why = f" ({dict(self.errors)})" if self.errors else ""
        return f"sent {self.sent}, failed {self.failed}{why} in {self.seconds:.1f} s ({rate:.0f}/s)"


class Load:
    """``with Load(port, golden, concurrency=4) as load: ...``; ``load.report`` after."""

    def __init__(
        self,
        port: int,
        golden: dict[str, Any],
        *,
        concurrency: int = 4,
        rate: float | None = None,
        max_seconds: float = 300,
        max_requests: int = 200_000,
    ) -> None:
        row = golden["rows"][0]
        self.body = json.dumps(
            {
                "dataframe_split": {
                    "columns": golden["features"],
                    "data": [[row["inputs"][f] for f in golden["features"]]],
                }
            }
        ).encode()
        self.expected = [row["label"]]
        self.port, self.concurrency, self.rate = port, concurrency, rate
        self.max_seconds, self.max_requests = max_seconds, max_requests
        self.report = LoadReport()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> Load:
        self._started = time.monotonic()
        for _ in range(self.concurrency):
            thread = threading.Thread(target=self._work, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self.report.seconds = time.monotonic() - self._started

    def _work(self) -> None:
        deadline = self._started + self.max_seconds
        connection: http.client.HTTPConnection | None = None
        period = 1.0 / self.rate if self.rate else 0.0
        next_at = time.monotonic()
        while not self._stop.is_set() and time.monotonic() < deadline:
            if period:
                next_at += period
                pause = next_at - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            with self._lock:
                if self.report.sent >= self.max_requests:
                    return
                self.report.sent += 1
            problem = None
            try:
                if connection is None:
                    connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                connection.request(
                    "POST", "/invocations", self.body, {"Content-Type": "application/json"}
                )
                response = connection.getresponse()
                payload = response.read()
                if response.status != 200:
                    problem = f"HTTP {response.status}"
                elif json.loads(payload)["predictions"] != self.expected:
                    problem = "wrong prediction"
            except (OSError, http.client.HTTPException, ValueError) as exc:
                problem = type(exc).__name__
                if connection is not None:
                    connection.close()
                connection = None
            if problem:
                with self._lock:
                    self.report.failed += 1
                    self.report.errors[problem] += 1
        if connection is not None:
            connection.close()
