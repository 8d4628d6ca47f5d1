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


def complete_report(
    *, image: Any, model: Any, fuzz_cases: int = 5
) -> Any:  # artifacts.ContractReport
    """A complete passing report as `pipeline contract-test`'s own builder writes it (every
    check module passed, the hostile suite survived, pytest exited 0), for an image these tests
    do not run the suite against: they are about what release does with evidence."""
    from datetime import UTC, datetime

    from pipeline.config import ContractParams
    from pipeline.release.contract_runner import build_report
    from pipeline.release.evidence import REQUIRED_CHECKS

    return build_report(
        image=image,
        model=model,
        summary=with_hostile(
            {
                "checks": {check: {"passed": 1} for check in REQUIRED_CHECKS},
                "failed": [],
                "properties": {"fuzz_cases": fuzz_cases},
            }
        ),
        time_to_ready_s=1.0,
        started=datetime.now(UTC),
        tools={},
        budgets=ContractParams(latency_p95_ms=25, time_to_ready_s=10, fuzz_cases=fuzz_cases),
        error=None,
        pytest_exit=0,
        suite=list(REQUIRED_CHECKS),
    )


def predicates(report: Any, *, sbom: dict[str, Any], revision: str) -> dict[str, Any]:
    """What `pipeline sign` signs: the report, the image's SBOM, provenance naming its commit."""
    return {
        "contract": report.dump(),
        "sbom": sbom,
        "provenance": {
            "buildDefinition": {"resolvedDependencies": [{"digest": {"gitCommit": revision}}]}
        },
    }
