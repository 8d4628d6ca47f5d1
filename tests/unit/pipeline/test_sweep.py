"""`pipeline sweep`'s grid, checks and ranking, without DVC or MLflow running."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline import artifacts
from pipeline.config import Settings
from pipeline.errors import ConfigError
from pipeline.ml import sweep

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def raw() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "params.yaml").read_text())
    return loaded


def test_a_two_by_two_grid_gives_four_combinations_in_order(raw: dict[str, Any]) -> None:
    axes = sweep.parse_axes(["train.logistic_regression.C=0.1,1", "base.seed=1,2"], raw)
    assert sweep.combinations(axes, sample=None, seed=0) == [
        ("train.logistic_regression.C=0.1", "base.seed=1"),
        ("train.logistic_regression.C=0.1", "base.seed=2"),
        ("train.logistic_regression.C=1", "base.seed=1"),
        ("train.logistic_regression.C=1", "base.seed=2"),
    ]


def test_random_search_draws_distinct_combinations_reproducibly(raw: dict[str, Any]) -> None:
    axes = sweep.parse_axes(["train.logistic_regression.C=0.01,0.1,1,10", "base.seed=1,2,3"], raw)
    drawn = sweep.combinations(axes, sample=5, seed=7)
    assert len(set(drawn)) == 5 and drawn == sweep.combinations(axes, sample=5, seed=7)
    with pytest.raises(ConfigError, match="12 combinations"):
        sweep.combinations(axes, sample=13, seed=7)


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("train.logistic_regression.c=1,2", "no key"),
        ("train.logistic_regression=1,2", "is a section"),
        ("train.logistic_regression.C", "key=value1,value2"),
        ("train.logistic_regression.C=range(1,3)", "plain comma lists"),
        ("train.logistic_regression.C=1,,2", "empty value"),
    ],
)
def test_a_bad_axis_is_a_config_error_naming_it(raw: dict[str, Any], spec: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        sweep.parse_axes([spec], raw)


def test_a_trial_whose_params_do_not_validate_stops_the_sweep_naming_the_key(
    raw: dict[str, Any],
) -> None:
    with pytest.raises(ConfigError, match=r"train.logistic_regression.C: .*greater than 0"):
        sweep.check_trial_params(raw, ("train.logistic_regression.C=-1",))
    sweep.check_trial_params(raw, ("train.logistic_regression.C=0.5",))


def test_a_grid_larger_than_the_bound_is_refused(raw: dict[str, Any]) -> None:
    values = ",".join(str(i) for i in range(1, 16))
    axes = sweep.parse_axes(
        [f"base.seed={values}", f"train.logistic_regression.max_iter={values}"], raw
    )
    with pytest.raises(ConfigError, match="more than 200"):
        sweep.combinations(axes, sample=None, seed=0)


def _trial(name: str, value: float | None, *, passed: bool = True, ok: bool = True) -> sweep.Trial:
    trial = sweep.Trial(name=name, overrides=(), state="success" if ok and passed else "failed")
    if value is not None:
        trial.metrics = {"log_loss": value, "roc_auc": 1 - value}
        trial.gates = artifacts.GateReport(
            passed=passed,
            model=artifacts.ModelRef(name="m", version="1"),
            champion=artifacts.ChampionRef(alias="production", version=None),
            rows=[],
        )
    return trial


def test_ranking_puts_passing_trials_best_first_then_gate_failures_then_failures() -> None:
    trials = [_trial("crash", None, ok=False), _trial("gated", 0.01, passed=False),
              _trial("b", 0.3), _trial("a", 0.2)]  # fmt: skip
    assert [t.name for t in sweep._rank(trials, "log_loss")] == ["a", "b", "gated", "crash"]
    assert [t.name for t in sweep._rank(trials, "roc_auc")] == ["a", "b", "gated", "crash"]
    assert [t.outcome for t in sweep._rank(trials, "log_loss")][2:] == ["gates failed", "failed"]
    passed_but_failed_after = _trial("late", 0.1)
    passed_but_failed_after.state = "failed"  # e.g. DVC could not commit the experiment
    assert passed_but_failed_after.outcome == "failed"


def test_a_trial_that_failed_with_an_empty_or_locked_log_is_retried_once() -> None:
    assert sweep._retryable(sweep.Trial(name="x", overrides=(), log=""))
    assert sweep._retryable(sweep.Trial(name="x", overrides=(), log="... database is locked"))
    assert not sweep._retryable(sweep.Trial(name="x", overrides=(), log="ValueError: bad"))
    assert not sweep._retryable(sweep.Trial(name="x", overrides=(), log="", attempts=2))


def test_a_relative_sqlite_store_becomes_the_workspaces_absolute_one(tmp_path: Path) -> None:
    settings = Settings(mlflow_tracking_uri="sqlite:///mlflow.db")
    absolute = sweep._absolute(settings, tmp_path)
    assert absolute.mlflow_tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert absolute.mlflow_artifacts_dir == tmp_path / "mlartifacts"
    server = Settings(mlflow_tracking_uri="http://mlflow:5000")
    assert sweep._absolute(server, tmp_path).mlflow_tracking_uri == "http://mlflow:5000"


def test_jobs_default_to_the_cores_at_most_four_and_zero_is_refused() -> None:
    assert 1 <= sweep.default_jobs() <= 4
    sweep.check_jobs(sweep.default_jobs())
    for bad in (0, -1, sweep.MAX_JOBS + 1):
        with pytest.raises(ConfigError, match="--jobs"):
            sweep.check_jobs(bad)
