"""The Kubernetes objects of a running experiment, validated offline with the field's own
schema tool (``kubernetes-validate --strict``); when a kubectl with kustomize v5 is on PATH, the
overlay must also build. Nothing is applied: no API server can run here."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline.ab.assignment import bucket_map
from pipeline.config import Settings
from pipeline.deploy import haproxy, k8s
from pipeline.deploy.topology import load_topology
from pipeline.release.state import write_state
from tests.integration.deploy.test_k8s import kubernetes_validate
from tests.unit.ab.conftest import experiment
from tests.unit.deploy.conftest import ROOT, state

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("k8s-ab")
    settings = Settings(deploy_dir=root / "deploy")
    (root / "deploy").mkdir()
    write_state(settings.deploy_dir, state("staging"))
    running = state().model_copy(update={"experiment": experiment(share=20)})
    write_state(settings.deploy_dir, running)
    topology = load_topology(ROOT / "deploy/topology.yaml")
    k8s.write(settings, topology, out_dir=root / "k8s", envs=None, repo_url="https://g.example/x")
    return root / "k8s"


def test_the_experiment_objects_pass_kubernetes_validate_strict(rendered: Path) -> None:
    experiment_file = rendered / "overlays/production/experiment.yaml"
    done = kubernetes_validate(experiment_file)
    assert done.returncode == 0, done.stdout + done.stderr
    passed = re.findall(r"passed for resource (\S+)", done.stdout + done.stderr)
    assert len(passed) == 5, done.stdout + done.stderr


def test_kubernetes_validate_catches_a_broken_entry(rendered: Path, tmp_path: Path) -> None:
    objects = list(
        yaml.safe_load_all((rendered / "overlays/production/experiment.yaml").read_text())
    )
    entry = objects[3]
    entry["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(entry))
    done = kubernetes_validate(path)
    assert done.returncode != 0
    assert "containerPort" in done.stdout + done.stderr


def test_kustomize_builds_the_overlay_with_the_experiment(rendered: Path) -> None:
    kubectl = shutil.which("kubectl")
    version = subprocess.run(
        [kubectl or "false", "version", "--client"], capture_output=True, text=True
    )
    if not kubectl or "Kustomize Version: v5" not in version.stdout:
        pytest.skip("no kubectl with kustomize v5 here (Debian's kubectl 1.20 predates it)")
    done = subprocess.run(
        [kubectl, "kustomize", str(rendered / "overlays/production")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    names = {(o["kind"], o["metadata"]["name"]) for o in yaml.safe_load_all(done.stdout)}
    assert {("Deployment", "model-candidate"), ("Deployment", "entry")} <= names


def test_the_kubernetes_entry_config_passes_haproxys_own_check(
    rendered: Path, tmp_path: Path
) -> None:
    """`haproxy -c` of Debian's HAProxy (the entry image's), unpacked here like the image's."""
    debs = haproxy.download_packages(tmp_path / "debs")
    root = tmp_path / "root"
    for deb in debs:
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    objects = list(
        yaml.safe_load_all((rendered / "overlays/production/experiment.yaml").read_text())
    )
    config = next(o for o in objects if o["kind"] == "ConfigMap")["data"]["haproxy.cfg"]
    (tmp_path / "ab.map").write_text(bucket_map(20))
    config = config.replace("/tmp/ab.map", str(tmp_path / "ab.map"))
    config = config.replace("/tmp/haproxy.sock", str(tmp_path / "haproxy.sock"))
    (tmp_path / "haproxy.cfg").write_text(config)
    libraries = f"{root}/usr/lib/x86_64-linux-gnu:{root}/lib/x86_64-linux-gnu"
    done = subprocess.run(
        [str(root / "usr/sbin/haproxy"), "-c", "-f", str(tmp_path / "haproxy.cfg")],
        env={"LD_LIBRARY_PATH": libraries},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Configuration file is valid" in done.stdout + done.stderr
    assert "rule placed after" not in done.stdout + done.stderr  # rules in the order they run
