"""`pipeline sweep` on a template copy: real DVC experiment queue, real MLflow store."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tools.template import clone, copy_template, dvc, env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GRID = ("train.logistic_regression.C=0.01,1", "train.logistic_regression.max_iter=5,1000")


@pytest.fixture(scope="module")
def prepared(template_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The template, committed and DVC-initialised (each test sweeps a clone of it)."""
    return copy_template(template_root, tmp_path_factory.mktemp("sweep") / "project")


def sweep(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "sweep", *args],
        cwd=work,
        env=env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    print(f"pipeline sweep {' '.join(args)}: {time.monotonic() - started:.0f} s")
    return done


def test_a_two_by_two_grid_at_two_jobs_ranks_four_trials_under_one_parent_run_and_builds_no_image(
    prepared: Path, tmp_path: Path
) -> None:
    work = clone(prepared, tmp_path / "project")
    axes = [arg for axis in GRID for arg in ("-S", axis)]
    done = sweep(
        work,
        "--jobs",
        "2",
        "--timeout",
        "480",
        "--metric",
        "log_loss",
        *axes,
        "--apply",
        "best",
        "--json",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    trials = result["trials"]
    assert len(trials) == 4 and all(t["outcome"] == "pass" for t in trials), trials
    assert {(t["params"]["train.logistic_regression.C"],
             t["params"]["train.logistic_regression.max_iter"]) for t in trials} == {
        ("0.01", "5"), ("0.01", "1000"), ("1", "5"), ("1", "1000")
    }  # fmt: skip

    # the ranking: by the store's own holdout log_loss of each child run, lowest first
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    losses = []
    for trial in trials:
        child = client.get_run(trial["run_id"])
        assert child.data.tags["mlflow.parentRunId"] == result["parent_run_id"]
        assert child.data.tags["dvc.exp_name"] == trial["name"]
        assert child.data.params["logistic_regression.C"] == str(
            float(trial["params"]["train.logistic_regression.C"])
        )
        losses.append(child.data.metrics["holdout_log_loss"])
        assert trial["metric"] == pytest.approx(losses[-1])
    assert losses == sorted(losses) and losses[0] < losses[-1]
    parent = client.get_run(result["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["sweep.best"] == trials[0]["name"]

    # trials register versions but leave @candidate to the workspace's own `dvc repro`
    name = yaml.safe_load((work / "params.yaml").read_text())["train"]["registered_model_name"]
    versions = client.search_model_versions(f"name = '{name}'")  # carries no aliases
    assert sorted(str(v.version) for v in versions) == ["1", "2", "3", "4"]
    for version in versions:
        assert client.get_model_version(name, str(version.version)).aliases == []
        assert version.tags["sweep.parent_run_id"] == result["parent_run_id"]

    # they stopped at validate: no containerize stage ran, no image record anywhere
    for trial in trials:
        log = dvc(work, "queue", "logs", trial["name"]).stdout
        assert "Running stage 'validate'" in log and "containerize" not in log
    assert not (work / "build/image.json").exists()
    assert not list((work / ".dvc/tmp").rglob("image.json"))

    # --apply best: the workspace holds the winner's params
    train = yaml.safe_load((work / "params.yaml").read_text())["train"]["logistic_regression"]
    best = trials[0]["params"]
    assert str(train["C"]) == best["train.logistic_regression.C"]
    assert str(train["max_iter"]) == best["train.logistic_regression.max_iter"]


def test_a_trial_that_fails_shows_its_log_is_not_retried_and_the_sweep_exits_1(
    prepared: Path, tmp_path: Path
) -> None:
    work = clone(prepared, tmp_path / "project")
    done = sweep(work, "--jobs", "1", "-S", "train.model=custom",
                 "-S", "train.custom.factory=estimators.nowhere:build")  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "failed; its log (`dvc queue logs" in done.stderr
    assert "estimators.nowhere" in done.stderr  # the trial's own error, from its log
    assert "1 trial(s) failed" in done.stderr and "Traceback" not in done.stderr
    assert "(failed)" in done.stdout  # still in the table, ranked last
