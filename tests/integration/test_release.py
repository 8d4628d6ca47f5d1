"""The release flow against a real registry, real images and a real MLflow store.

A temp copy of the template runs `dvc repro` (model version 1: image A), then the documented
commands: `pipeline push`, `pipeline contract-test`, `pipeline attest`, `pipeline promote`,
`pipeline rollback`, against Debian's docker-registry on a free loopback port with its storage
in a temp folder. A second training run (version 2: image B) gives production something to roll
back from. The tests run in file order and build on each other, as a release does.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from pipeline import artifacts
from pipeline.config import ContractParams, Settings
from pipeline.image.engine import Engine
from pipeline.ml import tracking
from pipeline.release import promotion
from pipeline.release.contract_runner import build_report
from pipeline.release.evidence import find_evidence
from pipeline.release.registry import Registry
from tests.support.registry import LocalRegistry, TokenServer, htpasswd
from tests.support.reports import with_hostile
from tools.template import GIT, copy_template, dvc, edit_params, env, run

pytestmark = [pytest.mark.docker, pytest.mark.integration, pytest.mark.slow]

RUN_ID = uuid.uuid4().hex[:8]
IMAGE_NAME = f"test-release-{RUN_ID}"
REPOSITORY = f"test/release-{RUN_ID}"
PIPELINE = str(Path(sys.executable).parent / "pipeline")
FILLER_MB = 500


@dataclass
class World:
    work: Path
    registry: LocalRegistry
    digests: dict[str, str] = field(default_factory=dict)  # A, B, untested, small, large
    refs: dict[str, str] = field(default_factory=dict)  # local image refs
    seconds: dict[str, float] = field(default_factory=dict)

    def env(self, **extra: str) -> dict[str, str]:
        values = env()
        values.update(
            REGISTRY=self.registry.address,
            REGISTRY_INSECURE="true",
            IMAGE_REPOSITORY=REPOSITORY,
            PROMOTED_BY="release-test",
            REGISTRY_TIMEOUT_S="5",
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
        output = done.stdout + done.stderr
        if check and done.returncode != 0:
            raise AssertionError(f"pipeline {' '.join(args)} exited {done.returncode}\n{output}")
        return Outcome(done.returncode, output, time.monotonic() - started)

    def settings(self) -> Settings:
        return Settings(
            registry=self.registry.address,
            image_repository=REPOSITORY,
            registry_insecure=True,
            mlflow_tracking_uri=f"sqlite:///{self.work / 'mlflow.db'}",
            deploy_dir=self.work / "deploy",
            promote_lock_timeout_s=0,
        )

    def client(self) -> Registry:
        return Registry(self.settings())

    def state(self, env: str) -> dict[str, Any]:
        return dict(yaml.safe_load((self.work / "deploy" / f"{env}.yaml").read_text()))

    def aliases(self, version: str) -> list[str]:
        name = self.image_json()["labels"]["ml.model.name"]
        return tracking.version_state(self.settings(), name=name, version=version).aliases

    def image_json(self) -> dict[str, Any]:
        return dict(yaml.safe_load((self.work / "build/image.json").read_text()))

    def blobs(self) -> int:
        return sum(1 for _ in (self.registry.root / "storage").rglob("blobs/sha256/*/*/data"))


@dataclass(frozen=True)
class Outcome:
    code: int
    output: str
    seconds: float

    def tag_move_ms(self) -> float:
        match = re.search(r"tag moved in (\d+) ms", self.output)
        assert match, self.output
        return float(match.group(1))


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    engine = Engine.connect()
    yield engine
    for image in engine.client.images.list():
        for tag in image.tags:
            if IMAGE_NAME in tag or REPOSITORY in tag:
                engine.untag(tag)


@pytest.fixture(scope="module")
def world(
    template_root: Path, tmp_path_factory: pytest.TempPathFactory, engine: Engine
) -> Iterator[World]:
    root = tmp_path_factory.mktemp("release")
    work = copy_template(template_root, root / "project")
    edit_params(work, "image", name=IMAGE_NAME)
    # Version 2 must not be held back by the champion gate: this test is about releasing.
    edit_params(work, "validate", champion={"enabled": False})
    run(work, *GIT, "commit", "-qam", "test settings")
    wheels = template_root / "build/wheels"
    if (wheels / ".serving.lock.sha256").is_file():  # a download cache, checked by its stamp
        shutil.copytree(wheels, work / "build/wheels")
    dvc(work, "repro")
    registry = LocalRegistry(root / "registry").start()
    try:
        yield World(work=work, registry=registry)
    finally:
        registry.stop()


def derived(engine: Engine, base: str, tag: str, *lines: str) -> str:
    """An image FROM `base` (labels, model and server inherited) plus `lines`."""
    dockerfile = "\n".join([f"FROM {base}", *lines]).encode()
    engine.client.images.build(fileobj=io.BytesIO(dockerfile), tag=tag, rm=True)
    return tag


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


def contract_tested(world: World, ref: str) -> None:
    """Run the real contract suite on `ref` (after its push) and attest the report."""
    world.pipeline("contract-test", "--image", ref)
    world.pipeline("attest")


def test_push_tags_the_image_with_its_commit_and_content_and_records_the_digest(
    world: World,
) -> None:
    built = world.image_json()
    done = world.pipeline("push")
    pushed = world.image_json()
    digest = pushed["digest"]
    revision = built["labels"]["org.opencontainers.image.revision"]
    content_tag = built["image"].rsplit(":", 1)[1]
    print(f"push of image A ({built['size_mb']} MB, all layers new): {done.seconds:.1f} s")
    world.seconds["push A"] = done.seconds
    assert pushed["registry"]["tags"] == [content_tag, f"sha-{revision}"]
    registry = world.client()
    assert registry.digest_of(content_tag) == digest
    assert registry.digest_of(f"sha-{revision}") == digest
    manifest = registry.manifest(digest)
    assert manifest is not None and manifest.body["config"]["digest"] == built["id"]
    world.digests["A"], world.refs["A"] = digest, built["image"]


def test_attest_attaches_the_passing_report_to_exactly_that_digest(world: World) -> None:
    contract_tested(world, world.refs["A"])
    registry = world.client()
    manifest = registry.manifest(world.digests["A"])
    assert manifest is not None
    evidence = find_evidence(registry, manifest)
    assert evidence.report.verdict == "pass"
    assert evidence.report.image.id == world.image_json()["id"]
    fallback = registry.manifest(world.digests["A"].replace(":", "-") + ".contract")
    assert fallback is not None and fallback.body["subject"]["digest"] == world.digests["A"]


def test_an_untested_digest_is_refused_and_a_report_is_evidence_only_for_its_own_image(
    world: World, engine: Engine
) -> None:
    ref = derived(engine, world.refs["A"], f"{IMAGE_NAME}:untested", "LABEL test.variant=untested")
    image_id = engine.client.images.get(ref).id
    digest = engine.push(image_id, repository=world.registry.address + "/" + REPOSITORY, tags=["u"])
    world.digests["untested"] = digest
    done = world.pipeline("promote", "--image", digest, "--to", "staging", check=False)
    assert done.code == 8 and "no passing contract evidence" in done.output, done.output
    assert "Traceback" not in done.output
    assert not (world.work / "deploy/staging.yaml").exists()
    assert world.client().digest_of("staging") is None
    # A's passing report, offered as evidence for the untested image, is refused.
    done = world.pipeline("attest", "--image", digest, check=False)
    assert done.code == 8 and "is not evidence for" in done.output, done.output


def write_report(path: Path, built: dict[str, Any], *, summary: dict[str, Any]) -> None:
    """A report as `pipeline contract-test` writes it (its own builder), for ``built``."""
    labels = built["labels"]
    report = build_report(
        image=artifacts.TestedImage(ref=built["image"], id=built["id"], digest=built["digest"]),
        model=artifacts.TestedModel(
            model_name=labels.get("ml.model.name", "none"),
            model_version=labels.get("ml.model.version", "0"),
            run_id=labels.get("ml.mlflow.run_id", "none"),
            sha256=labels.get("ml.model.sha256", "0" * 64),
        ),
        summary=with_hostile(summary),
        time_to_ready_s=1.0,
        started=datetime.now(UTC),
        tools={},
        budgets=ContractParams(latency_p95_ms=25, time_to_ready_s=10),
        error=None,
    )
    artifacts.write_report(report, path)


def test_a_failing_report_is_not_attested(world: World, tmp_path: Path) -> None:
    built = world.image_json()
    report = tmp_path / "failed-report.json"
    write_report(  # the writer `pipeline contract-test` uses, with the failure it would record
        report,
        built,
        summary={
            "checks": {"latency": {"passed": 1, "failed": 1}},
            "failed": ["latency::test_p95_within_budget"],
        },
    )
    done = world.pipeline("attest", "--report", str(report), check=False)
    assert done.code == 8 and "verdict 'fail'" in done.output, done.output


def test_production_is_refused_before_staging_holds_the_digest(world: World) -> None:
    done = world.pipeline(
        "promote", "--image", world.digests["A"], "--to", "production", check=False
    )
    assert done.code == 8 and "production takes only the digest staging holds" in done.output
    assert not (world.work / "deploy/production.yaml").exists()


def test_promotion_to_staging_moves_the_tag_to_the_same_digest_without_layers(
    world: World, engine: Engine
) -> None:
    blobs = world.blobs()
    content_tag = world.refs["A"].rsplit(":", 1)[1]
    done = world.pipeline("promote", "--image", content_tag, "--to", "staging")
    world.seconds["promote A"] = done.seconds
    registry = world.client()
    assert registry.digest_of("staging") == world.digests["A"]  # the digest pushed, not rebuilt
    assert world.blobs() == blobs  # no layer (or any blob) was written
    local = engine.image(world.refs["A"])
    manifest = registry.manifest("staging")
    assert local is not None and manifest is not None
    assert manifest.body["config"]["digest"] == local.id
    state, labels = world.state("staging"), world.image_json()["labels"]
    assert state["environment"] == "staging" and state["action"] == "promote"
    assert state["image"]["digest"] == world.digests["A"]
    assert state["model"] == {
        "name": labels["ml.model.name"],
        "version": labels["ml.model.version"],
        "mlflow_run_id": labels["ml.mlflow.run_id"],
    }
    evidence = registry.digest_of(world.digests["A"].replace(":", "-") + ".contract")
    assert state["evidence"]["digest"] == evidence
    assert state["promoted_by"] == "release-test" and state["history"] == []
    assert "staging" in world.aliases(labels["ml.model.version"])
    print(f"promotion of A to staging: {done.seconds:.2f} s, tag move {done.tag_move_ms()} ms")


def test_promoting_what_staging_holds_again_changes_nothing_and_says_so(world: World) -> None:
    before = (world.work / "deploy/staging.yaml").read_bytes()
    done = world.pipeline("promote", "--image", world.digests["A"], "--to", "staging")
    assert "nothing changed" in done.output
    assert (world.work / "deploy/staging.yaml").read_bytes() == before


def test_production_takes_the_digest_staging_holds(world: World) -> None:
    world.pipeline("promote", "--image", world.digests["A"], "--to", "production")
    assert world.client().digest_of("production") == world.digests["A"]
    state = world.state("production")
    assert state["image"]["digest"] == world.digests["A"] and state["history"] == []
    assert {"staging", "production"} <= set(world.aliases(state["model"]["version"]))


def test_a_second_model_version_is_built_pushed_and_tested(world: World) -> None:
    edit_params(world.work, "train", logistic_regression={"C": 0.5, "max_iter": 1000})
    run(world.work, *GIT, "commit", "-qam", "C = 0.5")
    dvc(world.work, "repro")
    world.pipeline("push")
    built = world.image_json()
    assert built["labels"]["ml.model.version"] == "2"
    world.digests["B"], world.refs["B"] = built["digest"], built["image"]
    contract_tested(world, built["image"])


def test_registry_down_mid_promotion_is_a_clear_error_and_changes_nothing(world: World) -> None:
    staging = (world.work / "deploy/staging.yaml").read_bytes()
    with promotion.locked(world.settings(), "staging"):  # it connects, then waits here
        waiting, seen = start_waiting(
            world, "promote", "--image", world.digests["B"], "--to", "staging"
        )
        world.registry.stop()
    try:
        output = seen + "".join(waiting.communicate(timeout=120)[::-1])
        assert waiting.returncode == 1, output
    finally:
        world.registry.start()
    assert "does not answer" in output and "make registry" in output, output
    assert "Traceback" not in output
    assert (world.work / "deploy/staging.yaml").read_bytes() == staging
    assert "staging" not in world.aliases("2") and "staging" in world.aliases("1")
    assert world.client().digest_of("staging") == world.digests["A"]


def test_the_second_version_goes_through_staging_to_production(world: World) -> None:
    world.pipeline("promote", "--image", world.digests["B"], "--to", "staging")
    world.pipeline("promote", "--image", "staging", "--to", "production")
    assert world.client().digest_of("production") == world.digests["B"]
    state = world.state("production")
    assert [entry["image"]["digest"] for entry in state["history"]] == [world.digests["A"]]
    assert "production" in world.aliases("2") and "production" not in world.aliases("1")


def test_a_second_promotion_of_an_environment_waits_for_the_first_or_fails_clearly(
    world: World,
) -> None:
    before = (world.work / "deploy/production.yaml").read_bytes()
    with promotion.locked(world.settings(), "production"):
        done = world.pipeline(
            "rollback", "--env", "production", check=False, PROMOTE_LOCK_TIMEOUT_S="1"
        )
    assert done.code == 8 and "another promotion of production" in done.output, done.output
    assert (world.work / "deploy/production.yaml").read_bytes() == before
    with promotion.locked(world.settings(), "production"):
        waiting, seen = start_waiting(
            world, "promote", "--image", world.digests["B"], "--to", "production"
        )
        time.sleep(1.0)
    output = seen + "".join(waiting.communicate(timeout=120)[::-1])
    assert waiting.returncode == 0, output  # it waited, then found production holds B already
    assert "nothing changed" in output
    assert (world.work / "deploy/production.yaml").read_bytes() == before


def test_rollback_returns_production_to_the_previous_digest_as_a_new_entry(world: World) -> None:
    done = world.pipeline("rollback", "--env", "production")
    assert "rollback: production" in done.output
    assert world.client().digest_of("production") == world.digests["A"]
    state = world.state("production")
    assert state["action"] == "rollback" and state["image"]["digest"] == world.digests["A"]
    history = [(entry["action"], entry["image"]["digest"]) for entry in state["history"]]
    assert history == [("promote", world.digests["B"]), ("promote", world.digests["A"])]
    assert "production" in world.aliases("1") and "production" not in world.aliases("2")


def test_a_large_image_is_promoted_in_about_the_time_of_a_small_one(
    world: World, engine: Engine
) -> None:
    base = world.refs["B"]  # the workspace's model: the contract suite runs on both
    small = derived(engine, base, f"{IMAGE_NAME}:small", "LABEL test.variant=small")
    large = derived(
        engine,
        base,
        f"{IMAGE_NAME}:large",
        "LABEL test.variant=large",
        f"RUN head -c {FILLER_MB}M /dev/urandom > /tmp/filler.bin",
    )
    repository = f"{world.registry.address}/{REPOSITORY}"
    timings: dict[str, dict[str, float]] = {}
    for name, ref in (("small", small), ("large", large)):
        started = time.monotonic()
        digest = engine.push(engine.client.images.get(ref).id, repository=repository, tags=[name])
        pushed = time.monotonic() - started
        contract_tested(world, ref)
        blobs = world.blobs()
        done = world.pipeline("promote", "--image", digest, "--to", "staging")
        assert world.client().digest_of("staging") == digest and world.blobs() == blobs
        timings[name] = {"push_s": pushed, "promote_s": done.seconds, "move_ms": done.tag_move_ms()}
    print(f"release timings (large: +{FILLER_MB} MB random layer): {timings}")
    assert timings["large"]["push_s"] > timings["small"]["push_s"]  # the layer did go up once
    # The registry work does not grow with the image: one ~1 KB manifest, no layer moves.
    assert timings["large"]["move_ms"] <= 3 * timings["small"]["move_ms"] + 200
    # The whole command is mostly Python start-up and the MLflow store, which vary with the
    # machine's load far more than with anything the image could add: a loose bound.
    assert timings["large"]["promote_s"] <= 3 * timings["small"]["promote_s"] + 5.0


# Registry auth: the same commands against a registry behind HTTP Basic (htpasswd) and one
# behind bearer tokens from a token server (the protocol of ghcr.io and Docker Hub).


@pytest.fixture(scope="module")
def plain_image(world: World, engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with build/image.json for a small image that is not a model server (FROM the
    base the pipeline used) and a passing report for it, written by `write_report`: the
    contract suite needs a model server, so these tests only check that auth lets evidence
    through, not what it says."""
    base = yaml.safe_load((world.work / "build/image.json").read_text())["base"]["ref"]
    ref = derived(
        engine,
        base,
        f"{IMAGE_NAME}:plain",
        "LABEL org.opencontainers.image.revision=0123456789abcdef0123456789abcdef01234567",
    )
    info = engine.image(ref)
    assert info is not None
    work = tmp_path_factory.mktemp("auth")
    (work / "build").mkdir()
    record = artifacts.ImageRecord(
        image=ref,
        id=info.id,
        tags=[ref],
        labels=info.labels,
        size_bytes=info.size,
        size_mb=round(info.size / 1e6, 1),
        max_size_mb=1000,
        content_hash="0" * 64,
        base=artifacts.BaseImage(ref=base, id=info.id, fallback=False),
        build=None,
        smoke={},
        engine="test",
    )
    artifacts.write_image(record, work / "build/image.json")
    return work


