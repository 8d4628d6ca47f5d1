"""The pure parts of building and releasing, checked without Docker or a registry: the build
context's hash and labels, the JUnit summary, the report's verdict, and the evidence check."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline import artifacts
from pipeline.cli import app
from pipeline.config import ContractParams, ImageParams
from pipeline.errors import ArtifactError
from pipeline.image.context import content_hash, image_labels, label_instruction, source_url
from pipeline.image.engine import Base
from pipeline.release.contract_runner import build_report, summarize_junit
from pipeline.release.evidence import REQUIRED_CHECKS, completeness_problem, report_problem
from serving.card import Feature, ModelCard
from tests.support.reports import with_hostile

CONFIG = "sha256:" + "c" * 64


def report(
    *,
    image_id: str = CONFIG,
    digest: str | None = None,
    failed: int = 0,
    passed: int = 3,
    exit_code: int | None = 0,
    fuzz_cases: int = 500,
    sha256: str = "0" * 64,
) -> artifacts.ContractReport:
    checks = {check: {"passed": passed} for check in REQUIRED_CHECKS}
    checks["golden_parity"] = {"passed": passed, "failed": failed}
    return build_report(
        image=artifacts.TestedImage(ref="m:1", id=image_id, digest=digest),
        model=artifacts.TestedModel(model_name="m", model_version="1", run_id="r", sha256=sha256),
        summary=with_hostile(
            {
                "checks": checks,
                "failed": [f"golden_parity::t{i}" for i in range(failed)],
                "properties": {"fuzz_cases": fuzz_cases},
            }
        ),
        time_to_ready_s=0.5,
        started=datetime.now(UTC),
        tools={},
        budgets=ContractParams(latency_p95_ms=25, time_to_ready_s=10, fuzz_cases=500),
        error=None,
        pytest_exit=exit_code,
        suite=list(REQUIRED_CHECKS),
    )


def test_the_content_hash_changes_with_any_file_the_base_or_the_labels_and_nothing_else(
    tmp_path: Path,
) -> None:
    (tmp_path / "a").write_text("one")
    files = [("a", tmp_path / "a")]
    first = content_hash(files, base_id="sha256:1", labels={})
    assert content_hash(files, base_id="sha256:1", labels={}) == first
    assert content_hash(files, base_id="sha256:2", labels={}) != first
    assert content_hash(files, base_id="sha256:1", labels={"k": "v"}) != first
    (tmp_path / "a").write_text("two")
    assert content_hash(files, base_id="sha256:1", labels={}) != first


def test_labels_name_the_model_and_its_runtime_and_survive_the_dockerfile_quoting() -> None:
    card = ModelCard(
        model_name="clf",
        model_version="7",
        run_id="run",
        model_file="model.pkl",
        sha256="f" * 64,
        onnx=None,
        model_type="random_forest",
        target="y",
        features=(Feature("x", "float64"),),
        classes=(0, 1),
        git_commit="abc",
        data_hash="d.dir",
        library_versions={},
        created="2026-01-01T00:00:00Z",
    )
    labels = image_labels(
        ImageParams(name="clf", base="b", fallback_base="f", max_size_mb=400),
        card,
        {"accuracy": 0.9},
        digest="h" * 64,
        base=Base("python:3.11", "sha256:b", fallback=False),
        source=None,
        revision="abc",
    )
    assert labels["ml.model.version"] == "7" and labels["ml.serving.runtime"] == "sklearn"
    assert labels["ml.metrics.holdout.accuracy"] == "0.9"
    assert "org.opencontainers.image.source" not in labels  # no credential-free URL: omitted
    instruction = label_instruction({"a": 'quote " and $HOME'}).decode()
    assert instruction.strip() == 'LABEL "a"="quote \\" and \\$HOME"'


@pytest.mark.parametrize(
    ("remote", "label"),
    [
        ("https://user:token@github.com/acme/repo.git", "https://github.com/acme/repo.git"),
        ("https://github.com/acme/repo", "https://github.com/acme/repo"),
        ("git@github.com:acme/repo.git", "ssh://github.com/acme/repo.git"),
        ("ssh://git:pw@git.example.com:2222/r.git", "ssh://git.example.com:2222/r.git"),
        ("/srv/git/repo.git", None),
        ("file:///srv/git/repo.git", None),
        (None, None),
    ],
)
def test_the_source_label_never_carries_credentials_or_local_paths(
    remote: str | None, label: str | None
) -> None:
    assert source_url(remote) == label


def test_junit_is_summarised_per_check_module_with_failures_and_properties(
    tmp_path: Path,
) -> None:
    junit = tmp_path / "junit.xml"
    junit.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.contract.test_latency" name="test_p95">'
        '<properties><property name="p95_ms" value="1.5"/></properties></testcase>'
        '<testcase classname="tests.contract.test_fuzz" name="test_a"><failure message="x"/>'
        "</testcase>"
        '<testcase classname="tests.contract.test_fuzz" name="test_b"><skipped/></testcase>'
        "</testsuite></testsuites>"
    )
    summary = summarize_junit(junit)
    assert summary["checks"] == {"fuzz": {"failed": 1, "skipped": 1}, "latency": {"passed": 1}}
    assert summary["failed"] == ["fuzz::test_a"] and summary["properties"] == {"p95_ms": 1.5}


def test_a_run_with_no_passed_test_is_a_failed_run_whatever_else_it_says() -> None:
    empty = _report({"checks": {"golden_parity": {"passed": 0}}, "failed": []})
    assert empty.verdict == "fail" and empty.error == "the contract suite ran no test"
    assert report(failed=1).verdict == "fail"
    assert report().verdict == "pass"


def test_a_run_is_a_pass_only_when_complete_and_pytest_exited_zero() -> None:
    no_tests = report(exit_code=5)  # pytest: nothing collected
    assert no_tests.verdict == "fail" and "pytest exited 5" in str(no_tests.error)
    exited_one = report(exit_code=1)  # a failure the JUnit file does not show
    assert exited_one.verdict == "fail" and "pytest exited 1" in str(exited_one.error)
    short_fuzz = report(fuzz_cases=499)
    assert short_fuzz.verdict == "fail" and "499 fuzz cases ran, the budget is 500" in str(
        short_fuzz.error
    )
    skipped_module = build_report(
        image=artifacts.TestedImage(ref="m:1", id=CONFIG),
        model=artifacts.TestedModel(model_name="m", model_version="1", run_id="r", sha256="0"),
        summary=with_hostile(
            {
                "checks": {c: {"passed": 2} for c in REQUIRED_CHECKS if c != "latency"}
                | {"latency": {"skipped": 3}},
                "failed": [],
                "properties": {"fuzz_cases": 600},
            }
        ),
        time_to_ready_s=0.5,
        started=datetime.now(UTC),
        tools={},
        budgets=ContractParams(latency_p95_ms=25, time_to_ready_s=10),
        error=None,
        pytest_exit=0,
        suite=[*REQUIRED_CHECKS, "hostile"],
    )
    assert skipped_module.verdict == "fail"
    assert "check module 'latency' passed no test" in str(skipped_module.error)


def test_a_module_of_the_suite_missing_from_the_report_makes_it_incomplete() -> None:
    full = report()
    assert completeness_problem(full) is None
    extended = full.model_copy(update={"suite": [*full.suite, "streaming"]})
    assert "check module 'streaming' passed no test" in str(completeness_problem(extended))


def test_evidence_must_be_for_the_image_it_vouches_for_and_the_model_in_its_label() -> None:
    labels = {"ml.model.sha256": "0" * 64}
    assert report_problem(report(), config_digest=CONFIG, labels=labels) is None
    other = report(image_id="sha256:" + "d" * 64)
    assert "it tested image" in str(report_problem(other, config_digest=CONFIG, labels=labels))
    swapped = report(sha256="1" * 64)
    assert "model sha256" in str(report_problem(swapped, config_digest=CONFIG, labels=labels))
    failed = report(failed=1)
    assert "verdict" in str(report_problem(failed, config_digest=CONFIG, labels=labels))


def _report(summary: dict[str, object]) -> artifacts.ContractReport:
    return build_report(
        image=artifacts.TestedImage(ref="m:1", id=CONFIG),
        model=artifacts.TestedModel(model_name="m", model_version="1", run_id="r", sha256="0"),
        summary=summary,
        time_to_ready_s=0.5,
        started=datetime.now(UTC),
        tools={},
        budgets=ContractParams(latency_p95_ms=25, time_to_ready_s=10, fuzz_cases=500),
        error=None,
        pytest_exit=0,
        suite=list(REQUIRED_CHECKS),
    )


def test_a_run_without_the_hostile_suite_or_with_a_case_not_survived_is_a_failed_run() -> None:
    contract = {
        "checks": {check: {"passed": 3} for check in REQUIRED_CHECKS},
        "failed": [],
        "properties": {"fuzz_cases": 500},
    }
    without = _report(contract)
    assert without.verdict == "fail" and "hostile" in str(without.error)
    died = _report(with_hostile(contract, survived=False, problems=["OOM-killed"]))
    assert died.verdict == "fail" and died.hostile is not None and not died.hostile.passed
    survived = _report(with_hostile(contract))
    assert survived.verdict == "pass" and survived.hostile is not None
    assert [c.name for c in survived.hostile.cases] == ["a_case"]


def test_a_passing_report_without_a_passing_hostile_section_is_not_a_report() -> None:
    passing = report().dump()
    for hostile in (None, {**passing["hostile"], "passed": False}):
        with pytest.raises(ArtifactError, match="hostile"):
            artifacts.parse_report({**passing, "hostile": hostile}, where="forged.json")


def test_a_hand_written_report_with_unknown_or_missing_keys_is_not_a_report() -> None:
    forged = {"schema": artifacts.REPORT_SCHEMA, "verdict": "pass", "image": {"id": CONFIG}}
    with pytest.raises(ArtifactError, match="is not a contract report"):
        artifacts.parse_report(forged, where="forged.json")
    real = report().dump()
    assert artifacts.parse_report(real, where="x") == report().model_copy(
        update={"started": real["started"], "duration_s": real["duration_s"]}
    )


def test_contract_test_without_a_model_card_is_one_line_naming_the_stage_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = Path(__file__).resolve().parents[3]
    (tmp_path / "expectations").mkdir()
    (tmp_path / "expectations/breast_cancer.json").write_text("{}")
    (tmp_path / "params.yaml").write_text((root / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(app, ["contract-test", "--image", "any:tag"])
    assert done.exit_code == 3, done.output
    assert "models/model.json does not exist: run the train stage" in done.output
    assert "Traceback" not in done.output


def test_the_revision_is_dirty_for_an_edited_source_file_but_not_for_dvc_lock(
    tmp_path: Path,
) -> None:
    import subprocess

    from pipeline.provenance import git_commit

    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    for name in ("dvc.lock", "params.yaml"):
        (tmp_path / name).write_text("a: 1\n")
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*git, "add", "."], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "x"], cwd=tmp_path, check=True)
    clean = git_commit(tmp_path)
    assert len(clean) == 40
    (tmp_path / "dvc.lock").write_text("a: 2\n")  # the run rewrote its own record
    assert git_commit(tmp_path) == clean
    (tmp_path / "params.yaml").write_text("a: 2\n")
    assert git_commit(tmp_path) == f"{clean}-dirty"
