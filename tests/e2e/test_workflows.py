"""The GitHub workflows, executed for real with act against a real registry and engine.

`git push` runs .github/workflows/ci.yml: lint, unit tests, `dvc repro`, the contract tests
against the running container, and on the default branch the image and its evidence pushed to
the registry. `workflow_dispatch` runs .github/workflows/promote.yml: staging, then production,
each committing deploy/<env>.yaml back to the branch. The tests run in file order and build on
each other, as a release does; the last one commits an impossible gate.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.image.engine import Engine
from pipeline.ml import tracking
from pipeline.release import signing
from pipeline.release.evidence import evidence_tag, find_evidence
from tests.e2e.conftest import Project
from tools.act import ActRun
from tools.template import run

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.slow]

CI, PROMOTE = "ci.yml", "promote.yml"
PIPELINE_JOB = "ci/pipeline, image and contract"
CHECKS_JOB = "ci/lint and unit tests"
RELEASE_JOB = "ci/release (push, sign, attest)"


def fails_with(outcome: ActRun, text: str) -> None:
    assert outcome.returncode != 0, f"act succeeded; expected a failure naming {text!r}"
    assert text in outcome.output, f"{text!r} not in the log:\n{outcome.output[-4000:]}"


def only(summaries: dict[str, str]) -> str:
    assert len(summaries) == 1, f"expected one job summary, got {list(summaries)}"
    return next(iter(summaries.values()))


def succeeded(outcome: ActRun) -> None:
    assert outcome.returncode == 0, f"act exited {outcome.returncode}:\n{outcome.output[-6000:]}"


@pytest.fixture(scope="module")
def pushed(project: Project) -> dict[str, Any]:
    """One `act push` of ci.yml on the default branch; the release job's build/image.json."""
    outcome = project.act("push", "push", workflow=CI)
    succeeded(outcome)
    image_json = outcome.artifacts / "release" / "build" / "image.json"
    assert image_json.is_file(), f"no image.json among the artifacts in {outcome.artifacts}"
    image = json.loads(image_json.read_text())
    return {"run": outcome, "image": image, "commit": project.git("rev-parse", "HEAD")}


@pytest.fixture(scope="module")
def promoted(project: Project, pushed: dict[str, Any]) -> dict[str, ActRun]:
    """The pushed digest promoted to staging (by digest), then production (by its sha- tag)."""
    digest = pushed["image"]["digest"]
    staging = project.act(
        "promote-staging",
        "workflow_dispatch",
        workflow=PROMOTE,
        inputs={"environment": "staging", "image": digest},
    )
    succeeded(staging)
    project.pull()
    production = project.act(
        "promote-production",
        "workflow_dispatch",
        workflow=PROMOTE,
        inputs={"environment": "production", "image": f"sha-{pushed['commit']}"},
    )
    succeeded(production)
    project.pull()
    return {"staging": staging, "production": production}


def test_push_runs_the_three_jobs_and_pushes_the_image_with_its_signed_evidence(
    project: Project, pushed: dict[str, Any]
) -> None:
    outcome, image = pushed["run"], pushed["image"]
    assert outcome.jobs() == {
        CHECKS_JOB: "succeeded",
        PIPELINE_JOB: "succeeded",
        RELEASE_JOB: "succeeded",
    }
    commit = pushed["commit"]
    digest = image["digest"]
    tags = project.contents()[project.repository]
    assert f"sha-{commit}" in tags
    assert image["image"].rsplit(":", 1)[1] in tags  # the content tag
    assert evidence_tag(digest) in tags
    registry = project.client()
    assert registry.digest_of(f"sha-{commit}") == digest
    manifest = registry.manifest(digest)
    assert manifest is not None and manifest.body["config"]["digest"] == image["id"]
    keys = signing.trusted_keys(project.settings())
    evidence = find_evidence(registry, manifest, keys=keys)  # what a promotion will demand
    assert evidence.report.verdict == "pass" and evidence.signer == "release"
    assert evidence.report.image.id == image["id"]
    # The key reached the signing step alone: no other step's environment had it.
    key_text = project.key.read_text().strip().splitlines()[1]
    assert key_text not in outcome.output


