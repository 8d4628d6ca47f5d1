"""`pipeline render k8s` output, validated offline with the field's own schema tools.

- core kinds (Deployment, Service, PodDisruptionBudget), both the base files and the objects
  each overlay builds to: ``kubernetes-validate --strict`` (PyPI), against its newest schema;
- the Argo CD ``Application``: the published CRD schema from the npm package
  ``@kubernetes-models/argo-cd``, under Node (installed into a temp folder by the test);
- KEDA's ``ScaledObject`` of an autoscaled environment: ``@kubernetes-models/keda`` the same way;
- when a ``kubectl`` with kustomize v5 is on PATH, ``kubectl kustomize overlays/<env>`` must
  build exactly the objects :func:`pipeline.deploy.k8s.built` says (not every machine has it).

No API server can run here: nothing is applied to a cluster.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.config import Settings
from pipeline.deploy import k8s
from pipeline.deploy.topology import load_topology
from pipeline.release.state import read_state, write_state
from tests.unit.deploy.conftest import ROOT, state

pytestmark = [pytest.mark.integration]
VALIDATE = Path(sys.executable).parent / "kubernetes-validate"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("k8s")
    settings = Settings(deploy_dir=root / "deploy")
    (root / "deploy").mkdir()
    write_state(settings.deploy_dir, state("staging"))
    write_state(settings.deploy_dir, state("production", digest="sha256:" + "2" * 64, version="5"))
    topology = load_topology(ROOT / "deploy/topology.yaml")
    k8s.write(
        settings, topology, out_dir=root / "k8s", envs=None, repo_url="https://git.example/x.git"
    )
    for env in ("staging", "production"):
        current = read_state(settings.deploy_dir, env)
        assert current is not None
        objects = k8s.built(current, topology)
        (root / f"built-{env}.yaml").write_text(yaml.safe_dump_all(objects, sort_keys=False))
    return root


def kubernetes_validate(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VALIDATE), "--strict", *map(str, files)], capture_output=True, text=True, timeout=300
    )


def test_core_kinds_pass_kubernetes_validate_strict(rendered: Path) -> None:
    files = sorted((rendered / "k8s/base").glob("[!k]*.yaml"))  # not kustomization.yaml
    files += [rendered / "built-staging.yaml", rendered / "built-production.yaml"]
    done = kubernetes_validate(*files)
    assert done.returncode == 0, done.stdout + done.stderr
    passed = re.findall(r"passed for resource (\S+)", done.stdout + done.stderr)
    assert len(passed) == 9, done.stdout + done.stderr  # 3 base + 3 per environment


def test_kubernetes_validate_catches_a_broken_deployment(rendered: Path, tmp_path: Path) -> None:
    broken = yaml.safe_load((rendered / "k8s/base/deployment.yaml").read_text())
    broken["spec"]["replicas"] = "two"
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    done = kubernetes_validate(path)
    assert done.returncode != 0
    assert "replicas" in done.stdout + done.stderr


@pytest.fixture(scope="module")
def crd_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The published CRD schemas (Argo CD, KEDA) as npm packages, installed once."""
    npm, node = shutil.which("npm"), shutil.which("node")
    if not npm or not node:
        pytest.skip("Node and npm are not installed: the CRD schema checks need them")
    folder = tmp_path_factory.mktemp("node")
    done = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--silent", "--prefix", str(folder),
         "@kubernetes-models/argo-cd@4", "@kubernetes-models/keda@2", "js-yaml@4"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return folder / "node_modules"


def crd_validate(script: str, models: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["node", str(ROOT / "scripts" / script), *map(str, files)],
        env={"NODE_PATH_MODELS": str(models), "PATH": "/usr/bin:/bin:/usr/local/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_argo_cd_applications_pass_the_published_crd_schema(
    rendered: Path, crd_models: Path, tmp_path: Path
) -> None:
    apps = sorted((rendered / "k8s/argocd").glob("*.yaml"))
    assert [a.name for a in apps] == ["production.yaml", "staging.yaml"]
    done = crd_validate("validate-argocd.cjs", crd_models, *apps)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(" valid") == 2
    broken = yaml.safe_load(apps[0].read_text())
    broken["spec"]["syncPolicy"]["automated"]["prune"] = "yes"
    del broken["spec"]["destination"]
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    done = crd_validate("validate-argocd.cjs", crd_models, path)
    assert done.returncode == 1 and "INVALID" in done.stdout, done.stdout


def test_kustomize_builds_each_overlay_into_the_objects_render_promises(rendered: Path) -> None:
    kubectl = shutil.which("kubectl")
    version = subprocess.run(
        [kubectl or "false", "version", "--client"], capture_output=True, text=True
    )
    if not kubectl or "Kustomize Version: v5" not in version.stdout:
        pytest.skip("no kubectl with kustomize v5 here (Debian's kubectl 1.20 predates it)")
    for env in ("staging", "production"):
        done = subprocess.run(
            [kubectl, "kustomize", str(rendered / "k8s/overlays" / env)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        theirs = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(done.stdout)}
        ours = yaml.safe_load_all((rendered / f"built-{env}.yaml").read_text())
        assert {(o["kind"], o["metadata"]["name"]): o for o in ours} == theirs, env


def test_an_autoscaled_environment_s_scaled_object_passes_the_keda_crd_schema(
    crd_models: Path, tmp_path: Path
) -> None:
    data = yaml.safe_load((ROOT / "deploy/topology.yaml").read_text())
    data["environments"]["production"]["autoscale"] = {
        "min_replicas": 1, "max_replicas": 4, "target_rps_per_replica": 500,
    }  # fmt: skip
    (tmp_path / "topology.yaml").write_text(yaml.safe_dump(data))
    files = k8s.files(
        {"production": state()}, load_topology(tmp_path / "topology.yaml"), repo_url="https://x"
    )
    path = tmp_path / "scaledobject.yaml"
    path.write_text(files["overlays/production/scaledobject.yaml"])
    done = crd_validate("validate-keda.cjs", crd_models, path)
    assert done.returncode == 0 and " valid" in done.stdout, done.stdout + done.stderr
    broken = yaml.safe_load(path.read_text())
    broken["spec"]["minReplicaCount"] = "one"
    del broken["spec"]["scaleTargetRef"]
    path.write_text(yaml.safe_dump(broken))
    done = crd_validate("validate-keda.cjs", crd_models, path)
    assert done.returncode == 1 and "INVALID" in done.stdout, done.stdout
