"""Latency budget: p95 of sequential 1-row requests, reported; fails only past the budget."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np

from pipeline.config import ContractParams


def test_p95_of_sequential_one_row_requests_is_within_budget(
    http: httpx.Client,
    golden: dict[str, Any],
    budgets: ContractParams,
    record_property: Callable[[str, object], None],
) -> None:
    body = {"dataframe_records": [golden["rows"][0]["inputs"]]}
    for _ in range(10):  # warm the connection and the runtime
        http.post("/invocations", json=body)
    seconds = []
    for _ in range(budgets.latency_requests):
        started = time.perf_counter()
        response = http.post("/invocations", json=body)
        seconds.append(time.perf_counter() - started)
        assert response.status_code == 200
    p50, p95, p99 = (float(np.percentile(seconds, q)) * 1000 for q in (50, 95, 99))
    for name, value in (("p50_ms", p50), ("p95_ms", p95), ("p99_ms", p99)):
        record_property(name, round(value, 3))
    print(
        f"latency over {len(seconds)} sequential 1-row requests: "
        f"p50 {p50:.2f} ms, p95 {p95:.2f} ms, p99 {p99:.2f} ms"
    )
    assert p95 <= budgets.latency_p95_ms, (
        f"p95 {p95:.2f} ms exceeds contract.latency_p95_ms {budgets.latency_p95_ms}"
    )