def test_push_uploads_junit_metrics_plots_and_data_docs_as_artifacts(
    pushed: dict[str, Any],
) -> None:
    artifacts: Path = pushed["run"].artifacts
    expected = [
        "junit-unit/build/junit/unit.xml",
        "junit-contract/build/contract-junit.xml",
        "metrics/metrics/holdout.json",
        "metrics/reports/gates.json",
        "metrics/build/metrics-diff.json",
        "metrics/build/contract-report.json",
        "metrics/build/sbom.cdx.json",
        "release/build/evidence/contract.dsse.json",
        "release/build/evidence/sbom.dsse.json",
        "release/build/evidence/provenance.dsse.json",
        "plots/plots/roc.png",
        "plots/plots/confusion.csv",
        "data-docs/reports/data_docs/index.html",
    ]
    missing = [path for path in expected if not (artifacts / path).is_file()]
    assert not missing, f"not uploaded: {missing}"
    junit = (artifacts / "junit-unit/build/junit/unit.xml").read_text()
    assert 'failures="0"' in junit and 'errors="0"' in junit
    report = json.loads((artifacts / "metrics/build/contract-report.json").read_text())
    assert report["verdict"] == "pass"
    assert report["image"]["id"] == pushed["image"]["id"]


def test_push_writes_a_job_summary_with_metrics_diff_gates_digest_and_size(
    pushed: dict[str, Any],
) -> None:
    summary = pushed["run"].summaries()[PIPELINE_JOB]
    holdout = json.loads((pushed["run"].artifacts / "metrics/metrics/holdout.json").read_text())
    image = pushed["image"]
    assert "## Pipeline: ✅" in summary and "not pushed" in summary  # the release job pushes
    assert f"| accuracy | {holdout['accuracy']:.4f} |" in summary
    assert "### `dvc metrics diff` against `origin/main`" in summary
    assert "### Quality gates: pass" in summary
    assert "| threshold | accuracy | >= 0.9 |" in summary
    assert f"{image['size_mb']} MB" in summary
    assert "### Contract test" in summary and "| verdict | pass |" in summary
    release = pushed["run"].summaries()[RELEASE_JOB]
    assert "## Release: ✅ pushed, signed, attested" in release and image["digest"] in release
    for kind in ("contract", "sbom", "provenance"):
        assert f"| {kind} |" in release


def test_dispatch_promotes_to_staging_then_production_and_commits_deploy_files(
    project: Project, pushed: dict[str, Any], promoted: dict[str, ActRun]
) -> None:
    digest = pushed["image"]["digest"]
    registry = project.client()
    for env in ("staging", "production"):
        state = yaml.safe_load(project.origin_file(f"deploy/{env}.yaml") or "")
        assert state["environment"] == env
        assert state["image"] == {"repository": registry.repository, "digest": digest}
        assert state["evidence"]["tag"] == evidence_tag(digest)
        assert registry.digest_of(env) == digest
        assert digest in only(promoted[env].summaries())
    log = project.git("log", "--format=%s", "-2")
    assert log.splitlines() == [
        f"deploy(production): promote to {digest}",
        f"deploy(staging): promote to {digest}",
    ]
    labels = pushed["image"]["labels"]
    version = tracking.version_state(
        project.settings(), name=labels["ml.model.name"], version=labels["ml.model.version"]
    )
    assert {"staging", "production"} <= set(version.aliases)


def test_promoting_an_untested_digest_fails_and_changes_nothing(
    project: Project, pushed: dict[str, Any], promoted: dict[str, ActRun]
) -> None:
    # The tested image plus one label: same model and server, another digest, no evidence.
    untested = f"{project.registry.address}/{project.repository}:untested"
    engine = Engine.connect()
    dockerfile = f"FROM {pushed['image']['image']}\nLABEL e2e.untested=true\n".encode()
    engine.client.images.build(fileobj=io.BytesIO(dockerfile), tag=untested, rm=True)
    engine.client.images.push(untested)
    registry = project.client()
    digest = registry.digest_of("untested")
    assert digest and digest != pushed["image"]["digest"]
    head, before = project.origin_head(), project.contents()

    outcome = project.act(
        "promote-untested",
        "workflow_dispatch",
        workflow=PROMOTE,
        inputs={"environment": "staging", "image": digest},
    )

    fails_with(outcome, "no valid signed contract evidence")
    assert project.origin_head() == head
    assert project.contents() == before
    assert registry.digest_of("staging") == pushed["image"]["digest"]
    assert "refused or failed" in only(outcome.summaries())


def test_dispatch_refuses_an_image_input_that_is_neither_digest_nor_tag(
    project: Project, promoted: dict[str, ActRun]
) -> None:
    head = project.origin_head()
    outcome = project.act(
        "promote-bad-input",
        "workflow_dispatch",
        workflow=PROMOTE,
        inputs={"environment": "staging", "image": "latest; echo pwned"},
    )
    fails_with(outcome, "is neither a digest")
    assert "Install (.venv" not in outcome.output  # refused before anything ran
    assert project.origin_head() == head


