"""`pipeline render k8s` while an experiment runs: the same split as on Swarm, as Kubernetes
objects (golden files; validated offline in tests/integration/ab/test_k8s_split.py)."""

from __future__ import annotations

import yaml

from pipeline.deploy import k8s, k8s_split, split
from pipeline.deploy.topology import load_topology
from pipeline.release.state import State
from tests.unit.ab.conftest import experiment
from tests.unit.ab.test_split import check_golden
from tests.unit.deploy.conftest import ROOT, state

REPO = "https://git.example.com/acme/classifier.git"
ENTRY = "registry.example:5000/acme/classifier-entry@sha256:" + "e" * 64


def rendered(production: State) -> dict[str, str]:
    states = {"staging": state("staging"), "production": production}
    topology = load_topology(ROOT / "deploy" / "topology.yaml")
    return k8s.files(states, topology, repo_url=REPO, entry_images={"production": ENTRY})


def test_an_experiment_adds_the_candidate_and_the_entry_to_its_overlay_only() -> None:
    files = rendered(state().model_copy(update={"experiment": experiment(share=20)}))
    for name in ("experiment.yaml", "experiment-patch.yaml", "kustomization.yaml"):
        check_golden(f"k8s-production-{name}", files[f"overlays/production/{name}"])
    assert "overlays/staging/experiment.yaml" not in files
    plain = rendered(state())
    for relative, text in plain.items():
        if not relative.startswith("overlays/production/"):
            assert files[relative] == text  # the base and staging are untouched


def test_the_kubernetes_entry_splits_with_the_swarm_entrys_rules() -> None:
    running = experiment(share=20)
    files = rendered(state().model_copy(update={"experiment": running}))
    objects = list(yaml.safe_load_all(files["overlays/production/experiment.yaml"]))
    kinds = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert kinds == [
        ("Deployment", "model-candidate"),
        ("Service", "model-candidate"),
        ("ConfigMap", "entry"),
        ("Deployment", "entry"),
        ("Service", "entry"),
    ]
    config = objects[2]["data"]["haproxy.cfg"]
    assert split.frontend_rules(running) in config
    assert "server a model:80" in config and "backup" in config
    entry = objects[3]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "AB_SHARE", "value": "20"} in entry["env"]
    assert "$$" not in entry["command"][2]  # Kubernetes does not interpolate: plain shell
    candidate = objects[0]["spec"]["template"]["spec"]["containers"][0]
    assert candidate["image"].endswith("@" + running.candidate.image.digest)
    assert {"name": "SERVING_VARIANT", "value": "b"} in candidate["env"]
    assert objects[1]["spec"]["selector"] == {"app.kubernetes.io/component": "model-candidate"}
    overlay = yaml.safe_load(files["overlays/production/kustomization.yaml"])
    assert overlay["resources"] == ["../../base", "experiment.yaml"]
    assert {"name": "entry", "newName": ENTRY.split("@")[0], "digest": "sha256:" + "e" * 64} in (
        overlay["images"]
    )
    patch = k8s_split.model_patch(running)["spec"]["template"]["spec"]["containers"][0]
    assert patch["env"][0] == {"name": "SERVING_VARIANT", "value": "a"}
