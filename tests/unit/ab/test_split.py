"""The experiment rendered into the Swarm stack and the entry's haproxy.cfg: golden files, the
map the entry writes at start-up, and what a ramp changes (labels only: no task restarts)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from pipeline.ab.assignment import bucket_map
from pipeline.ab.record import Experiment
from pipeline.deploy import split
from pipeline.deploy.stack import SPEC_LABEL, Shape
from pipeline.deploy.stack import render as render_stack
from pipeline.deploy.topology import load_topology
from pipeline.release.state import State
from tests.unit.ab.conftest import experiment
from tests.unit.deploy.conftest import ENTRY, ROOT, state

PROMETHEUS = "registry.example:5000/acme/classifier-prometheus@sha256:" + "f" * 64

GOLDEN = Path(__file__).resolve().parent / "golden"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.is_file(), f"no golden file {path}: run with UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(), f"{name} differs from its golden file (UPDATE_GOLDEN=1)"


def with_experiment(running: Experiment | None) -> State:
    return state().model_copy(update={"experiment": running})


def shape():  # type: ignore[no-untyped-def]
    return load_topology(ROOT / "deploy" / "topology.yaml").get("production")


def test_the_stack_and_entry_config_of_an_experiment_match_their_golden_files() -> None:
    desired = split.render(
        with_experiment(experiment(share=10)), shape(), entry_image=ENTRY, monitor_image=PROMETHEUS
    )
    check_golden("production-ab.stack.yaml", desired.stack_yaml)
    check_golden("production-ab.haproxy.cfg", desired.haproxy_cfg)
    assert set(desired.shapes) == {"model", "candidate", "entry", "prometheus"}
    assert desired.experiment_share == 10


def test_without_a_running_experiment_the_stack_is_exactly_the_deploy_one() -> None:
    plain = render_stack(state(), shape(), entry_image=ENTRY)
    for running in (None, experiment(share=10).model_copy(update={"status": "stopped"})):
        desired = split.render(with_experiment(running), shape(), entry_image=ENTRY)
        assert desired.stack_yaml == plain.stack_yaml
        assert desired.haproxy_cfg == plain.haproxy_cfg
        assert desired.experiment_share is None


def test_each_arm_is_told_its_variant_and_the_candidate_runs_its_digest() -> None:
    running = experiment(share=10)
    desired = split.render(with_experiment(running), shape(), entry_image=ENTRY)
    services = yaml.safe_load(desired.stack_yaml.split("\n", 2)[2])["services"]
    assert services["model"]["environment"]["SERVING_VARIANT"] == "a"
    assert services["candidate"]["environment"]["SERVING_VARIANT"] == "b"
    assert services["candidate"]["environment"]["SERVING_EXPERIMENT"] == running.id
    assert services["candidate"]["image"].endswith("@" + running.candidate.image.digest)
    assert services["candidate"]["deploy"]["labels"]["ml.model.version"] == "2"
    assert services["model"]["image"].endswith("@" + state().image.digest)
    candidate = desired.shapes["candidate"]
    assert candidate.image == services["candidate"]["image"]
    assert candidate.replicas == desired.shapes["model"].replicas
    assert (
        dict(candidate.labels)[SPEC_LABEL] == services["candidate"]["deploy"]["labels"][SPEC_LABEL]
    )


def test_a_ramp_changes_only_labels_so_no_task_restarts_and_it_is_not_drift() -> None:
    at_10 = split.render(
        with_experiment(experiment(share=10)), shape(), entry_image=ENTRY, monitor_image=PROMETHEUS
    )
    at_50 = split.render(with_experiment(experiment(share=50)), shape(), entry_image=ENTRY)
    assert at_10.shapes["model"] == at_50.shapes["model"]
    assert at_10.shapes["candidate"] == at_50.shapes["candidate"]
    assert at_10.haproxy_cfg == at_50.haproxy_cfg  # the share lives in the map, not here
    assert at_10.config_name == at_50.config_name
    entry_10, entry_50 = at_10.shapes["entry"], at_50.shapes["entry"]
    assert entry_10.differences(entry_50) == ["labels"]
    # the spec hash moves with the share: reconcile sees git's change, not a hand edit
    assert dict(entry_10.labels)[SPEC_LABEL] != dict(entry_50.labels)[SPEC_LABEL]
    assert dict(entry_50.labels)[split.SHARE_LABEL] == "50"


def test_the_entry_start_up_writes_the_same_map_as_the_python_assignment(tmp_path: Path) -> None:
    script = split.map_script().replace("$$", "$")  # what Compose hands the container
    script = script.replace(split.MAP_PATH, str(tmp_path / "ab.map"))
    script = script.split(" && exec ")[0]
    for share in (0, 1, 10, 50, 99):
        done = subprocess.run(
            ["/bin/sh", "-c", script], env={"AB_SHARE": str(share)}, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "ab.map").read_text() == bucket_map(share)
    bad = subprocess.run(["/bin/sh", "-c", script], env={"AB_SHARE": "1; rm -rf /"})
    assert bad.returncode == 64


def test_the_split_rules_hash_the_experiment_id_and_bound_the_user_key() -> None:
    running = experiment(share=10)
    cfg = split.render(with_experiment(running), shape(), entry_image=ENTRY).haproxy_cfg
    assert f"str({running.id}:),concat(,txn.uid,),crc32,mod(100)" in cfg
    assert "req.fhdr(X-User-Id) -m len 1:256" in cfg
    assert f"map_int({split.MAP_PATH},a_0)" in cfg
    assert "server-template a 1-6 tasks.ml-production_model:8080 backup" in cfg
    assert "observe layer4 error-limit 1 on-error mark-down" in cfg
    assert cfg.count("use_backend candidate") == 1


def test_an_entry_config_of_another_shape_is_refused_with_a_pointer() -> None:
    with pytest.raises(ValueError, match=r"pipeline/deploy/split\.py"):
        split.entry_config("frontend entry\n", experiment(), state(), stack="s")


def test_the_rendered_shapes_read_back_from_the_compose_file_as_swarm_would_hold_them() -> None:
    desired = split.render(
        with_experiment(experiment(share=10)), shape(), entry_image=ENTRY, monitor_image=PROMETHEUS
    )
    services = yaml.safe_load(desired.stack_yaml.split("\n", 2)[2])["services"]
    for name in ("model", "candidate", "entry", "prometheus"):
        labels = services[name]["deploy"]["labels"]
        assert dict(desired.shapes[name].labels) == labels
        env = services[name].get("environment") or {}
        assert desired.shapes[name].env == tuple(sorted(f"{k}={v}" for k, v in env.items()))
    assert isinstance(replace(desired.shapes["entry"]), Shape)