def test_rollback_with_no_earlier_production_digest_is_refused(
    project: Project, promoted: dict[str, ActRun]
) -> None:
    head = project.origin_head()
    outcome = project.act(
        "rollback-production",
        "workflow_dispatch",
        workflow=PROMOTE,
        inputs={"environment": "production", "rollback": "true"},
    )
    fails_with(outcome, "nothing to roll back to")
    assert project.origin_head() == head


def test_promote_dispatched_on_a_branch_other_than_the_default_does_nothing(
    project: Project, pushed: dict[str, Any], promoted: dict[str, ActRun]
) -> None:
    head, before = project.origin_head(), project.contents()
    branches = run(project.origin, "git", "branch", "--list").stdout
    # What the branch would do if its job ran: move production back to an untested digest.
    state = project.origin_file("deploy/production.yaml")
    outcome = project.act(
        "promote-from-branch",
        "workflow_dispatch",
        workflow=PROMOTE,
        inputs={"environment": "production", "rollback": "true"},
        ref="feature/sneaky-promotion",
    )
    assert outcome.returncode == 0, outcome.output[-3000:]
    assert project.origin_file("deploy/production.yaml") == state
    assert outcome.jobs() == {}, outcome.jobs()  # the job never started
    assert "Install (.venv" not in outcome.output and "pipeline promote" not in outcome.output
    assert project.origin_head() == head
    assert run(project.origin, "git", "branch", "--list").stdout == branches
    assert project.contents() == before


def test_when_the_deploy_commit_cannot_be_pushed_the_summary_says_what_moved(
    project: Project, pushed: dict[str, Any], promoted: dict[str, ActRun]
) -> None:
    """The tag and alias move, the git push is refused (a hook in origin): the job fails and its
    summary says what moved and that a re-run finishes it; the re-run does."""
    digest = pushed["image"]["digest"]
    registry = project.client()
    # The git record lags the registry (as after a lost push): staging's file is gone, so the
    # promotion writes it again while the tag and the alias already hold the digest.
    (project.repo / "deploy" / "staging.yaml").unlink()
    head = project.commit_and_push("the record lags: no deploy/staging.yaml")
    hook = project.origin / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'refused by policy' >&2\nexit 1\n")
    hook.chmod(0o755)
    try:
        outcome = project.act(
            "promote-push-refused",
            "workflow_dispatch",
            workflow=PROMOTE,
            inputs={"environment": "staging", "image": digest},
        )
    finally:
        hook.unlink()
    assert outcome.returncode != 0
    summary = only(outcome.summaries())
    assert "⚠️ staging moved, but deploy/staging.yaml was not pushed to main" in summary, summary
    assert digest in summary and "Re-run this workflow" in summary
    assert project.origin_head() == head and registry.digest_of("staging") == digest
    again = project.act(
        "promote-push-rerun",
        "workflow_dispatch",
        workflow=PROMOTE,
        inputs={"environment": "staging", "image": digest},
    )
    succeeded(again)
    state = yaml.safe_load(project.origin_file("deploy/staging.yaml") or "")
    assert state["image"]["digest"] == digest == registry.digest_of("staging")
    project.pull()


def test_an_impossible_gate_fails_the_push_workflow_before_anything_is_pushed(
    project: Project,
) -> None:
    before = project.contents()
    gates = yaml.safe_load((project.repo / "params.yaml").read_text())["validate"]["gates"]
    gates["accuracy"] = {"threshold": 1.01}  # no model reaches it
    _edit_gates(project, gates)
    project.commit_and_push("an impossible accuracy gate")
    try:
        outcome = project.act("push-impossible-gate", "push", workflow=CI, job="pipeline")
        fails_with(outcome, "failed 1 quality gate(s)")
        assert outcome.jobs() == {PIPELINE_JOB: "failed"}
        assert project.contents() == before, "the registry changed although a gate failed"
        summary = outcome.summaries()[PIPELINE_JOB]
        assert "a quality gate failed; nothing was pushed" in summary
        assert "| threshold | accuracy | >= 1.01 |" in summary and "**FAIL**" in summary
        assert (outcome.artifacts / "metrics/reports/gates.json").is_file()
    finally:
        project.git("reset", "-q", "--hard", "HEAD~1")
        project.git("push", "-q", "--force", "origin", "main")


def _edit_gates(project: Project, gates: dict[str, Any]) -> None:
    params = yaml.safe_load((project.repo / "params.yaml").read_text())
    params["validate"]["gates"] = gates
    (project.repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
