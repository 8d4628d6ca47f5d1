"""A contract run's JUnit summary as the runner reads it, for tests that build reports without
running the suites: what tests/hostile records for a case the server survived."""

from __future__ import annotations

from typing import Any

SURVIVED = {
    "statuses": {"400": 1},
    "seconds": 0.1,
    "liveness_max_ms": 5.0,
    "liveness_probes": 1,
    "ready": 200,
    "golden": True,
    "survived": True,
    "problems": [],
}


def with_hostile(summary: dict[str, Any], **case: Any) -> dict[str, Any]:
    """``summary`` plus one hostile case (survived, unless ``case`` says otherwise) and its
    passed test."""
    record = {**SURVIVED, **case}
    outcome = "passed" if record["survived"] else "failed"
    checks = {**summary.get("checks", {}), "hostile": {outcome: 1}}
    properties = {**summary.get("properties", {}), "hostile:a_case": record}
    return {**summary, "checks": checks, "properties": properties}
