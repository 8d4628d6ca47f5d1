"""`pipeline contract-test --image REF`: run tests/contract against the image, write the evidence.

Starts the image through pipeline.image (memory and CPU limits from params `contract`), waits for
readiness within `contract.time_to_ready_s`, runs `pytest tests/contract --base-url ...` in a
subprocess, and always stops and removes the container, Ctrl-C included. The evidence is
`build/contract-report.json` (format: docs/contract-report.md), bound to the image id and, once
pushed, its digest; plus JUnit XML and the container's log beside it.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.request import urlopen

from pipeline.config import ContractParams
from pipeline.errors import PipelineError

REPORT_SCHEMA = "gitops-ml-pipeline/contract-report/v1"
SERVING_PORT = 8080
SUITE = Path("tests/contract")


class ContractFailed(PipelineError):
    """The image did not honour its contract; the report says which checks failed."""


def wait_ready(url: str, *, timeout: float, alive: Any) -> float:
    """Seconds until GET url answers 200; raise if `alive()` turns false or time runs out."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if not alive():
            raise ContractFailed("the container exited before it became ready")
        try:
            with urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except (URLError, OSError):
            pass
        time.sleep(0.05)
    raise ContractFailed(
        f"not ready within contract.time_to_ready_s = {timeout:g} s ({url} never answered 200)"
    )


def _check_of(classname: str) -> str:
    module = classname.rsplit(".", 1)[-1]
    return module.removeprefix("test_")


def summarize_junit(path: Path) -> dict[str, Any]:
    """Counts per check (test module), failed test ids, and properties the tests recorded."""
    counts: dict[str, Counter[str]] = {}
    failed: list[str] = []
    properties: dict[str, Any] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        check = _check_of(case.get("classname", ""))
        if case.find("failure") is not None or case.find("error") is not None:
            outcome = "failed"
            failed.append(f"{check}::{case.get('name')}")
        elif case.find("skipped") is not None:
            outcome = "skipped"
        else:
            outcome = "passed"
        counts.setdefault(check, Counter())[outcome] += 1
        for prop in case.iter("property"):
            value = prop.get("value", "")
            try:
                properties[prop.get("name", "")] = json.loads(value)
            except json.JSONDecodeError:
                properties[prop.get("name", "")] = value
    return {
        "checks": {k: dict(v) for k, v in sorted(counts.items())},
        "failed": failed,
        "properties": properties,
    }


def run_suite(
    *, base_url: str, junit: Path, model_card: Path, golden: Path, labels: Path, params: Path
) -> int:
    command = [
        sys.executable,
        "-m",
        "pytest",
        str(SUITE),
        "-p",
        "no:cacheprovider",
        "-q",
        f"--base-url={base_url}",
        f"--model-card={model_card}",
        f"--golden={golden}",
        f"--image-labels={labels}",
        f"--contract-params={params}",
        f"--junitxml={junit}",
    ]
    return subprocess.run(command, check=False).returncode


def tool_versions(engine: str) -> dict[str, str]:
    versions = {"python": platform.python_version(), "container engine": engine}
    for name in ("pytest", "schemathesis", "httpx", "hypothesis"):
        versions[name] = metadata.version(name)
    return versions


def write_report(
    *,
    path: Path,
    image: dict[str, Any],
    model: dict[str, Any],
    summary: dict[str, Any],
    time_to_ready_s: float | None,
    started: datetime,
    tools: dict[str, str],
    budgets: ContractParams,
    error: str | None,
) -> dict[str, Any]:
    props = summary.get("properties", {})
    verdict = "pass" if error is None and not summary.get("failed") else "fail"
    report = {
        "schema": REPORT_SCHEMA,
        "verdict": verdict,
        "error": error,
        "image": image,
        "model": model,
        "started": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "duration_s": round((datetime.now(UTC) - started).total_seconds(), 2),
        "time_to_ready_s": None if time_to_ready_s is None else round(time_to_ready_s, 3),
        "latency_ms": {k: props.get(f"{k}_ms") for k in ("p50", "p95", "p99")},
        "fuzz_cases": props.get("fuzz_cases"),
        "budgets": budgets.model_dump(),
        "checks": summary.get("checks", {}),
        "failed": summary.get("failed", []),
        "tools": tools,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return report
