"""The release tests' world: a temp copy of the template that ran `dvc repro`, Debian's
docker-registry on a free loopback port, a throwaway release key (private half outside the
copy's git tree, public half committed in its release/signers/), and helpers that run the
documented commands in it (tests/integration/conftest.py makes it a session fixture).
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline import artifacts
from pipeline.config import Settings
from pipeline.image.engine import Engine
from pipeline.ml import tracking
from pipeline.release import evidence, signing
from pipeline.release.registry import Registry
from pipeline.release.sbom import image_sbom
from tests.support import reports
from tests.support.registry import LocalRegistry

RUN_ID = uuid.uuid4().hex[:8]
IMAGE_NAME = f"test-release-{RUN_ID}"
REPOSITORY = f"test/release-{RUN_ID}"
PIPELINE = str(Path(sys.executable).parent / "pipeline")
SIGNER = "release-test"


@dataclass
class World:
    work: Path
    registry: LocalRegistry
    key: Path  # the private key: outside the work tree, as `pipeline keygen` insists
    digests: dict[str, str] = field(default_factory=dict)  # A, B, untested, small, large
    refs: dict[str, str] = field(default_factory=dict)  # local image refs
    seconds: dict[str, float] = field(default_factory=dict)

    def env(self, **extra: str) -> dict[str, str]:
        from tools.template import env

        values = env()
        values.pop("PYTEST_ADDOPTS", None)
        values.update(
            REGISTRY=self.registry.address,
            REGISTRY_INSECURE="true",
            IMAGE_REPOSITORY=REPOSITORY,
            PROMOTED_BY="release-test",
            REGISTRY_TIMEOUT_S="5",
            RELEASE_SIGNING_KEY_FILE=str(self.key),
        )
        values.update(extra)
        return values

    def pipeline(self, *args: str, check: bool = True, **extra: str) -> Outcome:
        started = time.monotonic()
        done = subprocess.run(
            [PIPELINE, *args],
            cwd=self.work,
            env=self.env(**extra),
            capture_output=True,
            text=True,
            timeout=900,
        )
        output, elapsed = done.stdout + done.stderr, time.monotonic() - started
        print(f"pipeline {args[0]}: exit {done.returncode} in {elapsed:.2f} s")  # shown with -s
        if check and done.returncode != 0:
            raise AssertionError(f"pipeline {' '.join(args)} exited {done.returncode}\n{output}")
        return Outcome(done.returncode, output, elapsed)

    def settings(self, **extra: Any) -> Settings:
        values: dict[str, Any] = {
            "registry": self.registry.address,
            "image_repository": REPOSITORY,
            "registry_insecure": True,
            "mlflow_tracking_uri": f"sqlite:///{self.work / 'mlflow.db'}",
            "deploy_dir": self.work / "deploy",
            "promote_lock_timeout_s": 0,
            "release_signers_dir": self.work / "release/signers",
            "release_signing_key_file": self.key,
        }
        values.update(extra)
        return Settings(**values)

    def client(self) -> Registry:
        return Registry(self.settings())

    def state(self, env: str, work: Path | None = None) -> dict[str, Any]:
        path = (work or self.work) / "deploy" / f"{env}.yaml"
        return dict(yaml.safe_load(path.read_text()))

    def aliases(self, version: str) -> list[str]:
        name = self.image_json()["labels"]["ml.model.name"]
        return tracking.version_state(self.settings(), name=name, version=version).aliases

    def alias_version(self, alias: str) -> str | None:
        name = self.image_json()["labels"]["ml.model.name"]
        return tracking.alias_version(self.settings(), name=name, alias=alias)

    def image_json(self) -> dict[str, Any]:
        return dict(yaml.safe_load((self.work / "build/image.json").read_text()))

    def blobs(self) -> int:
        return sum(1 for _ in (self.registry.root / "storage").rglob("blobs/sha256/*/*/data"))

    def converged(self, env: str, digest: str, version: str, work: Path | None = None) -> None:
        """Registry tag == deploy/<env>.yaml == MLflow alias, on ``digest`` / ``version``."""
        assert self.client().digest_of(env) == digest
        assert self.state(env, work)["image"]["digest"] == digest
        assert self.alias_version(env) == version


@dataclass(frozen=True)
class Outcome:
    code: int
    output: str
    seconds: float

    def tag_move_ms(self) -> float:
        match = re.search(r"tag moved in (\d+) ms", self.output)
        assert match, self.output
        return float(match.group(1))

    def one_line_error(self) -> str:
        """The command's error: exactly one `error:` line and no traceback."""
        assert "Traceback" not in self.output, self.output
        errors = [line for line in self.output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, self.output
        return errors[0]


def new_world(root: Path, template_root: Path) -> World:
    """Copy the template, make a release key the way a user does, run `dvc repro`."""
    import shutil

    from tools.template import GIT, copy_template, dvc, edit_params, run

    work = copy_template(template_root, root / "project")
    edit_params(work, "image", name=IMAGE_NAME)
    # Version 2 must not be held back by the champion gate: these tests are about releasing.
    edit_params(work, "validate", champion={"enabled": False})
    # The real suite, smaller and with a latency budget a machine shared with other test runs
    # keeps: what these tests check is what release does with a report, not the budgets.
    edit_params(work, "contract", fuzz_cases=100, latency_requests=50, latency_p95_ms=500)
    key = root / "keys" / f"{SIGNER}.key"
    subprocess.run(
        [PIPELINE, "keygen", "--name", SIGNER, "--private-key", str(key)],
        cwd=work,
        check=True,
        capture_output=True,
    )
    run(work, *GIT, "add", "-A")
    run(work, *GIT, "commit", "-qm", "test settings and the release key")
    wheels = template_root / "build/wheels"
    if (wheels / ".serving.lock.sha256").is_file():  # a download cache, checked by its stamp
        shutil.copytree(wheels, work / "build/wheels")
    dvc(work, "repro")
    registry = LocalRegistry(root / "registry").start()
    return World(work=work, registry=registry, key=key)


def derived(engine: Engine, base: str, tag: str, *lines: str) -> str:
    """An image FROM `base` (labels, model and server inherited) plus `lines`."""
    dockerfile = "\n".join([f"FROM {base}", *lines]).encode()
    engine.client.images.build(fileobj=io.BytesIO(dockerfile), tag=tag, rm=True)
    return tag


def contract_tested(world: World, ref: str, **extra: str) -> None:
    """What CI does for the image build/image.json names, after its push: the real contract
    suite, the SBOM, `pipeline sign`, `pipeline attest`."""
    world.pipeline("contract-test", "--image", ref, **extra)
    world.pipeline("sbom", "--image", ref)
    world.pipeline("sign")
    world.pipeline("attest")


def complete_report(info: Any, *, digest: str | None = None) -> artifacts.ContractReport:
    """A complete passing report for the image ``info`` describes (tests.support.reports)."""
    labels = info.labels
    report: artifacts.ContractReport = reports.complete_report(
        image=artifacts.TestedImage(ref=info.id, id=info.id, digest=digest),
        model=artifacts.TestedModel(
            model_name=labels.get("ml.model.name", "none"),
            model_version=labels.get("ml.model.version", "0"),
            run_id=labels.get("ml.mlflow.run_id", "none"),
            sha256=labels.get("ml.model.sha256", "0" * 64),
        ),
    )
    return report


def signed_evidence(
    world: World,
    engine: Engine,
    ref: str,
    digest: str,
    *,
    report: artifacts.ContractReport | None = None,
    key: Path | None = None,
) -> dict[str, bytes]:
    """The three signed statements for ``digest`` of ``ref``, as `pipeline sign` makes them:
    ``report`` (default: :func:`complete_report`), the image's SBOM, provenance of its commit."""
    info = engine.image(ref)
    assert info is not None, ref
    revision = info.labels.get("org.opencontainers.image.revision", "unknown")
    predicates = reports.predicates(
        report or complete_report(info, digest=digest),
        sbom=image_sbom(engine, ref),
        revision=revision,
    )
    signer = signing.load_signer(world.settings(release_signing_key_file=key or world.key))
    return evidence.signed(
        signer, repository=world.client().repository, digest=digest, predicates=predicates
    )


def attach(world: World, digest: str, envelopes: dict[str, bytes]) -> evidence.Evidence:
    keys = signing.trusted_keys(world.settings())
    return evidence.attach(
        world.client(), digest=digest, envelopes=envelopes, keys=keys, where="test"
    )


def start_waiting(world: World, *args: str) -> tuple[subprocess.Popen[str], str]:
    """Start `pipeline ARGS` and return once it says it waits for the environment's lock."""
    process = subprocess.Popen(
        [PIPELINE, *args],
        cwd=world.work,
        env=world.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    seen = ""
    while "waiting for another promotion" not in seen:
        line = process.stderr.readline()
        assert line, f"the promotion ended early:\n{seen}{process.communicate()[0]}"
        seen += line
    return process, seen
