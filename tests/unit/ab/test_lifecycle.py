"""The experiment block in deploy/<env>.yaml: ramp, stop and conclude rules, and the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.ab import lifecycle
from pipeline.ab.lifecycle import ExperimentRefused
from pipeline.ab.record import Experiment
from pipeline.config import Settings
from pipeline.errors import ArtifactError, ConfigError
from pipeline.release.evidence import evidence_tag
from pipeline.release.state import EvidenceRef, Image, Model, State, read_state, write_state
from tests.unit.ab.conftest import CHAMPION, experiment


def settings(tmp_path: Path) -> Settings:
    return Settings(
        deploy_dir=tmp_path / "deploy", promote_lock_timeout_s=0.2, promoted_by="tester"
    )


def with_experiment(tmp_path: Path, running: Experiment | None) -> Settings:
    state = State(
        environment="staging",
        action="promote",
        image=Image(repository="127.0.0.1:5000/acme/model", digest=CHAMPION),
        model=Model(name="model", version="1", mlflow_run_id="run1"),
        evidence=EvidenceRef(digest="sha256:" + "e" * 64, tag=evidence_tag(CHAMPION)),
        promoted_at="2026-01-01T00:00:00Z",
        promoted_by="someone",
        experiment=running,
    )
    write_state(tmp_path / "deploy", state)
    return settings(tmp_path)


def test_the_experiment_block_reads_back_and_sits_before_the_history(tmp_path: Path) -> None:
    with_experiment(tmp_path, experiment(share=10))
    text = (tmp_path / "deploy/staging.yaml").read_text()
    assert text.index("experiment:") < text.index("history:")
    state = read_state(tmp_path / "deploy", "staging")
    assert state is not None and state.experiment == experiment(share=10)


def test_a_state_file_without_an_experiment_is_written_as_before(tmp_path: Path) -> None:
    with_experiment(tmp_path, None)
    assert "experiment" not in (tmp_path / "deploy/staging.yaml").read_text()


def test_a_ramp_only_raises_the_share_and_each_step_is_a_history_entry(tmp_path: Path) -> None:
    config = with_experiment(tmp_path, experiment(share=10))
    assert lifecycle.ramp(config, env="staging", share=25, note="looks fine").share == 25
    with pytest.raises(ExperimentRefused, match="would move users from B back to A"):
        lifecycle.ramp(config, env="staging", share=20)
    with pytest.raises(ExperimentRefused, match="above 99"):
        lifecycle.ramp(config, env="staging", share=100)
    state = read_state(tmp_path / "deploy", "staging")
    assert state is not None and state.experiment is not None
    assert [(e.action, e.share, e.by) for e in state.experiment.history] == [
        ("ramp", 25, "tester"),
        ("start", 10, "test"),
    ]
    assert state.experiment.since == state.experiment.history[0].at


def test_stop_sets_the_share_to_zero_and_nothing_runs_after_it(tmp_path: Path) -> None:
    config = with_experiment(tmp_path, experiment(share=10))
    stopped = lifecycle.stop(config, env="staging", note="broken split")
    assert (stopped.status, stopped.share, stopped.history[0].note) == (
        "stopped",
        0,
        "broken split",
    )
    with pytest.raises(ExperimentRefused, match="is stopped"):
        lifecycle.ramp(config, env="staging", share=50)
    with pytest.raises(ExperimentRefused, match="is stopped"):
        lifecycle.stop(config, env="staging")


def test_concluding_for_a_keeps_the_champion_and_records_the_winner(tmp_path: Path) -> None:
    config = with_experiment(tmp_path, experiment(share=10))
    concluded, promoted = lifecycle.conclude(config, env="staging", winner="a")
    assert promoted is None
    assert (concluded.status, concluded.winner, concluded.share) == ("concluded", "a", 0)
    state = read_state(tmp_path / "deploy", "staging")
    assert state is not None and state.image.digest == CHAMPION
    with pytest.raises(ExperimentRefused, match="concluded already"):
        lifecycle.conclude(config, env="staging", winner="b")


def test_commands_without_a_champion_or_an_experiment_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ExperimentRefused, match="promote one to staging first"):
        lifecycle.ramp(settings(tmp_path), env="staging", share=20)
    config = with_experiment(tmp_path, None)
    with pytest.raises(ExperimentRefused, match="`pipeline ab start` one first"):
        lifecycle.stop(config, env="staging")


def test_a_hand_edited_experiment_block_fails_validation_naming_it(tmp_path: Path) -> None:
    with_experiment(tmp_path, experiment(share=10))
    path = tmp_path / "deploy/staging.yaml"
    data = yaml.safe_load(path.read_text())
    data["experiment"]["share"] = 0  # running with no users: inconsistent
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ArtifactError, match="not a valid state file"):
        read_state(tmp_path / "deploy", "staging")
    data["experiment"]["share"] = 10
    data["experiment"]["id"] = "x; use_backend evil"  # would end up in haproxy.cfg
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ArtifactError):
        read_state(tmp_path / "deploy", "staging")


def test_a_metric_plan_computes_its_horizon_and_rejects_impossible_rates() -> None:
    metric = lifecycle.MetricPlan(method="fixed", baseline_rate=0.1, mde=0.01).metric()
    assert metric.sample_size_per_arm == 14_751
    with pytest.raises(ConfigError, match="metric"):
        lifecycle.MetricPlan(baseline_rate=0.99, mde=0.05).metric()
    with pytest.raises(ConfigError, match="alpha"):
        lifecycle.MetricPlan(alpha=0.5).metric()
