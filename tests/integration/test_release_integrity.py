"""Release integrity against the real registry, engine and MLflow store of test_release.py,
whose images A (model version 1), B and `small` (version 2) with signed evidence it builds on.

As an attacker: unsigned, forged, wrongly signed and replayed evidence. As an operator on a bad
day: a contract run that ran nothing, a registry that loses an answer or refuses a write half-way
(a fault-injecting proxy in front of the real registry), a read-only MLflow store, a state file
that cannot be written, two promotions racing from two working copies, rollbacks over a history
with a garbage-collected image, and credentials in the tracking URI. Each half-way case ends with
a re-run that converges: registry tag == deploy/<env>.yaml == MLflow alias.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from pipeline.image.engine import Engine
from pipeline.release import signing
from pipeline.release.evidence import CONTRACT, ENVELOPE_TYPE, KINDS
from pipeline.release.registry import Manifest
from tests.support.http_faults import Fault, FaultProxy, Gate
from tests.support.registry import free_port
from tests.support.release_world import (
    IMAGE_NAME,
    PIPELINE,
    REPOSITORY,
    Outcome,
    World,
    attach,
    complete_report,
    derived,
    signed_evidence,
)

pytestmark = [pytest.mark.docker, pytest.mark.integration, pytest.mark.slow]
VERSION = {"A": "1", "B": "2", "small": "2", "large": "2", "older": "2"}


@pytest.fixture(scope="module")
def released(world: World) -> World:
    missing = {"A", "B", "small", "large", "untested"} - set(world.digests)
    if missing:
        pytest.fail(
            f"run with tests/integration/test_release.py first: it builds and attests {missing}"
        )
    return world


@pytest.fixture(scope="module")
def proxy(released: World) -> Iterator[FaultProxy]:
    with FaultProxy(upstream=f"http://{released.registry.address}") as proxy:
        yield proxy


def staging_bytes(world: World, work: Path | None = None) -> bytes:
    return ((work or world.work) / "deploy/staging.yaml").read_bytes()


def promote(world: World, name: str, env: str = "staging", **extra: str) -> Outcome:
    digest = world.digests[name]
    return world.pipeline("promote", "--image", digest, "--to", env, check=False, **extra)


def push_contract_artifact(world: World, digest: str, content: bytes) -> None:
    """Put ``content`` where a promotion looks for contract evidence of ``digest``."""
    registry = world.client()
    subject = registry.manifest(digest)
    assert subject is not None
    registry.push_artifact(
        subject=subject,
        artifact_type=CONTRACT.artifact_type,
        layer_type=ENVELOPE_TYPE,
        content=content,
        filename="contract.dsse.json",
        annotations={},
        tag=CONTRACT.tag(digest),
    )


# -- as an attacker ----------------------------------------------------------------------------


def test_unsigned_forged_wrongly_signed_and_replayed_evidence_is_refused_with_the_tag_unchanged(
    released: World, engine: Engine, tmp_path: Path
) -> None:
    world, target = released, released.digests["untested"]
    registry = world.client()
    tag, file = registry.digest_of("staging"), staging_bytes(world)
    info = engine.image(world.refs["untested"])
    assert info is not None
    b_envelope = json.loads((world.work / "build/evidence/contract.dsse.json").read_text())

    unsigned = json.dumps(complete_report(info, digest=target).dump()).encode()
    attacker = tmp_path / "attacker.key"
    signing.keygen(name="attacker", private_path=attacker, signers_dir=tmp_path / "theirs")
    wrongly_signed = signed_evidence(world, engine, world.refs["untested"], target, key=attacker)
    statement = json.loads(base64.b64decode(b_envelope["payload"]))
    statement["subject"][0]["digest"] = {"sha256": target.split(":")[1]}  # B's signature kept
    forged = dict(b_envelope, payload=base64.b64encode(json.dumps(statement).encode()).decode())
    replayed = json.dumps(b_envelope).encode()  # B's real, signed statement, for another digest
    attacks = {
        "unsigned": (unsigned, "not a DSSE envelope"),
        "wrongly signed": (wrongly_signed["contract"], "is by an untrusted key"),
        "forged": (json.dumps(forged).encode(), "does not verify"),
        "replayed": (replayed, "replayed"),
    }
    for name, (content, reason) in attacks.items():
        push_contract_artifact(world, target, content)
        done = world.pipeline("promote", "--image", target, "--to", "staging", check=False)
        line = done.one_line_error()
        assert done.code == 8 and "no valid signed contract evidence" in line, (name, line)
        assert reason in line, (name, line)
        assert registry.digest_of("staging") == tag, name
        assert staging_bytes(world) == file, name


def test_a_contract_run_that_runs_no_test_fails_and_cannot_be_signed(released: World) -> None:
    world = released
    pyproject = world.work / "pyproject.toml"
    before = pyproject.read_text()
    # A project setting that deselects everything: pytest exits 5 with nothing run.
    pyproject.write_text(before.replace('addopts = "', 'addopts = "-k nothing_matches_this '))
    try:
        done = world.pipeline("contract-test", "--image", world.refs["B"], check=False)
    finally:
        pyproject.write_text(before)
    assert done.code == 7, done.output
    assert "ran no test" in done.one_line_error() or "pytest exited 5" in done.output
    report = json.loads((world.work / "build/contract-report.json").read_text())
    assert report["verdict"] == "fail" and report["pytest_exit"] == 5
    done = world.pipeline("sign", check=False)
    assert done.code == 8 and "verdict is 'fail'" in done.one_line_error()


# -- half-way failures -------------------------------------------------------------------------


def test_a_lost_answer_after_the_tag_moved_is_put_back_and_a_rerun_converges(
    released: World, proxy: FaultProxy
) -> None:
    world = released
    assert promote(world, "small").code == 0
    file = staging_bytes(world)
    proxy.inject(Fault("HEAD", r"/manifests/staging$", after=("PUT", r"/manifests/staging$")))
    done = promote(world, "A", REGISTRY=proxy.address)
    proxy.clear()
    line = done.one_line_error()
    assert done.code == 1 and "put back as it was" in line, line
    world.converged("staging", world.digests["small"], "2")
    assert staging_bytes(world) == file
    assert promote(world, "A").code == 0
    world.converged("staging", world.digests["A"], "1")


def test_when_the_tag_cannot_be_put_back_one_line_names_what_moved_and_the_command_that_finishes(
    released: World, proxy: FaultProxy
) -> None:
    world = released
    file = staging_bytes(world)
    proxy.inject(
        Fault("HEAD", r"/manifests/staging$", after=("PUT", r"/manifests/staging$")),
        Fault("PUT", r"/manifests/staging$", skip=1),  # the put-back fails
    )
    done = promote(world, "B", REGISTRY=proxy.address)
    proxy.clear()
    line = done.one_line_error()
    assert done.code == 1 and "still moved" in line and "staging tag" in line, line
    command = re.search(r"`(pipeline promote [^`]+)`", line)
    assert command and world.digests["B"] in command.group(1), line
    assert world.client().digest_of("staging") == world.digests["B"]  # it did move ...
    assert staging_bytes(world) == file and world.alias_version("staging") == "1"  # ... alone
    world.pipeline(*command.group(1).split()[1:])  # the command the line names
    world.converged("staging", world.digests["B"], "2")


def test_a_state_file_that_cannot_be_written_puts_tag_and_alias_back(released: World) -> None:
    world = released
    file = staging_bytes(world)
    blocker = world.work / "deploy/staging.yaml.tmp"
    blocker.mkdir()  # write_state's temporary file cannot be created: a real OSError
    try:
        done = promote(world, "A")
    finally:
        blocker.rmdir()
    line = done.one_line_error()
    assert done.code == 1 and "writing" in line and "put back as it was" in line, line
    world.converged("staging", world.digests["B"], "2")
    assert staging_bytes(world) == file
    assert promote(world, "A").code == 0
    world.converged("staging", world.digests["A"], "1")


def test_a_read_only_mlflow_store_puts_the_tag_back(released: World) -> None:
    world = released
    file = staging_bytes(world)
    read_only = f"sqlite:///file:{world.work / 'mlflow.db'}?mode=ro&uri=true"
    done = promote(world, "B", MLFLOW_TRACKING_URI=read_only)
    line = done.one_line_error()
    assert done.code == 1 and "MLflow alias @staging" in line and "put back" in line, line
    world.converged("staging", world.digests["A"], "1")
    assert staging_bytes(world) == file


def test_a_first_promotion_whose_alias_fails_names_the_tag_it_could_not_delete(
    released: World, tmp_path: Path
) -> None:
    """No earlier tag to put back, and distribution's API cannot delete a tag: one line says
    so, and the command it names finishes the promotion."""
    world = released
    repository = f"{REPOSITORY}-first"
    digest = copy_to_repository(world, world.digests["B"], repository)
    deploy = tmp_path / "deploy"
    read_only = f"sqlite:///file:{world.work / 'mlflow.db'}?mode=ro&uri=true"
    settings = {"IMAGE_REPOSITORY": repository, "DEPLOY_DIR": str(deploy)}
    done = world.pipeline(
        "promote", "--image", digest, "--to", "staging", check=False,
        MLFLOW_TRACKING_URI=read_only, **settings,
    )  # fmt: skip
    line = done.one_line_error()
    assert done.code == 1 and "it had none" in line and "still moved" in line, line
    assert not (deploy / "staging.yaml").exists()
    command = re.search(r"`pipeline (promote [^`]+)`", line)
    assert command, line
    world.pipeline(*command.group(1).split(), **settings)
    assert (deploy / "staging.yaml").is_file()
    assert world.alias_version("staging") == "2"
    world.pipeline("promote", "--image", world.digests["A"], "--to", "staging")  # as it was
    world.converged("staging", world.digests["A"], "1")


def copy_to_repository(world: World, digest: str, repository: str) -> str:
    """The image and its three signed statements into another repository of the same
    registry (blobs mounted, manifests copied byte for byte: same digests)."""
    base = f"http://{world.registry.address}/v2"
    registry = world.client()

    def copy(manifest: Manifest, reference: str) -> None:
        body = manifest.body
        for blob in [body["config"], *body.get("layers", [])]:
            mount = requests.post(
                f"{base}/{repository}/blobs/uploads/",
                params={"mount": blob["digest"], "from": REPOSITORY},
                timeout=30,
            )
            assert mount.status_code == 201, mount.text
        put = requests.put(
            f"{base}/{repository}/manifests/{reference}",
            data=manifest.raw,
            headers={"Content-Type": manifest.media_type},
            timeout=30,
        )
        assert put.status_code == 201, put.text

    image = registry.manifest(digest)
    assert image is not None
    copy(image, digest)
    for kind in KINDS:
        artifact = registry.manifest(kind.tag(digest))
        assert artifact is not None
        copy(artifact, kind.tag(digest))
    return digest


# -- two working copies, one registry ----------------------------------------------------------


def test_two_concurrent_promotions_from_two_working_copies_never_leave_tag_and_file_disagreeing(
    released: World, proxy: FaultProxy, tmp_path: Path
) -> None:
    """Each round, a gate in front of the registry holds both promotions at their first read of
    the staging tag and lets them go together, so they really race to the write."""
    world = released
    copies = [world.work, tmp_path / "second-copy"]
    shutil.copytree(world.work / "deploy", copies[1] / "deploy", ignore=_locks)
    shutil.copytree(world.work / "release", copies[1] / "release")
    mlflow = f"sqlite:///{world.work / 'mlflow.db'}"
    rounds = [("B", "small"), ("A", "small"), ("B", "A")]
    for targets in rounds:
        current = world.client().digest_of("staging")
        winner_file = next(
            staging_bytes(world, work)
            for work in copies
            if world.state("staging", work)["image"]["digest"] == current
        )
        for work in copies:  # both copies start from the same, agreeing record
            (work / "deploy/staging.yaml").write_bytes(winner_file)
        before = {str(work): staging_bytes(world, work) for work in copies}
        proxy.gates = [Gate("HEAD", r"/manifests/staging$", parties=2)]
        processes = [
            subprocess.Popen(
                [PIPELINE, "promote", "--image", world.digests[name], "--to", "staging"],
                cwd=work,
                env=world.env(MLFLOW_TRACKING_URI=mlflow, REGISTRY=proxy.address),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for work, name in zip(copies, targets, strict=True)
        ]
        results = [(p.communicate(timeout=600)[0], p.returncode) for p in processes]
        proxy.clear()
        tag = world.client().digest_of("staging")
        codes = [code for _, code in results]
        if not set(codes) <= {0, 8}:  # refused or done: never half-done (both outputs, whole)
            pytest.fail("\n\n".join(f"exit {code}:\n{output}" for output, code in results))
        files = {str(w): world.state("staging", w)["image"]["digest"] for w in copies}
        for work, (output, code) in zip(copies, results, strict=True):
            if code != 0:
                assert staging_bytes(world, work) == before[str(work)], output
        succeeded = [str(w) for w, (_, code) in zip(copies, results, strict=True) if code == 0]
        if tag != current:
            assert any(files[w] == tag for w in succeeded), (results, files, tag)
        name = next(n for n in VERSION if world.digests[n] == tag)
        assert world.alias_version("staging") == VERSION[name], (results, tag)
        print(f"race {targets}: exit codes {codes}, staging ends on {name}")
    agreeing = next(w for w in copies if world.state("staging", w)["image"]["digest"] == tag)
    (world.work / "deploy/staging.yaml").write_bytes(staging_bytes(world, agreeing))


def _locks(folder: str, names: list[str]) -> list[str]:
    return [n for n in names if n.startswith(".") and n.endswith(".lock")]


# -- rollback ----------------------------------------------------------------------------------


def test_rollback_to_any_digest_of_the_history_and_no_other(released: World) -> None:
    world = released
    history = [e["image"]["digest"] for e in world.state("production")["history"]]
    assert world.digests["B"] in history
    done = world.pipeline("rollback", "--env", "production", "--to", world.digests["B"])
    assert "rollback: production" in done.output
    world.converged("production", world.digests["B"], "2")
    assert world.state("production")["action"] == "rollback"
    done = world.pipeline(
        "rollback", "--env", "production", "--to", world.digests["untested"], check=False
    )
    assert done.code == 8 and "is not in production's history" in done.one_line_error()
    world.converged("production", world.digests["B"], "2")


def test_a_second_rollback_never_returns_to_the_digest_the_first_one_left(
    released: World, engine: Engine
) -> None:
    world = released
    ref = derived(engine, world.refs["B"], f"{IMAGE_NAME}:older", "LABEL test.variant=older")
    info = engine.image(ref)
    assert info is not None
    digest = engine.push(info.id, repository=world.client().repository, tags=["older"])
    attach(world, digest, signed_evidence(world, engine, ref, digest))
    world.digests["older"] = digest
    for name in ("older", "large", "small", "A", "B"):  # staging's history, oldest first
        assert promote(world, name).code == 0, name
    world.pipeline("rollback", "--env", "staging")
    world.converged("staging", world.digests["A"], "1")
    world.pipeline("rollback", "--env", "staging")  # not back to B, which the first one left
    world.converged("staging", world.digests["small"], "2")


def test_a_history_entry_whose_image_was_garbage_collected_is_skipped_with_a_message(
    released: World,
) -> None:
    world = released
    large = world.digests["large"]
    deleted = requests.delete(
        f"http://{world.registry.address}/v2/{REPOSITORY}/manifests/{large}", timeout=30
    )
    assert deleted.status_code == 202, deleted.text
    done = world.pipeline("rollback", "--env", "staging", "--to", large, check=False)
    assert done.code == 8 and "gone from the registry" in done.one_line_error()
    # History, newest first: rollback small, rollback A, B, A, small, large (gone), older, ...
    done = world.pipeline("rollback", "--env", "staging")
    assert f"skipped {large}" in done.output and "garbage-collected" in done.output
    world.converged("staging", world.digests["older"], "2")


# -- credentials -------------------------------------------------------------------------------


def test_credentials_in_the_tracking_uri_never_reach_the_output(released: World) -> None:
    world = released
    uri = f"http://mlflow-user:s3cret-pw@127.0.0.1:{free_port()}"
    started = time.monotonic()
    done = promote(
        world, "B", MLFLOW_TRACKING_URI=uri, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
        MLFLOW_HTTP_REQUEST_TIMEOUT="5",
    )  # fmt: skip
    assert done.code == 1, done.output
    assert "s3cret-pw" not in done.output and "mlflow-user" not in done.output, done.output
    assert "***@127.0.0.1" in done.one_line_error()
    assert time.monotonic() - started < 120