def push_and_attest(work: Path, registry: LocalRegistry, **auth: str) -> Outcome:
    world = World(work=work, registry=registry)
    done = world.pipeline("push", check=False, **auth)
    if done.code != 0:
        return done
    built = world.image_json()
    write_report(  # an honest pass for this digest: it is not a model server (see plain_image)
        work / "build/contract-report.json",
        built,
        summary={"checks": {"auth-only": {"passed": 1}}, "failed": []},
    )
    return world.pipeline("attest", check=False, **auth)


def evidence_found(work: Path, registry: LocalRegistry, user: str, password: str) -> bool:
    settings = Settings(
        registry=registry.address,
        image_repository=REPOSITORY,
        registry_insecure=True,
        registry_username=user,
        registry_password=SecretStr(password),
    )
    client = Registry(settings)
    digest = yaml.safe_load((work / "build/image.json").read_text())["digest"]
    manifest = client.manifest(digest)
    assert manifest is not None
    return find_evidence(client, manifest).report.verdict == "pass"


def test_a_basic_auth_registry_needs_the_right_credentials(
    plain_image: Path, tmp_path: Path
) -> None:
    auth = htpasswd(tmp_path / "htpasswd", "alice", "s3cret")
    registry = LocalRegistry(tmp_path / "registry", auth=auth).start()
    try:
        done = push_and_attest(plain_image, registry)
        assert done.code == 1 and "asks for a user name and password" in done.output
        done = push_and_attest(
            plain_image, registry, REGISTRY_USERNAME="alice", REGISTRY_PASSWORD="wrong"
        )
        assert done.code == 1 and "REGISTRY_USERNAME" in done.output, done.output
        assert "Traceback" not in done.output
        done = push_and_attest(
            plain_image, registry, REGISTRY_USERNAME="alice", REGISTRY_PASSWORD="s3cret"
        )
        assert done.code == 0, done.output
        assert evidence_found(plain_image, registry, "alice", "s3cret")
    finally:
        registry.stop()


def test_a_bearer_token_registry_exchanges_the_credentials_for_scoped_tokens(
    plain_image: Path, tmp_path: Path
) -> None:
    tokens = TokenServer(tmp_path / "tokens", user="bob", password="t0ken")
    registry = LocalRegistry(tmp_path / "registry", auth=tokens.auth()).start()
    try:
        done = push_and_attest(
            plain_image, registry, REGISTRY_USERNAME="bob", REGISTRY_PASSWORD="x"
        )
        assert done.code == 1 and "REGISTRY_USERNAME" in done.output, done.output
        done = push_and_attest(
            plain_image, registry, REGISTRY_USERNAME="bob", REGISTRY_PASSWORD="t0ken"
        )
        assert done.code == 0, done.output
        assert evidence_found(plain_image, registry, "bob", "t0ken")
        # the client asked for pull, then push where it wrote (the evidence)
        assert f"repository:{REPOSITORY}:pull" in tokens.issued
        assert any(s.endswith("push") or ":push," in s for s in tokens.issued)
    finally:
        registry.stop()
        tokens.close()
