"""The release flow against a real registry, real images and a real MLflow store.

A temp copy of the template runs `dvc repro` (model version 1: image A), then the documented
commands: `pipeline push`, `pipeline contract-test`, `pipeline sbom`, `pipeline sign`,
`pipeline attest`, `pipeline promote`, `pipeline rollback`, against Debian's docker-registry on a
free loopback port with its storage in a temp folder, with a release key made by
`pipeline keygen`. A second training run (version 2: image B) gives production something to roll
back from. The tests run in file order and build on each other, as a release does; the attacks,
half-way failures, races and rollbacks follow in test_release_integrity.py.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

from pipeline import artifacts
from pipeline.config import Settings
from pipeline.image.engine import Engine
from pipeline.release import promotion, signing
from pipeline.release.evidence import CONTRACT, KINDS, find_evidence
from pipeline.release.registry import Registry
from tests.support.registry import LocalRegistry, TokenServer, htpasswd
from tests.support.release_world import (
    IMAGE_NAME,
    REPOSITORY,
    SIGNER,
    Outcome,
    World,
    attach,
    complete_report,
    contract_tested,
    derived,
    signed_evidence,
    start_waiting,
)
from tools.template import GIT, dvc, edit_params, run

pytestmark = [pytest.mark.docker, pytest.mark.integration, pytest.mark.slow]

FILLER_MB = 500


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


def test_attest_attaches_signed_report_sbom_and_provenance_to_exactly_that_digest(
    world: World,
) -> None:
    contract_tested(world, world.refs["A"])
    registry = world.client()
    manifest = registry.manifest(world.digests["A"])
    assert manifest is not None
    keys = signing.trusted_keys(world.settings())
    evidence = find_evidence(registry, manifest, keys=keys)
    assert evidence.signer == SIGNER and set(evidence.artifacts) == {k.name for k in KINDS}
    assert evidence.report.verdict == "pass" and evidence.report.pytest_exit == 0
    assert evidence.report.image.id == world.image_json()["id"]
    for kind in KINDS:  # also under the tag scheme, for registries without the referrers API
        artifact = registry.manifest(kind.tag(world.digests["A"]))
        assert artifact is not None and artifact.body["subject"]["digest"] == world.digests["A"]
        assert artifact.body["layers"][0]["mediaType"] == "application/vnd.dsse.envelope.v1+json"
    sbom = json.loads((world.work / "build/sbom.cdx.json").read_text())
    names = {component["name"].lower() for component in sbom["components"]}
    assert {"numpy", "onnxruntime", "uvicorn"} <= names  # the image's, as built: ONNX serves
    assert "scikit-learn" not in names and "scipy" not in names  # this model: the ONNX-only image
    assert "mlflow" not in names and "dvc" not in names  # not the pipeline's environment
    statement = signing.verify(
        (world.work / "build/evidence/provenance.dsse.json").read_bytes(), keys
    ).statement
    deps = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    revision = world.image_json()["labels"]["org.opencontainers.image.revision"]
    assert deps[0]["digest"] == {"gitCommit": revision}
    assert deps[1]["name"] == "dvc.lock" and len(deps[1]["digest"]["sha256"]) == 64
    assert deps[2]["digest"]["sha256"] == world.image_json()["base"]["id"].split(":")[1]


def test_an_untested_digest_is_refused_and_evidence_counts_only_for_its_own_digest(
    world: World, engine: Engine
) -> None:
    ref = derived(engine, world.refs["A"], f"{IMAGE_NAME}:untested", "LABEL test.variant=untested")
    image_id = engine.client.images.get(ref).id
    digest = engine.push(image_id, repository=world.registry.address + "/" + REPOSITORY, tags=["u"])
    world.digests["untested"], world.refs["untested"] = digest, ref
    done = world.pipeline("promote", "--image", digest, "--to", "staging", check=False)
    assert done.code == 8 and "no valid signed contract evidence" in done.one_line_error()
    assert not (world.work / "deploy/staging.yaml").exists()
    assert world.client().digest_of("staging") is None
    # A's signed statements, offered as evidence for the untested image, are refused.
    done = world.pipeline("attest", "--image", digest, check=False)
    assert done.code == 8 and "is not evidence for" in done.output, done.output
    assert "replayed" in done.output


def test_a_failing_or_incomplete_report_is_not_signed(world: World, tmp_path: Path) -> None:
    built = world.image_json()
    report = json.loads((world.work / "build/contract-report.json").read_text())
    failing = dict(report, verdict="fail", failed=["latency::test_p95_within_budget"])
    (tmp_path / "failed.json").write_text(json.dumps(failing))
    done = world.pipeline("sign", "--report", str(tmp_path / "failed.json"), check=False)
    assert done.code == 8 and "verdict is 'fail'" in done.one_line_error(), done.output
    short = dict(report, fuzz_cases=report["budgets"]["fuzz_cases"] - 1)
    (tmp_path / "short.json").write_text(json.dumps(short))
    done = world.pipeline("sign", "--report", str(tmp_path / "short.json"), check=False)
    assert done.code == 8 and "fuzz cases ran, the budget is" in done.one_line_error()
    assert built["id"] == report["image"]["id"]


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
    evidence = registry.digest_of(CONTRACT.tag(world.digests["A"]))
    assert state["evidence"]["digest"] == evidence and state["evidence"]["signer"] == SIGNER
    for kind in ("sbom", "provenance"):
        assert state["evidence"][kind] == registry.digest_of(
            f"{world.digests['A']}.{kind}".replace(":", "-")
        )
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
    # An inherited PYTEST_ADDOPTS that deselects every test must not reach the suite.
    contract_tested(world, built["image"], PYTEST_ADDOPTS="-k nomatch")
    report = json.loads((world.work / "build/contract-report.json").read_text())
    assert report["verdict"] == "pass" and report["checks"]["golden_parity"]["passed"] > 0


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
    base = world.refs["B"]  # the workspace's model, contract-tested for real
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
        # B's model plus a label (and a filler layer): a complete passing report for this
        # image, signed for real. What is timed is the release, not the suite (which B passed).
        attach(world, digest, signed_evidence(world, engine, ref, digest))
        world.digests[name], world.refs[name] = digest, ref
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
    base the pipeline used), a dvc.lock and the world's trusted key: the contract suite needs a
    model server, so these tests only check that auth lets signed evidence through."""
    base = yaml.safe_load((world.work / "build/image.json").read_text())["base"]["ref"]
    ref = derived(
        engine,
        base,
        f"{IMAGE_NAME}:plain",
        "LABEL org.opencontainers.image.revision=0123456789abcdef0123456789abcdef01234567",
        f"LABEL ml.model.sha256={'0' * 64}",
    )
    info = engine.image(ref)
    assert info is not None
    work = tmp_path_factory.mktemp("auth")
    (work / "build").mkdir()
    (work / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    shutil.copytree(world.work / "release", work / "release")
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


def push_and_attest(world: World, work: Path, registry: LocalRegistry, **auth: str) -> Outcome:
    plain = World(work=work, registry=registry, key=world.key)
    done = plain.pipeline("push", check=False, **auth)
    if done.code != 0:
        return done
    built = artifacts.read_image(work / "build/image.json")
    artifacts.write_report(complete_report(built), work / "build/contract-report.json")
    plain.pipeline("sbom")
    plain.pipeline("sign")
    return plain.pipeline("attest", check=False, **auth)


def evidence_found(
    world: World, work: Path, registry: LocalRegistry, user: str, password: str
) -> bool:
    settings = Settings(
        registry=registry.address,
        image_repository=REPOSITORY,
        registry_insecure=True,
        registry_username=user,
        registry_password=SecretStr(password),
        release_signers_dir=work / "release/signers",
    )
    client = Registry(settings)
    digest = yaml.safe_load((work / "build/image.json").read_text())["digest"]
    manifest = client.manifest(digest)
    assert manifest is not None
    keys = signing.trusted_keys(settings)
    return find_evidence(client, manifest, keys=keys).report.verdict == "pass"


def test_a_basic_auth_registry_needs_the_right_credentials(
    world: World, plain_image: Path, tmp_path: Path
) -> None:
    auth = htpasswd(tmp_path / "htpasswd", "alice", "s3cret")
    registry = LocalRegistry(tmp_path / "registry", auth=auth).start()
    try:
        done = push_and_attest(world, plain_image, registry)
        assert done.code == 1 and "asks for a user name and password" in done.output
        done = push_and_attest(
            world, plain_image, registry, REGISTRY_USERNAME="alice", REGISTRY_PASSWORD="wrong"
        )
        assert done.code == 1 and "REGISTRY_USERNAME" in done.output, done.output
        assert "Traceback" not in done.output
        done = push_and_attest(
            world, plain_image, registry, REGISTRY_USERNAME="alice", REGISTRY_PASSWORD="s3cret"
        )
        assert done.code == 0, done.output
        assert evidence_found(world, plain_image, registry, "alice", "s3cret")
    finally:
        registry.stop()


def test_a_bearer_token_registry_exchanges_the_credentials_for_scoped_tokens(
    world: World, plain_image: Path, tmp_path: Path
) -> None:
    tokens = TokenServer(tmp_path / "tokens", user="bob", password="t0ken")
    registry = LocalRegistry(tmp_path / "registry", auth=tokens.auth()).start()
    try:
        done = push_and_attest(
            world, plain_image, registry, REGISTRY_USERNAME="bob", REGISTRY_PASSWORD="x"
        )
        assert done.code == 1 and "REGISTRY_USERNAME" in done.output, done.output
        done = push_and_attest(
            world, plain_image, registry, REGISTRY_USERNAME="bob", REGISTRY_PASSWORD="t0ken"
        )
        assert done.code == 0, done.output
        assert evidence_found(world, plain_image, registry, "bob", "t0ken")
        # the client asked for pull, then push where it wrote (the evidence)
        assert f"repository:{REPOSITORY}:pull" in tokens.issued
        assert any(s.endswith("push") or ":push," in s for s in tokens.issued)
    finally:
        registry.stop()
        tokens.close()
