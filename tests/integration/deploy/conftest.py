"""The world the deploy tests run in: a one-node Swarm, a real registry, real model images.

- ``swarm_manager`` (session): inits a one-node Swarm on a free loopback port only if this node
  is in none, and leaves it at the end only if it did the init (others may deploy on it too).
- ``world`` (module): a temp copy of the template with a release key of its own (`pipeline
  keygen`) runs `dvc repro` (model version 1, image D1), pushes D1 to Debian's docker-registry
  on a free port, runs the real contract suite on it, signs and attaches the evidence and
  promotes it to staging. The topology puts staging on free ports under a stack name unique to
  the run (``gmdeploy-<id>``). Everything it created is removed at the end: the stack, its
  configs, the images tagged with the run id.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline import artifacts
from pipeline.config import Settings
from pipeline.image.engine import Engine
from pipeline.release import signing
from pipeline.release.registry import Registry
from tests.support.registry import LocalRegistry, free_port
from tests.support.reports import predicates
from tools.template import GIT, copy_template, dvc, edit_params, env, run

PIPELINE = str(Path(sys.executable).parent / "pipeline")
FIGURES: list[str] = []  # measured figures, printed at the end of the run


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=300)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {done.returncode}: {done.stderr}")
    return done


@pytest.fixture(scope="session")
def swarm_manager() -> Iterator[None]:
    Engine.connect()  # a clear failure when no engine answers (`make docker`)
    state = docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()
    did_init = False
    if state == "inactive":
        docker(
            "swarm", "init", "--advertise-addr", "127.0.0.1",
            "--listen-addr", f"127.0.0.1:{free_port()}",
        )  # fmt: skip
        did_init = True
    elif state != "active":
        pytest.fail(f"this node's Swarm state is {state!r}: neither in a Swarm nor free to init")
    yield
    if did_init:
        docker("swarm", "leave", "--force", check=False)


@dataclass(frozen=True)
class Outcome:
    code: int
    output: str  # stdout and stderr
    seconds: float
    stdout: str


@dataclass
class World:
    work: Path
    registry: LocalRegistry
    run_id: str
    stack: str
    port: int
    stats_port: int
    repository: str
    key: Path  # the release signing key: outside the work tree, as `pipeline keygen` insists
    digests: dict[str, str] = field(default_factory=dict)  # D1, D2, bad
    refs: dict[str, str] = field(default_factory=dict)  # local image refs

    def env(self, **extra: str) -> dict[str, str]:
        values = env()
        values.update(
            REGISTRY=self.registry.address,
            REGISTRY_INSECURE="true",
            IMAGE_REPOSITORY=self.repository,
            PROMOTED_BY="deploy-test",
            COLUMNS="200",
            RELEASE_SIGNING_KEY_FILE=str(self.key),
        )
        values.update(extra)
        return values

    def pipeline(self, *args: str, check: bool = True, timeout: float = 600) -> Outcome:
        started = time.monotonic()
        done = subprocess.run(
            [PIPELINE, *args],
            cwd=self.work,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        output = done.stdout + done.stderr
        if check and done.returncode != 0:
            raise AssertionError(f"pipeline {' '.join(args)} exited {done.returncode}\n{output}")
        return Outcome(done.returncode, output, time.monotonic() - started, done.stdout)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [PIPELINE, *args],
            cwd=self.work,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def release(self) -> None:
        """What the release job does for the image build/image.json names, once its contract
        report is written: `pipeline sbom`, `sign`, `attest` (signed evidence, verified)."""
        for command in ("sbom", "sign", "attest"):
            self.pipeline(command)

    def attest_derived(self, key: str, report: artifacts.ContractReport) -> None:
        """Signed evidence for the pushed image ``key`` (``refs[key]``, ``digests[key]``) from
        ``report``, a passing report of that image, as `pipeline sign` + `attest` make it."""
        from pipeline.release import evidence
        from pipeline.release.sbom import image_sbom

        engine = Engine.connect()
        ref, digest = self.refs[key], self.digests[key]
        info = engine.image(ref)
        assert info is not None, ref
        revision = info.labels.get("org.opencontainers.image.revision", "unknown")
        settings = Settings(
            registry=self.registry.address,
            registry_insecure=True,
            image_repository=self.repository,
            release_signing_key_file=self.key,
            release_signers_dir=self.work / "release/signers",
        )
        signed = predicates(report, sbom=image_sbom(engine, ref), revision=revision)
        registry = Registry(settings)
        envelopes = evidence.signed(
            signing.load_signer(settings),
            repository=registry.repository,
            digest=digest,
            predicates=signed,
        )
        keys = signing.trusted_keys(settings)
        evidence.attach(registry, digest=digest, envelopes=envelopes, keys=keys, where=key)

    def attest_like_d1(self, key: str) -> None:
        """Evidence for ``key``, an image FROM D1 plus labels: D1's real, passing report (the
        last one `pipeline contract-test` wrote here) re-issued for its config id and digest,
        signed and attached for real. It has D1's layers and model, and the contract suite is
        not what these tests are about: a second run costs a minute on this machine."""
        report = artifacts.read_report(self.work / "build/contract-report.json")
        assert report.image.ref == self.refs["D1"], "the last contract run was not on D1"
        info = Engine.connect().image(self.refs[key])
        assert info is not None, self.refs[key]
        image = report.image.model_copy(
            update={
                "ref": self.refs[key],
                "id": info.id,
                "digest": self.digests[key],
                "digests": [],
            }
        )
        self.attest_derived(key, report.model_copy(update={"image": image}))

    def golden(self) -> dict[str, Any]:
        return dict(json.loads((self.work / "reports/golden.json").read_text()))

    def state(self) -> dict[str, Any]:
        return dict(yaml.safe_load((self.work / "deploy/staging.yaml").read_text()))

    def report(self) -> dict[str, Any]:
        return dict(json.loads((self.work / "build/deploy/staging.reconcile.json").read_text()))

    def service(self, name: str) -> str:
        return f"{self.stack}_{name}"

    def running_tasks(self, name: str = "model") -> dict[str, str]:
        """Running task id -> image, as `docker service ps` reports them."""
        lines = docker(
            "service", "ps", "--no-trunc", "--filter", "desired-state=running",
            "--format", "{{.ID}} {{.Image}} {{.CurrentState}}", self.service(name),
        ).stdout.splitlines()  # fmt: skip
        return {ln.split()[0]: ln.split()[1] for ln in lines if " Running " in f" {ln} "}

    def image(self, key: str) -> str:
        return f"{self.registry.address}/{self.repository}@{self.digests[key]}"


def new_release_key(work: Path, root: Path) -> Path:
    """A release key made the way a user makes one: the public half in the work tree's
    release/signers/ (committed with the settings), the private half outside it."""
    key = root / "keys" / "release-test.key"
    done = subprocess.run(
        [PIPELINE, "keygen", "--name", "release-test", "--private-key", str(key)],
        cwd=work,
        env=env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return key


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine.connect()


@pytest.fixture(scope="module")
def world(
    swarm_manager: None, template_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    engine = Engine.connect()
    run_id = uuid.uuid4().hex[:8]
    root = tmp_path_factory.mktemp("deploy")
    work = copy_template(template_root, root / "project")
    edit_params(work, "image", name=f"gmdeploy-{run_id}")
    edit_params(work, "validate", champion={"enabled": False})
    # These tests are about deploying: D1 and D2 go through the real contract suite so that the
    # real promotion accepts them, but its timing budgets are the contract tests' business, and
    # here they run beside a Swarm stack on a 2-core machine shared with other work. The suite
    # is the real one, smaller (as the release tests run it): the full-size run is
    # test_containerize's.
    edit_params(
        work, "contract", latency_p95_ms=250, time_to_ready_s=60, fuzz_cases=100,
        latency_requests=50,
    )  # fmt: skip
    stack, port, stats_port = f"gmdeploy-{run_id}", free_port(), free_port()
    topology = {
        "environments": {
            "staging": {
                "stack": stack,
                "replicas": 2,
                "resources": {"cpus": 0.5, "memory_mb": 512},
                # Tolerant enough that a task under a loaded, shared machine is not restarted
                # (a check spawns a Python process in the task): 5 failures of 2 s in a row.
                "health": {"interval_s": 2, "timeout_s": 2, "retries": 5, "start_period_s": 20},
                "update": {"monitor_s": 5, "timeout_s": 240},
                "stop_grace_period_s": 10,
                "entry": {"port": port, "stats_port": stats_port},
            }
        }
    }
    (work / "deploy").mkdir(exist_ok=True)
    (work / "deploy/topology.yaml").write_text(yaml.safe_dump(topology, sort_keys=False))
    key = new_release_key(work, root)
    run(work, *GIT, "add", "-A")
    run(work, *GIT, "commit", "-qm", "deploy test settings")
    wheels = template_root / "build/wheels"
    if (wheels / ".serving.lock.sha256").is_file():  # a download cache, checked by its stamp
        shutil.copytree(wheels, work / "build/wheels")
    dvc(work, "repro")
    registry = LocalRegistry(root / "registry").start()
    world = World(
        work=work,
        registry=registry,
        run_id=run_id,
        stack=stack,
        port=port,
        stats_port=stats_port,
        repository=f"gmdeploy/model-{run_id}",
        key=key,
    )
    try:
        yield world
    finally:
        docker("stack", "rm", stack, check=False)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # containers, then the network, go after a while
            label = f"label=com.docker.stack.namespace={stack}"
            left = docker("ps", "-aq", "--filter", label).stdout.strip()
            left += docker("network", "ls", "-q", "--filter", f"name={stack}_").stdout.strip()
            if not left:
                break
            time.sleep(1)
        registry.stop()
        for image in engine.client.images.list():
            names = list(image.tags) + list(image.attrs.get("RepoDigests") or [])
            for name in names:
                if run_id in name:
                    engine.untag(name)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in FIGURES:
        terminalreporter.write_line(f"deploy: {line}")
