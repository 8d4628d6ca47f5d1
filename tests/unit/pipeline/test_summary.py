"""`pipeline summary`: the Markdown a CI job or a promotion writes to its job summary."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.artifacts import BaseImage, ImageRecord, Pushed, TestedImage, TestedModel
from pipeline.cli import app
from pipeline.config import ContractParams
from pipeline.errors import PipelineError
from pipeline.release.contract_runner import build_report
from pipeline.release.evidence import REQUIRED_CHECKS
from pipeline.release.summary import RunFiles, ci_summary, release_summary
from tests.support.reports import with_hostile

DIGEST = "sha256:" + "ab" * 32
IMAGE_ID = "sha256:" + "cd" * 32
METRICS = {"accuracy": 0.98245, "log_loss": 0.0777}


def gates(*, passed: bool) -> dict[str, Any]:
    row: dict[str, Any] = {"gate": "threshold", "metric": "accuracy", "requirement": ">= 1.01"}
    row |= {"champion": None, "candidate": 0.98245, "passed": passed, "note": ""}
    return {
        "passed": passed,
        "model": {"name": "clf", "version": "3"},
        "champion": {"alias": "production", "version": None},
        "rows": [row],
    }


def image(*, pushed: bool) -> dict[str, Any]:
    built = ImageRecord(
        image="clf:0a8607d91425",
        id=IMAGE_ID,
        tags=["clf:0a8607d91425", "clf:latest"],
        labels={"ml.model.name": "clf", "ml.model.version": "3"},
        size_bytes=391_700_000,
        size_mb=391.7,
        max_size_mb=400.0,
        content_hash="0a8607d91425" + "0" * 52,
        base=BaseImage(ref="python:3.11-slim-bookworm", id="sha256:" + "ee" * 32, fallback=False),
        build=None,
        smoke={"time_to_ready_s": 0.7},
        engine="Docker Engine 20.10",
    )
    if pushed:
        built = built.model_copy(
            update={
                "digest": DIGEST,
                "registry": Pushed(
                    repository="reg/clf",
                    digest=DIGEST,
                    ref=f"reg/clf@{DIGEST}",
                    tags=["0a8607d91425", "sha-1a2b"],
                    pushed_at="2026-01-01T00:00:00Z",
                    seconds=1.0,
                ),
            }
        )
    return built.model_dump(mode="json")


def report(*, image_id: str = IMAGE_ID) -> dict[str, Any]:
    return build_report(
        image=TestedImage(ref="clf:0a8607d91425", id=image_id, digest=DIGEST),
        model=TestedModel(model_name="clf", model_version="3", run_id="r", sha256="0" * 64),
        summary=with_hostile(
            {
                "checks": {check: {"passed": 1} for check in REQUIRED_CHECKS},
                "failed": [],
                "properties": {"p95_ms": 1.1, "fuzz_cases": 530},
            }
        ),
        time_to_ready_s=0.7,
        started=datetime.now(UTC),
        tools={},
        budgets=ContractParams(latency_p95_ms=25.0, time_to_ready_s=10),
        error=None,
        pytest_exit=0,
        suite=list(REQUIRED_CHECKS),
    ).dump()


def write(tmp_path: Path, **files: Any) -> RunFiles:
    paths = {name: tmp_path / f"{name}.json" for name in ("metrics", "gates", "image", "contract")}
    paths["metrics_diff"] = tmp_path / "diff.json"
    for name, content in files.items():
        paths[name].write_text(json.dumps(content))
    return RunFiles(**paths)


def test_a_run_stopped_by_a_gate_shows_the_failing_gate_and_that_nothing_was_pushed(
    tmp_path: Path,
) -> None:
    text = ci_summary(write(tmp_path, metrics=METRICS, gates=gates(passed=False)))

    assert text.startswith("## Pipeline: ❌ a quality gate failed; nothing was pushed")
    assert "### Quality gates: **FAIL**" in text
    assert "| threshold | accuracy | >= 1.01 | — | 0.9825 | **FAIL** |" in text
    assert "| accuracy | 0.9825 |" in text
    assert "the run stopped before containerize" in text


def test_a_released_run_shows_the_diff_the_digest_the_size_and_the_contract_verdict(
    tmp_path: Path,
) -> None:
    diff = {"metrics/holdout.json": {"accuracy": {"old": 0.97, "new": 0.9825, "diff": 0.0125}}}
    files = write(
        tmp_path,
        metrics=METRICS,
        gates=gates(passed=True),
        image=image(pushed=True),
        contract=report(),
        metrics_diff=diff,
    )

    text = ci_summary(files, diff_base="origin/main")

    assert text.startswith("## Pipeline: ✅ gates and contract test passed; pushed")
    assert "### `dvc metrics diff` against `origin/main`" in text
    assert "| metrics/holdout.json | accuracy | 0.9700 | 0.9825 | +0.0125 |" in text
    assert f"| digest | `{DIGEST}` |" in text
    assert "| size | 391.7 MB (limit 400.0 MB) |" in text
    assert f"run the **promote** workflow with image `{DIGEST}`" in text
    assert "| tests | 6 passed, 0 failed |" in text  # the five check modules, one hostile case
    assert "stale" not in text


def test_a_diff_with_no_baseline_says_the_base_has_no_committed_metrics(tmp_path: Path) -> None:
    diff = {"metrics/holdout.json": {"accuracy": {"old": None, "new": 0.98245}}}
    text = ci_summary(write(tmp_path, metrics=METRICS, metrics_diff=diff), diff_base="abc123")

    assert "| metrics/holdout.json | accuracy | — | 0.9825 | — |" in text
    assert "_`abc123` has no committed metrics to compare with._" in text


def test_a_run_that_stopped_before_validate_says_which_files_are_missing(tmp_path: Path) -> None:
    text = ci_summary(write(tmp_path))

    assert text.startswith("## Pipeline: ❌ stopped before the image was built")
    assert "was not written: the run stopped before validate" in text
    assert "the contract test did not run" in text


def test_a_contract_report_for_another_image_is_flagged_as_stale(tmp_path: Path) -> None:
    files = write(
        tmp_path,
        gates=gates(passed=True),
        image=image(pushed=False),
        contract=report(image_id="sha256:" + "ef" * 32),
    )

    text = ci_summary(files)

    assert "not pushed" in text
    assert "⚠️ stale" in text


def test_a_truncated_input_file_is_an_error_naming_it(tmp_path: Path) -> None:
    files = write(tmp_path)
    files.gates.write_text('{"passed": tr')

    with pytest.raises(PipelineError, match=r"gates\.json is not JSON"):
        ci_summary(files)


def state(digest: str, *, history: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "environment": "production",
        "action": "promote",
        "image": {"repository": "reg/clf", "digest": digest},
        "model": {"name": "clf", "version": "3", "mlflow_run_id": "r1"},
        "evidence": {
            "digest": "sha256:" + "77" * 32,
            "tag": digest.replace(":", "-") + ".contract",
        },
        "promoted_at": "2026-11-24T21:30:05Z",
        "promoted_by": "octocat",
        "history": history,
    }


def test_the_release_summary_shows_the_digest_the_model_and_what_it_replaced(
    tmp_path: Path,
) -> None:
    before = "sha256:" + "01" * 32
    earlier = {
        k: v for k, v in state(before, history=[]).items() if k not in ("environment", "history")
    }
    path = tmp_path / "production.yaml"
    path.write_text(yaml.safe_dump(state(DIGEST, history=[earlier])))

    text = release_summary(path)

    assert text.startswith("## production: promote")
    assert f"| image | `reg/clf@{DIGEST}` |" in text
    assert "| model | clf version 3 |" in text
    assert f"| before | `{before}` (promote) |" in text


def test_the_summary_command_appends_to_the_output_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/holdout.json").write_text(json.dumps(METRICS))
    output = tmp_path / "summary.md"
    output.write_text("earlier step\n")

    done = CliRunner().invoke(app, ["summary", "--output", str(output)])

    assert done.exit_code == 0, done.output
    text = output.read_text()
    assert text.startswith("earlier step\n## Pipeline:")
    assert "| accuracy | 0.9825 |" in text
