"""`pipeline sweep` on a template copy: real DVC experiment queue, real MLflow store."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tools.template import GIT, copy_template, dvc, env, run

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GRID = ("train.logistic_regression.C=0.01,1", "train.logistic_regression.max_iter=5,1000")


def test_a_two_by_two_grid_at_two_jobs_ranks_four_trials_under_one_parent_run_and_builds_no_image(
    template_root: Path, tmp_path: Path
) -> None:
    work = copy_template(template_root, tmp_path / "project")
    # as in a real project: the data stage ran and dvc.lock is committed, so trials reuse it
    dvc(work, "repro", "prepare")
    run(work, *GIT, "add", "dvc.lock")
    run(work, *GIT, "commit", "-qm", "prepared")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "sweep", "--jobs", "2", "--metric", "log_loss"]
        + [arg for axis in GRID for arg in ("-S", axis)]
        + ["--apply", "best", "--json"],
        cwd=work,
        env=env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    print(f"sweep of 4 trials at --jobs 2: {time.monotonic() - started:.0f} s")
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
    versions = client.search_model_versions(f"name = '{name}'")
    assert len(versions) == 4 and all(v.aliases == [] for v in versions)

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
