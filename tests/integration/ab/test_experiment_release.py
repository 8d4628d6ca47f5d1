"""`pipeline ab start | conclude` under the release rules, against a real registry and a real
MLflow store: a candidate without verified evidence is refused, production takes only what
staging held, and `conclude --winner b` promotes through the normal promotion path.

The "images" are OCI manifests with a labelled config and no layers, pushed over the
registry's HTTP API: what the release rules read (digest, config id, labels, referrers) is
all there, and no engine is needed.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from pipeline import artifacts
from pipeline.ab import lifecycle
from pipeline.ab.lifecycle import ExperimentRefused
from pipeline.config import Settings
from pipeline.errors import EvidenceError, PromotionRefused
from pipeline.release import evidence, promotion, signing
from pipeline.release.registry import Registry
from pipeline.release.sbom import IMAGE_ID_PROPERTY
from pipeline.release.state import read_state
from tests.support.registry import LocalRegistry
from tests.support.reports import complete_report, predicates

pytestmark = [pytest.mark.integration]

MODEL = "ab-model"
PIPELINE = str(Path(sys.executable).parent / "pipeline")


@dataclass
class World:
    root: Path
    registry: LocalRegistry
    repository: str
    digests: dict[str, str]  # v1, v2, untested

    def settings(self) -> Settings:
        return Settings(
            registry=self.registry.address,
            registry_insecure=True,
            image_repository=self.repository,
            deploy_dir=self.root / "deploy",
            mlflow_tracking_uri=f"sqlite:///{self.root / 'mlflow.db'}",
            promoted_by="ab-test",
            registry_timeout_s=5,
            release_signing_key_file=self.root / "keys" / "release.pem",
            release_signers_dir=self.root / "signers",
        )

    def env(self) -> dict[str, str]:
        s = self.settings()
        return {
            "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
            "REGISTRY": s.registry,
            "REGISTRY_INSECURE": "true",
            "IMAGE_REPOSITORY": self.repository,
            "DEPLOY_DIR": str(s.deploy_dir),
            "MLFLOW_TRACKING_URI": s.mlflow_tracking_uri,
            "PROMOTED_BY": "ab-test",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "RELEASE_SIGNERS_DIR": str(s.release_signers_dir),
        }


def labels(version: str) -> dict[str, str]:
    return {
        "ml.model.name": MODEL,
        "ml.model.version": version,
        "ml.model.sha256": "0" * 64,
        "org.opencontainers.image.revision": f"commit-{version}",
    }


def push_image(address: str, repository: str, *, version: str) -> tuple[str, str]:
    """A layerless OCI image whose config carries the model labels: (manifest digest, id)."""
    base = f"http://{address}/v2/{repository}"
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": labels(version)},
            "rootfs": {"type": "layers", "diff_ids": []},
        }
    ).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    upload = requests.post(f"{base}/blobs/uploads/", timeout=5)
    upload.raise_for_status()
    location = upload.headers["Location"]
    url = location if location.startswith("http") else f"http://{address}{location}"
    sep = "&" if "?" in url else "?"
    requests.put(f"{url}{sep}digest={config_digest}", data=config, timeout=5).raise_for_status()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [],
        }
    ).encode()
    put = requests.put(
        f"{base}/manifests/v{version}",
        data=manifest,
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        timeout=5,
    )
    put.raise_for_status()
    return put.headers["Docker-Content-Digest"], config_digest


def attest(world_settings: Settings, root: Path, digest: str, config_id: str, version: str) -> None:
    """Signed evidence for exactly this digest, as `pipeline sign` + `attest` push it: a
    complete passing contract report, an SBOM naming the image, provenance of its commit."""
    report = complete_report(
        image=artifacts.TestedImage(ref=f"x:v{version}", id=config_id, digest=digest),
        model=artifacts.TestedModel(
            model_name=MODEL, model_version=version, run_id="r", sha256="0" * 64
        ),
    )
    sbom = {
        "bomFormat": "CycloneDX",
        "metadata": {
            "component": {"properties": [{"name": IMAGE_ID_PROPERTY, "value": config_id}]}
        },
    }
    signed = predicates(report, sbom=sbom, revision=f"commit-{version}")
    registry = Registry(world_settings)
    envelopes = evidence.signed(
        signing.load_signer(world_settings),
        repository=registry.repository,
        digest=digest,
        predicates=signed,
    )
    keys = signing.trusted_keys(world_settings)
    evidence.attach(registry, digest=digest, envelopes=envelopes, keys=keys, where=str(root))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("ab-release")
    registry = LocalRegistry(root / "registry").start()
    repository = f"test/ab-{uuid.uuid4().hex[:8]}"
    digests, configs = {}, {}
    for version in ("1", "2", "3"):
        digests[version], configs[version] = push_image(
            registry.address, repository, version=version
        )
    world = World(root=root, registry=registry, repository=repository, digests=digests)
    signing.keygen(
        name="release",
        private_path=world.settings().release_signing_key_file,  # type: ignore[arg-type]
        signers_dir=world.settings().release_signers_dir,
    )
    import mlflow

    mlflow.set_tracking_uri(world.settings().mlflow_tracking_uri)
    client = mlflow.MlflowClient()
    client.create_registered_model(MODEL)
    for version in ("1", "2", "3"):
        client.create_model_version(MODEL, source=str(root / f"model-{version}"))
    for version in ("1", "2"):  # version 3 stays untested
        attest(world.settings(), root, digests[version], configs[version], version)
    try:
        yield world
    finally:
        registry.stop()


def test_an_experiment_needs_a_champion_first(world: World) -> None:
    with pytest.raises(ExperimentRefused, match="promote one to staging first"):
        lifecycle.start(
            world.settings(),
            env="staging",
            ref=world.digests["2"],
            share=10,
            plan=lifecycle.MetricPlan(),
        )


def test_ab_start_refuses_a_candidate_without_verified_evidence(world: World) -> None:
    promotion.promote(world.settings(), ref=world.digests["1"], env="staging")
    done = subprocess.run(
        [PIPELINE, "ab", "start", "--env", "staging", "--image", world.digests["3"]],
        env=world.env(),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=world.root,
    )
    assert done.returncode == EvidenceError.exit_code == 8, done.stderr
    assert "no valid signed contract evidence" in done.stderr
    state = read_state(world.root / "deploy", "staging")
    assert state is not None and state.experiment is None


def test_ab_start_refuses_the_champion_as_candidate_unless_asked_for_an_a_a_test(
    world: World,
) -> None:
    with pytest.raises(ExperimentRefused, match="--aa"):
        lifecycle.start(
            world.settings(), env="staging", ref="v1", share=10, plan=lifecycle.MetricPlan()
        )


def test_ab_start_records_the_tested_candidate_and_its_evidence(world: World) -> None:
    started = lifecycle.start(
        world.settings(),
        env="staging",
        ref="v2",
        share=10,
        plan=lifecycle.MetricPlan(method="fixed", baseline_rate=0.2, mde=0.05),
        experiment_id="staging-exp-1",
    )
    assert started.candidate.image.digest == world.digests["2"]
    assert started.champion.digest == world.digests["1"]
    assert started.candidate.model.version == "2"
    assert started.candidate.evidence.tag == evidence.evidence_tag(world.digests["2"])
    assert started.metric.sample_size_per_arm == 1_094
    with pytest.raises(ExperimentRefused, match="is running"):
        lifecycle.start(
            world.settings(), env="staging", ref="v2", share=10, plan=lifecycle.MetricPlan()
        )


def test_a_production_experiment_takes_only_a_digest_staging_holds_or_held(world: World) -> None:
    settings = world.settings()
    promotion.promote(settings, ref=world.digests["1"], env="production")
    with pytest.raises(ExperimentRefused, match=r"deploy/staging\.yaml never named"):
        lifecycle.start(settings, env="production", ref="v3", share=5, plan=lifecycle.MetricPlan())


def test_conclude_b_promotes_the_candidate_through_the_promotion_path(world: World) -> None:
    settings = world.settings()
    _, outcome = lifecycle.conclude(settings, env="staging", winner="b")
    assert outcome is not None and outcome.changed
    state = read_state(world.root / "deploy", "staging")
    assert state is not None and state.experiment is not None
    assert state.image.digest == world.digests["2"]
    assert state.history[0].image.digest == world.digests["1"]  # the champion, in the history
    assert (state.experiment.status, state.experiment.winner) == ("concluded", "b")
    assert [e.action for e in state.experiment.history] == ["conclude", "start"]
    # the promotion moved the registry tag as `pipeline promote` does
    assert promotion.Registry(settings).digest_of("staging") == world.digests["2"]


def test_production_can_test_what_staging_held_and_a_failed_conclude_changes_nothing(
    world: World,
) -> None:
    settings = world.settings()
    started = lifecycle.start(
        settings, env="production", ref="v2", share=5, plan=lifecycle.MetricPlan()
    )
    assert started.candidate.image.digest == world.digests["2"]
    promotion.promote(settings, ref=world.digests["1"], env="staging")  # staging moves on
    with pytest.raises(PromotionRefused, match="takes only the digest staging holds now"):
        lifecycle.conclude(settings, env="production", winner="b")
    state = read_state(world.root / "deploy", "production")
    assert state is not None and state.experiment is not None
    assert state.experiment.running and state.image.digest == world.digests["1"]
    stopped = lifecycle.stop(settings, env="production", note="staging moved on")
    assert stopped.status == "stopped"
