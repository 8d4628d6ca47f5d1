"""The autoscaling policy (pure), its topology section, the counter reading and one loop tick.

The policy's cases are tables: a rate, a target, the bounds, the current count and how long the
recommendation has been low go in; the next count and the action come out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.deploy import haproxy
from pipeline.deploy.autoscale import Sample, ScaleState, decide, recommend, request_rate, trim
from pipeline.deploy.autoscaler import Autoscaler, Files
from pipeline.deploy.haproxy_runtime import parse_stat
from pipeline.deploy.stack import render
from pipeline.deploy.topology import Autoscale, load_topology
from pipeline.errors import ConfigError
from tests.unit.deploy.conftest import ENTRY, state


def policy(
    *, target: float = 100, low: int = 1, high: int = 5, stabilisation: float = 20
) -> Autoscale:
    return Autoscale(
        min_replicas=low,
        max_replicas=high,
        target_rps_per_replica=target,
        window_s=5,
        scale_down_stabilisation_s=stabilisation,
        interval_s=1,
    )


@pytest.mark.parametrize(
    ("rate", "target", "low", "high", "expected"),
    [
        (0, 100, 1, 5, 1),  # idle: the floor, never zero
        (1, 100, 1, 5, 1),
        (100, 100, 1, 5, 1),  # exactly one replica's worth
        (100.5, 100, 1, 5, 2),  # a little more: one more replica
        (300, 100, 1, 5, 3),
        (0.3 * 10, 0.1 * 10, 1, 5, 3),  # 3.0000000000000004 / 1.0: float noise is not a replica
        (2000, 100, 1, 5, 5),  # the ceiling
        (0, 100, 2, 5, 2),  # a floor above one
        (250, 50, 1, 50, 5),
    ],
)
def test_the_recommendation_is_the_ceiling_of_rate_over_target_within_the_bounds(
    rate: float, target: float, low: int, high: int, expected: int
) -> None:
    assert recommend(rate, policy(target=target, low=low, high=high)) == expected


# (current, rate, low_since, now) -> (desired, action, low_since after); target 100/s, 1..5,
# stabilisation 20 s
DECISIONS = [
    pytest.param(1, 350.0, None, 100.0, 4, "up", None, id="up-at-once-several-steps"),
    pytest.param(2, 2000.0, None, 100.0, 5, "up", None, id="up-capped-at-max"),
    pytest.param(3, 250.0, 90.0, 100.0, 3, "hold", None, id="at-the-recommendation"),
    pytest.param(3, 50.0, None, 100.0, 3, "hold", 100.0, id="first-low-reading-starts-window"),
    pytest.param(3, 50.0, 90.0, 100.0, 3, "hold", 90.0, id="still-inside-the-window"),
    pytest.param(3, 50.0, 80.0, 100.0, 2, "down", 100.0, id="window-over-one-step-only"),
    pytest.param(2, 50.0, 100.0, 110.0, 2, "hold", 100.0, id="next-step-waits-a-new-window"),
    pytest.param(2, 50.0, 100.0, 120.0, 1, "down", 120.0, id="second-step-after-its-window"),
    pytest.param(3, 150.0, 50.0, 100.0, 2, "down", 100.0, id="down-to-two-not-to-the-min"),
    pytest.param(3, 350.0, 80.0, 100.0, 4, "up", None, id="a-burst-resets-the-window"),
    pytest.param(1, 0.0, 0.0, 100.0, 1, "hold", None, id="never-below-min"),
    pytest.param(7, 50.0, None, 100.0, 5, "down", None, id="above-max-back-at-once"),
    pytest.param(0, 0.0, None, 100.0, 1, "up", None, id="below-min-back-at-once"),
    pytest.param(3, None, 80.0, 100.0, 3, "hold", 80.0, id="no-rate-yet-changes-nothing"),
]


@pytest.mark.parametrize(
    ("current", "rate", "low_since", "now", "desired", "action", "after"), DECISIONS
)
def test_scale_up_is_immediate_and_scale_down_steps_after_the_stabilisation_window(
    current: int,
    rate: float | None,
    low_since: float | None,
    now: float,
    desired: int,
    action: str,
    after: float | None,
) -> None:
    decision, new_state = decide(
        policy(), current=current, rate=rate, now=now, state=ScaleState(low_since)
    )
    assert (decision.desired, decision.action) == (desired, action), decision.reason
    assert new_state.low_since == after


def test_a_zero_stabilisation_steps_down_on_every_tick() -> None:
    decision, _ = decide(policy(stabilisation=0), current=3, rate=0.0, now=5.0, state=ScaleState())
    assert (decision.desired, decision.action) == (2, "down")


def test_a_quiet_spell_walks_down_one_replica_per_window() -> None:
    scale, current, st = policy(stabilisation=20), 4, ScaleState()
    seen = []
    for now in range(0, 100, 5):
        decision, st = decide(scale, current=current, rate=0.0, now=float(now), state=st)
        if decision.desired != current:
            seen.append((now, decision.desired))
        current = decision.desired
    assert seen == [(20, 3), (40, 2), (60, 1)]


@pytest.mark.parametrize(
    ("samples", "now", "window", "rate"),
    [
        ([], 10.0, 5.0, None),
        ([Sample(10.0, 100)], 10.0, 5.0, None),
        ([Sample(5.0, 0), Sample(10.0, 500)], 10.0, 5.0, 100.0),
        ([Sample(0.0, 0), Sample(5.0, 0), Sample(10.0, 500)], 10.0, 5.0, 100.0),  # 0.0 dropped
        ([Sample(6.0, 900), Sample(8.0, 10), Sample(10.0, 210)], 10.0, 5.0, 100.0),  # a restart
        ([Sample(8.0, 100), Sample(10.0, 100)], 10.0, 5.0, 0.0),
    ],
)
def test_the_rate_comes_from_counter_deltas_over_the_window(
    samples: list[Sample], now: float, window: float, rate: float | None
) -> None:
    assert request_rate(trim(samples, now=now, window_s=window)) == rate


TOPOLOGY = Path(__file__).resolve().parents[3] / "deploy/topology.yaml"


def with_autoscale(tmp_path: Path, **section: Any) -> Path:
    data = yaml.safe_load(TOPOLOGY.read_text())
    data["environments"]["staging"]["autoscale"] = section
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_autoscale_section_is_validated_like_the_rest(tmp_path: Path) -> None:
    good = {"min_replicas": 1, "max_replicas": 4, "target_rps_per_replica": 200}
    shape = load_topology(with_autoscale(tmp_path, **good)).get("staging")
    assert shape.autoscale is not None and shape.autoscale.scale_down_stabilisation_s == 60
    with pytest.raises(ConfigError, match=r"autoscale\.max_replica: unknown key"):
        load_topology(with_autoscale(tmp_path, **good, max_replica=3))
    with pytest.raises(ConfigError, match=r"autoscale\.min_replicas: .*\(got 0\)"):
        load_topology(with_autoscale(tmp_path, **{**good, "min_replicas": 0}))
    with pytest.raises(ConfigError, match="min_replicas must not exceed"):
        load_topology(with_autoscale(tmp_path, **{**good, "min_replicas": 5}))
    with pytest.raises(ConfigError, match=r"replicas \(2\) must lie within"):
        load_topology(with_autoscale(tmp_path, **{**good, "min_replicas": 3, "max_replicas": 4}))
    with pytest.raises(ConfigError, match="target_rps_per_replica"):
        load_topology(with_autoscale(tmp_path, **{**good, "target_rps_per_replica": 0}))


def test_an_autoscaled_service_renders_the_live_count_without_changing_its_spec_hash(
    tmp_path: Path,
) -> None:
    path = with_autoscale(tmp_path, min_replicas=1, max_replicas=4, target_rps_per_replica=50)
    shape = load_topology(path).get("staging")
    two = render(state("staging"), shape.with_replicas(2), entry_image=ENTRY)
    three = render(state("staging"), shape.with_replicas(3), entry_image=ENTRY)
    assert yaml.safe_load(three.stack_yaml)["services"]["model"]["deploy"]["replicas"] == 3
    assert two.shapes["model"].labels == three.shapes["model"].labels  # same ml.deploy.spec
    assert two.haproxy_cfg == three.haproxy_cfg  # sized for max_replicas: the entry stays
    assert two.shapes["model"].differences(three.shapes["model"]) == ["replicas"]
    assert shape.with_replicas(9).replicas == 4 and shape.with_replicas(0).replicas == 1
    assert "task 1-10 " in two.haproxy_cfg  # 2 * max + 2 slots for start-first updates
    assert dict(two.shapes["model"].labels)["ml.autoscale"] == "1-4"


def test_a_fixed_service_keeps_its_spec_hash(topology_file: Path) -> None:
    shape = load_topology(topology_file).get("staging")
    assert shape.autoscale is None and shape.with_replicas(7) is shape
    one, other = (
        render(state("staging"), shape.model_copy(update={"replicas": n}), entry_image=ENTRY)
        for n in (2, 3)
    )
    assert one.shapes["model"].labels != other.shapes["model"].labels
    assert haproxy.server_slots(shape) == 6


STAT = (
    "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,req_tot,status\n"
    "entry,FRONTEND,,,0,3,4096,40,0,0,1200,OPEN\n"
    "model,task1,0,0,0,1,,600,0,0,600,UP\n"
    "model,task2,0,0,0,1,,550,0,0,550,UP\n"
    "model,task3,0,0,0,0,,0,0,0,,MAINT\n"
    "model,spare1,0,0,0,0,,0,0,0,0,UP\n"
    "model,BACKEND,0,0,0,2,410,1150,0,0,1150,UP\n"
    "admin,FRONTEND,,,1,1,4096,9,0,0,9,OPEN\n"
)


def test_show_stat_gives_the_backend_and_per_server_request_counters() -> None:
    counters = parse_stat(STAT, "model")
    assert counters is not None and counters.total == 1150
    assert counters.servers == {"task1": 600, "task2": 550, "task3": 0, "spare1": 0}
    assert parse_stat(STAT, "candidate") is None
    assert parse_stat("", "model") is None


@dataclass
class FakeService:
    replicas: int


@dataclass
class FakeSwarm:
    """Just enough of :class:`~pipeline.deploy.swarm.Swarm` for one tick: a counter that grows
    by ``per_tick`` and a model service whose replicas ``scale`` sets."""

    replicas: int
    per_tick: int
    total: int = 0
    scaled: list[tuple[str, int]] = field(default_factory=list)

    def services(self, stack: str) -> dict[str, FakeService]:
        return {"model": FakeService(self.replicas)}

    def run_in_tasks(self, service: str, argv: list[str], *, stdin: str = "") -> list[str]:
        self.total += self.per_tick
        return [f"# pxname,svname,stot,req_tot\nmodel,BACKEND,{self.total},{self.total}\n"]

    def scale(self, service: str, replicas: int) -> None:
        self.scaled.append((service, replicas))
        self.replicas = replicas


def test_a_tick_scales_and_records_the_decision_as_json_and_metrics(tmp_path: Path) -> None:
    path = with_autoscale(tmp_path, min_replicas=1, max_replicas=3, target_rps_per_replica=50)
    shape = load_topology(path).get("staging")
    swarm = FakeSwarm(replicas=1, per_tick=200)
    clock = iter(float(t) for t in range(100, 200))
    records: list[dict[str, Any]] = []
    files = Files.default("staging", tmp_path)
    scaler = Autoscaler(
        swarm=swarm,  # type: ignore[arg-type]
        env="staging",
        shape=shape,
        files=files,
        emit=records.append,
        clock=lambda: next(clock),
    )
    first = scaler.tick()  # one reading: no rate yet
    second = scaler.tick()  # 200 requests in 2 s: 100/s at 50/s each
    assert (first.action, second.action) == ("hold", "up")
    assert swarm.scaled == [(f"{shape.stack}_model", 2)]
    assert [r["action"] for r in records] == ["hold", "up"]
    assert records[1]["rate"] == 100.0 and records[1]["desired"] == 2
    json.dumps(records)  # JSON lines as they come
    metrics = files.metrics.read_text()
    assert (
        f'pipeline_autoscale_replicas{{env="staging",service="{shape.stack}_model"}} 2' in metrics
    )
    assert 'action="up"} 1' in metrics
    assert json.loads(files.state.read_text()) == {"low_since": None}


def test_an_environment_without_the_section_is_refused_with_a_pointer(
    topology_file: Path, tmp_path: Path
) -> None:
    shape = load_topology(topology_file).get("staging")
    with pytest.raises(ConfigError, match="no `autoscale:` section"):
        Autoscaler(
            swarm=FakeSwarm(1, 0),  # type: ignore[arg-type]
            env="staging",
            shape=shape,
            files=Files.default("staging", tmp_path),
            emit=lambda _: None,
        )


def test_once_waits_a_window_and_keeps_the_stabilisation_state_for_the_next_run(
    tmp_path: Path,
) -> None:
    path = with_autoscale(
        tmp_path, min_replicas=1, max_replicas=3, target_rps_per_replica=50,
        window_s=10, scale_down_stabilisation_s=30,
    )  # fmt: skip
    shape = load_topology(path).get("staging")
    swarm = FakeSwarm(replicas=2, per_tick=0)  # idle: one replica would do
    now = [1000.0]
    files = Files.default("staging", tmp_path)
    records: list[dict[str, Any]] = []

    def once() -> None:
        Autoscaler(
            swarm=swarm,  # type: ignore[arg-type]
            env="staging",
            shape=shape,
            files=files,
            emit=records.append,
            clock=lambda: now[0],
            sleep=lambda seconds: now.__setitem__(0, now[0] + seconds),
        ).run(once=True)

    once()  # the window starts: hold
    now[0] += 25
    once()  # 35 s after the first low reading, in a new process: one step down
    assert [(r["action"], r["desired"]) for r in records] == [("hold", 2), ("down", 1)]
    assert "stabilising" in records[0]["reason"]
    assert swarm.scaled == [(f"{shape.stack}_model", 1)]
