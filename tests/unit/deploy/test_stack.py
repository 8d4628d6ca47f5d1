"""The rendered stack file and haproxy.cfg: deterministic, golden, and comparable with Swarm.

`data/live-specs.json` is what `docker service inspect` returned (Docker 20.10, one-node Swarm)
right after `pipeline reconcile` applied `data/staging.yaml` with `data/topology.yaml`; the shape
read back from it must equal the rendered one, or reconcile would see a change where none is.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import yaml

from pipeline.deploy.stack import SPEC_LABEL, Shape, render
from pipeline.deploy.topology import load_topology
from pipeline.release.state import read_state
from tests.unit.deploy.conftest import ENTRY, HERE, check_golden, state

DATA = HERE / "data"


def test_the_production_stack_matches_its_golden_files(topology_file: Path) -> None:
    shape = load_topology(topology_file).get("production")
    desired = render(state(), shape, entry_image=ENTRY)
    check_golden("production.stack.yaml", desired.stack_yaml)
    check_golden("production.haproxy.cfg", desired.haproxy_cfg)


def test_rendering_twice_gives_the_same_bytes(topology_file: Path) -> None:
    shape = load_topology(topology_file).get("staging")
    first = render(state("staging"), shape, entry_image=ENTRY)
    second = render(state("staging"), shape, entry_image=ENTRY)
    assert first.stack_yaml == second.stack_yaml and first.key() == second.key()


def test_the_model_is_pinned_by_digest_and_rolls_start_first_with_rollback(
    topology_file: Path,
) -> None:
    shape = load_topology(topology_file).get("production")
    desired = render(state(), shape, entry_image=ENTRY)
    model = yaml.safe_load(desired.stack_yaml)["services"]["model"]
    assert model["image"] == "registry.example:5000/acme/classifier@sha256:" + "1" * 64
    assert model["deploy"]["endpoint_mode"] == "dnsrr"
    update = model["deploy"]["update_config"]
    assert (update["order"], update["failure_action"]) == ("start-first", "rollback")
    assert model["deploy"]["labels"]["ml.model.version"] == "4"
    entry = yaml.safe_load(desired.stack_yaml)["services"]["entry"]
    assert entry["ports"][0] == {
        "target": shape.entry.port,
        "published": shape.entry.port,
        "protocol": "tcp",
        "mode": "host",
    }
    assert "/v2/health/ready" in desired.haproxy_cfg
    assert f"tasks.{shape.stack}_model:8080" in desired.haproxy_cfg


def test_a_new_digest_changes_the_model_service_only(topology_file: Path) -> None:
    shape = load_topology(topology_file).get("production")
    one = render(state(), shape, entry_image=ENTRY)
    two = render(state(digest="sha256:" + "2" * 64, version="5"), shape, entry_image=ENTRY)
    assert one.shapes["entry"] == two.shapes["entry"]
    assert one.config_name == two.config_name
    assert one.shapes["model"].differences(two.shapes["model"]) == ["image", "labels"]
    assert one.key() != two.key()


def test_the_shape_swarm_reports_equals_the_rendered_one() -> None:
    recorded = read_state(DATA, "staging")
    assert recorded is not None
    shape = load_topology(DATA / "topology.yaml").get("staging")
    specs = json.loads((DATA / "live-specs.json").read_text())
    entry = specs["entry"]["TaskTemplate"]["ContainerSpec"]["Image"]
    desired = render(recorded, shape, entry_image=entry)
    for name in ("model", "entry"):
        live = Shape.from_spec(specs[name])
        assert desired.shapes[name].differences(live) == [], name


def test_a_hand_edit_is_told_from_a_git_change_by_the_spec_label() -> None:
    recorded = read_state(DATA, "staging")
    assert recorded is not None
    shape = load_topology(DATA / "topology.yaml").get("staging")
    specs = json.loads((DATA / "live-specs.json").read_text())
    entry = specs["entry"]["TaskTemplate"]["ContainerSpec"]["Image"]
    desired = render(recorded, shape, entry_image=entry)
    live = Shape.from_spec(specs["model"])
    by_hand = replace(live, replicas=live.replicas + 1)  # `docker service update --replicas`
    assert desired.shapes["model"].differences(by_hand) == ["replicas"]
    # the live label still names the desired shape: that is drift, not a new desired state
    assert dict(by_hand.labels)[SPEC_LABEL] == dict(desired.shapes["model"].labels)[SPEC_LABEL]
