"""The world the workflows run in: a temp copy of the template as the repository, a local bare
repository as its `origin`, a real registry on a free loopback port, a shared MLflow store.

act runs the workflow files for real on this machine (tools/act.py); the registry is
Debian's docker-registry (tests/support/registry.py); images go through the real Docker engine.
Module-scoped: one `act push` serves every assertion about it.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.image.engine import Engine
from pipeline.release.registry import Registry
from tests.support.registry import LocalRegistry
from tools import act
from tools.template import GIT, copy_template, edit_params, run

BRANCH = "main"
TIMINGS: list[tuple[str, float, int]] = []  # (act run, seconds, exit code), for the report


@dataclass
class Project:
    root: Path
    repo: Path
    origin: Path
    registry: LocalRegistry
    image_name: str
    repository: str  # IMAGE_REPOSITORY
    mlflow_uri: str
    mlflow_artifacts: Path
    key: Path  # the release signing key: outside the repository, given to act as a secret
    runs: dict[str, act.ActRun] = field(default_factory=dict)

    def act(
        self,
        name: str,
        event: str,
        *,
        workflow: str,
        job: str | None = None,
        inputs: dict[str, str] | None = None,
        ref: str | None = None,
    ) -> act.ActRun:
        """``ref``: the branch a workflow_dispatch names (act otherwise reports the default
        branch), given as GitHub gives it, in the event payload."""
        """Run `workflow` for `event` with act; `name` labels its artifacts folder and log."""
        variables = {
            "REGISTRY": self.registry.address,
            "REGISTRY_INSECURE": "true",
            "IMAGE_REPOSITORY": self.repository,
            "MLFLOW_TRACKING_URI": self.mlflow_uri,
            "MLFLOW_ARTIFACTS_DIR": str(self.mlflow_artifacts),
        }
        extra = []
        if ref is not None:
            payload = {
                "ref": f"refs/heads/{ref}",
                "inputs": inputs or {},
                "repository": {"default_branch": BRANCH},
            }
            event_file = self.root / f"{name}-event.json"
            event_file.write_text(json.dumps(payload))
            extra, inputs = ["-e", str(event_file)], None
        outcome = act.run(
            event,
            repo=self.repo,
            extra=extra,
            variables=variables,
            artifacts=self.root / "act" / name,
            default_branch=BRANCH,
            workflow=workflow,
            job=job,
            inputs=inputs,
            secrets={"RELEASE_SIGNING_KEY": self.key.read_text()},
        )
        self.runs[name] = outcome
        TIMINGS.append((name, outcome.seconds, outcome.returncode))
        return outcome

    def git(self, *args: str) -> str:
        return run(self.repo, *GIT, *args).stdout.strip()

    def commit_and_push(self, message: str) -> str:
        self.git("commit", "-qam", message)
        self.git("push", "-q", "origin", BRANCH)
        return self.git("rev-parse", "HEAD")

    def pull(self) -> None:
        """What a checkout on GitHub sees next: the branch as the workflows left it."""
        self.git("pull", "-q", "--ff-only", "origin", BRANCH)

    def origin_head(self) -> str:
        return run(self.origin, "git", "rev-parse", BRANCH).stdout.strip()

    def origin_file(self, path: str) -> str | None:
        done = run(self.origin, "git", "show", f"{BRANCH}:{path}", check=False)
        return done.stdout if done.returncode == 0 else None

    def settings(self) -> Settings:
        return Settings(
            release_signers_dir=self.repo / "release/signers",
            registry=self.registry.address,
            registry_insecure=True,
            image_repository=self.repository,
            mlflow_tracking_uri=self.mlflow_uri,
            mlflow_artifacts_dir=self.mlflow_artifacts,
        )

    def client(self) -> Registry:
        return Registry(self.settings())

    def contents(self) -> dict[str, list[str]]:
        """Every repository in the registry and its tags: what a run may have added."""
        base = f"http://{self.registry.address}/v2"
        with urllib.request.urlopen(f"{base}/_catalog", timeout=10) as answer:
            repositories = json.load(answer).get("repositories") or []
        found = {}
        for name in repositories:
            with urllib.request.urlopen(f"{base}/{name}/tags/list", timeout=10) as answer:
                found[name] = sorted(json.load(answer).get("tags") or [])
        return found


@pytest.fixture(scope="module")
def project(template_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    if shutil.which("git") is None or not act.ACT.is_file():
        pytest.fail(f"act is not installed at {act.ACT}: run `make install`")
    engine = Engine.connect()  # fails with the reason when no engine answers (`make docker`)
    run_id = uuid.uuid4().hex[:8]
    root = tmp_path_factory.mktemp("workflows")
    repo = copy_template(template_root, root / "repo")
    shutil.copytree(template_root / ".github", repo / ".github")
    edit_params(repo, "image", name=f"e2e-workflows-{run_id}")
    # The workflows are under test, not the latency budget: a machine shared with other test
    # runs keeps this one (the suite still measures and reports p95), nor its size: the real
    # suite runs smaller, as in the release tests (the full-size run is test_containerize's).
    edit_params(repo, "contract", latency_p95_ms=500, fuzz_cases=100, latency_requests=50)
    # A DVC remote, as a user would configure one: the workflow restores from it (empty here).
    run(repo, str(act.ACT.parent / "dvc"), "remote", "add", "-d", "store", str(root / "dvc"))
    (root / "dvc").mkdir()
    # The release key, made as a user does: the public half committed, the private half outside.
    key = root / "keys" / "release.key"
    run(repo, str(act.ACT.parent / "pipeline"), "keygen", "--private-key", str(key))
    run(repo, *GIT, "add", "-A")
    run(repo, *GIT, "commit", "-qm", "workflows, DVC, the release key and the e2e image name")
    run(repo, "git", "branch", "-M", BRANCH)
    origin = root / "origin.git"
    run(root, "git", "init", "-q", "--bare", "-b", BRANCH, str(origin))
    run(repo, "git", "remote", "add", "origin", str(origin))
    run(repo, "git", "push", "-q", "-u", "origin", BRANCH)
    run(repo, "git", "remote", "set-head", "origin", BRANCH)
    registry = LocalRegistry(root / "registry").start()
    store = root / "mlflow"
    store.mkdir()
    world = Project(
        root=root,
        repo=repo,
        origin=origin,
        registry=registry,
        image_name=f"e2e-workflows-{run_id}",
        repository=f"e2e/classifier-{run_id}",
        mlflow_uri=f"sqlite:///{store / 'mlflow.db'}",
        mlflow_artifacts=store / "artifacts",
        key=key,
    )
    try:
        yield world
    finally:
        registry.stop()
        for image in engine.client.images.list():
            for tag in image.tags:
                if run_id in tag:
                    engine.untag(tag)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TIMINGS:
        runs = ", ".join(f"{name} {seconds:.0f} s (exit {code})" for name, seconds, code in TIMINGS)
        total = sum(seconds for _, seconds, _ in TIMINGS)
        terminalreporter.write_line(f"e2e act runs: {runs}; {total:.0f} s in act")
