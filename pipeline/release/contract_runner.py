"""`pipeline contract-test --image REF`: run the contract suite against the image, write evidence.

Starts the image through pipeline.image.engine (memory and CPU limits from params `contract`),
waits for readiness within `contract.time_to_ready_s`, runs `pytest tests/contract tests/hostile
--base-url ... --container ...` in a subprocess (the hostile-input suite last: it floods the
server on purpose, and watches the container's memory and life), and always stops and removes
the container, Ctrl-C included. The evidence is `build/contract-report.json` (format:
docs/contract-report.md), bound to the image id and, once pushed, its digest; plus JUnit XML and
the container's log beside it. A passing verdict needs every hostile case survived.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from pipeline import artifacts
from pipeline.artifacts import REPORT_SCHEMA, ContractReport, HostileCase, HostileReport
from pipeline.config import ContractParams, Params
from pipeline.errors import ContractFailed, ImageError
from pipeline.image.engine import Engine
from pipeline.image.probe import PORT, SmokeFailed, wait_ready

log = logging.getLogger("pipeline")
SUITE = Path("tests/contract")
HOSTILE = Path("tests/hostile")


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
    *,
    base_url: str,
    junit: Path,
    model_card: Path,
    golden: Path,
    labels: Path,
    params: Path,
    container: str | None = None,
) -> int:
    command = [
        sys.executable,
        "-m",
        "pytest",
        str(SUITE),
        str(HOSTILE),
        "-p",
        "no:cacheprovider",
        "-q",
        f"--base-url={base_url}",
        f"--model-card={model_card}",
        f"--golden={golden}",
        f"--image-labels={labels}",
        f"--contract-params={params}",
        f"--junitxml={junit}",
        *("-o", "junit_family=xunit1"),  # xunit1 keeps the properties tests record
        *([f"--container={container}"] if container else []),
    ]
    # Options inherited from the caller's environment (PYTEST_ADDOPTS="-k nomatch", say) must not
    # change what the suite checks, nor may the pytest plugins that happen to be installed: the
    # suite needs none (schemathesis and hypothesis are imported, not plugged in), and loading
    # them all was 5 of the run's first 9 seconds.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS")}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    return subprocess.run(command, check=False, env=env).returncode


def tool_versions(engine: str) -> dict[str, str]:
    versions = {"python": platform.python_version(), "container engine": engine}
    for name in ("pytest", "schemathesis", "httpx", "hypothesis"):
        versions[name] = metadata.version(name)
    return versions


def build_report(
    *,
    image: artifacts.TestedImage,
    model: artifacts.TestedModel,
    summary: dict[str, Any],
    time_to_ready_s: float | None,
    started: datetime,
    tools: dict[str, str],
    budgets: ContractParams,
    error: str | None,
    pytest_exit: int | None,
    suite: list[str],
) -> ContractReport:
    """The report; ``verdict`` is pass only when it is complete (evidence.completeness_problem:
    pytest exited 0, every check module of ``suite`` passed tests and failed none, the fuzz
    budget was met) and nothing went wrong around it."""
    from pipeline.release.evidence import completeness_problem

    props = summary.get("properties", {})
    checks: dict[str, dict[str, int]] = summary.get("checks", {})
    passed = sum(c.get("passed", 0) for c in checks.values())
    if error is None and passed == 0:
        error = "the contract suite ran no test"
    hostile = hostile_report(props, checks.get("hostile", {}))
    if error is None and not hostile.cases:
        error = f"the hostile-input suite ({HOSTILE}) ran no case"
    if error is None and pytest_exit not in (0, 1):  # 1: some test failed (the JUnit says which)
        error = f"pytest exited {pytest_exit} (usage error, interrupted, or no test collected)"
    verdict: Literal["pass", "fail"] = (
        "pass" if error is None and not summary.get("failed") and hostile.passed else "fail"
    )
    report = ContractReport(
        schema=REPORT_SCHEMA,
        verdict=verdict,
        error=error,
        image=image,
        model=model,
        started=started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        duration_s=round((datetime.now(UTC) - started).total_seconds(), 2),
        time_to_ready_s=None if time_to_ready_s is None else round(time_to_ready_s, 3),
        latency_ms={k: props.get(f"{k}_ms") for k in ("p50", "p95", "p99")},
        fuzz_cases=props.get("fuzz_cases"),
        budgets=budgets.model_dump(),
        checks=checks,
        failed=summary.get("failed", []),
        tools=tools,
        hostile=hostile,
        suite=suite,
        pytest_exit=pytest_exit,
    )
    incomplete = completeness_problem(report)
    if incomplete is None:
        return report
    reason = report.error or (None if report.failed else f"incomplete: {incomplete}")
    return report.model_copy(update={"verdict": "fail", "error": reason})


def hostile_report(properties: dict[str, Any], counts: dict[str, int]) -> HostileReport:
    """The hostile section from what tests/hostile recorded (``hostile:<case>`` properties)
    and its test counts: passed only if it ran, no test of it failed and every case survived."""
    cases = [
        HostileCase.model_validate({**value, "name": name.removeprefix("hostile:")})
        for name, value in properties.items()
        if name.startswith("hostile:") and isinstance(value, dict)
    ]
    peaks = [c.peak_mb for c in cases if c.peak_mb is not None]
    limits = {c.memory_limit_mb for c in cases if c.memory_limit_mb is not None}
    return HostileReport(
        passed=bool(cases)
        and counts.get("passed", 0) > 0
        and counts.get("failed", 0) == 0
        and all(c.survived for c in cases),
        cases=cases,
        peak_mb=max(peaks) if peaks else None,
        memory_limit_mb=limits.pop() if len(limits) == 1 else None,
    )


def suite_modules(suite: Path = SUITE) -> list[str]:
    """The check modules of the contract suite: each must pass tests in every report."""
    return sorted(_check_of(p.stem) for p in suite.glob("test_*.py"))


def contract_test(
    *, image_ref: str, params: Params, params_file: Path, out_dir: Path
) -> ContractReport:
    """Start `image_ref`, run the suite against it, write the report; raise unless it passed."""
    started = datetime.now(UTC)
    budgets = params.contract
    card_path, golden = artifacts.MODEL_CARD, artifacts.GOLDEN
    card = artifacts.read_card(card_path)
    artifacts.read_golden(golden)
    engine = Engine.connect()
    info = engine.image(image_ref)
    if info is None:
        raise ImageError(f"no image {image_ref!r} here: build it (`dvc repro`) or pull it first")
    if info.labels.get("ml.model.sha256") != card.sha256:
        raise ContractFailed(
            f"{image_ref} holds model sha256 {info.labels.get('ml.model.sha256')}, but "
            f"{card_path} is {card.sha256}: test the image built from this workspace's model "
            "(`dvc repro`, then build/image.json names it)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    labels_file, junit = out_dir / "contract-labels.json", out_dir / "contract-junit.xml"
    container_log = out_dir / "contract-container.log"
    labels_file.write_text(json.dumps(info.labels, indent=2) + "\n")
    junit.unlink(missing_ok=True)
    ready: float | None = None
    error: str | None = None
    code: int | None = None
    log.info("starting %s (memory %d MB, %g CPU)", image_ref, budgets.memory_mb, budgets.cpus)
    clock = time.monotonic()
    with engine.run(image_ref, port=PORT, memory=f"{budgets.memory_mb}m", cpus=budgets.cpus) as box:
        url = f"http://127.0.0.1:{box.host_port}"
        try:
            ready = wait_ready(box, url, started=clock, timeout=budgets.time_to_ready_s)
            log.info("ready after %.2f s; running %s against %s", ready, SUITE, url)
            code = run_suite(
                base_url=url,
                junit=junit,
                model_card=card_path,
                golden=golden,
                labels=labels_file,
                params=params_file,
                container=box.id,
            )
        except SmokeFailed as exc:
            error = f"readiness: {exc}"
        finally:
            container_log.write_text(box.logs(tail=None) + "\n")
    summary = summarize_junit(junit) if junit.is_file() else {}
    if error is None and not junit.is_file():
        error = "the contract suite did not run (no JUnit report)"
    report = build_report(
        image=artifacts.TestedImage(
            ref=image_ref, id=info.id, digests=info.digests, labels=info.labels
        ),
        model=artifacts.TestedModel(
            model_name=card.model_name,
            model_version=card.model_version,
            run_id=card.run_id,
            sha256=card.sha256,
        ),
        summary=summary,
        time_to_ready_s=ready,
        started=started,
        tools=tool_versions(engine.describe()),
        budgets=budgets,
        error=error,
        pytest_exit=code,
        suite=suite_modules(),
    )
    path = artifacts.write_report(report, out_dir / artifacts.CONTRACT_REPORT.name)
    if report.verdict != "pass":
        what = report.error or f"failed checks: {', '.join(report.failed)}"
        raise ContractFailed(
            f"{image_ref} broke its contract: {what}. Report: {path}, container log: "
            f"{container_log}"
        )
    return report
