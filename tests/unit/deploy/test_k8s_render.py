"""`pipeline render k8s`: Kustomize base + overlays and Argo CD Applications, golden."""

from __future__ import annotations

from pathlib import Path

import yaml

from pipeline.deploy import k8s
from pipeline.deploy.topology import load_topology
from tests.unit.deploy.conftest import check_golden, state

REPO = "https://git.example.com/acme/classifier.git"


def rendered(topology_file: Path) -> dict[str, str]:
    states = {"staging": state("staging"), "production": state()}
    return k8s.files(states, load_topology(topology_file), repo_url=REPO)


def test_the_manifests_match_their_golden_files(topology_file: Path) -> None:
    for relative, text in rendered(topology_file).items():
        check_golden("k8s/" + relative, text)


def test_each_overlay_pins_the_digest_git_records(topology_file: Path) -> None:
    files = rendered(topology_file)
    overlay = yaml.safe_load(files["overlays/production/kustomization.yaml"])
    assert overlay["images"] == [
        {
            "name": "model",
            "newName": "registry.example:5000/acme/classifier",
            "digest": "sha256:" + "1" * 64,
        }
    ]
    app = yaml.safe_load(files["argocd/production.yaml"])
    assert app["spec"]["source"]["path"] == "deploy/k8s/overlays/production"
    assert app["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}


def test_the_built_deployment_probes_readiness_and_liveness(topology_file: Path) -> None:
    objects = k8s.built(state(), load_topology(topology_file))
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["image"].endswith("@sha256:" + "1" * 64)
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert {o["kind"] for o in objects} == {"Deployment", "Service", "PodDisruptionBudget"}


def autoscaled(topology_file: Path, tmp_path: Path) -> Path:
    data = yaml.safe_load(topology_file.read_text())
    data["environments"]["production"]["autoscale"] = {
        "min_replicas": 1,
        "max_replicas": 4,
        "target_rps_per_replica": 500,
        "window_s": 30,
        "scale_down_stabilisation_s": 60,
        "interval_s": 5,
    }
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_an_autoscaled_environment_gets_a_keda_scaled_object_on_the_request_rate(
    topology_file: Path, tmp_path: Path
) -> None:
    files = rendered(autoscaled(topology_file, tmp_path))
    for relative in (
        "overlays/production/scaledobject.yaml",
        "overlays/production/kustomization.yaml",
        "argocd/production.yaml",
    ):
        check_golden("k8s-autoscale/" + relative, files[relative])
    scaler = yaml.safe_load(files["overlays/production/scaledobject.yaml"])["spec"]
    assert (scaler["minReplicaCount"], scaler["maxReplicaCount"]) == (1, 4)
    trigger = scaler["triggers"][0]
    assert trigger["metricType"] == "AverageValue" and trigger["metadata"]["threshold"] == "500"
    assert "rate(serving_requests_total{" in trigger["metadata"]["query"]
    behavior = scaler["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 60
    assert behavior["scaleDown"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 60}]
    overlay = yaml.safe_load(files["overlays/production/kustomization.yaml"])
    assert "scaledobject.yaml" in overlay["resources"]
    app = yaml.safe_load(files["argocd/production.yaml"])["spec"]
    assert app["ignoreDifferences"][0]["jsonPointers"] == ["/spec/replicas"]
    assert "RespectIgnoreDifferences=true" in app["syncPolicy"]["syncOptions"]
    assert "overlays/staging/scaledobject.yaml" not in files  # staging is not autoscaled
