"""The template, copied to a temp dir and run with real `dvc repro`, real MLflow, real GX."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline.config import ParallelParams, TrainParams
from pipeline.ml import data, parallel, training
from tools.template import clone as copy
from tools.template import copy_template, dvc

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STAGES = ("prepare", "train", "validate", "containerize")


@pytest.fixture(scope="module")
def reproduced(template_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    work = copy_template(template_root, tmp_path_factory.mktemp("repro") / "project")
    started = time.monotonic()
    dvc(work, "repro")
    return work, time.monotonic() - started


def clone(reproduced: tuple[Path, float], tmp_path: Path) -> Path:
    return copy(reproduced[0], tmp_path / "project")


def mlflow_client(work: Path):  # type: ignore[no-untyped-def]
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")


def test_repro_writes_every_output_and_registers_a_candidate(
    reproduced: tuple[Path, float],
) -> None:
    work, seconds = reproduced
    print(f"cold dvc repro: {seconds:.1f} s")
    for out in (
        "data/prepared/train.parquet",
        "data/prepared/test.parquet",
        "models/model.pkl",
        "models/model.json",
        "metrics/holdout.json",
        "reports/golden.json",
        "reports/data_docs/index.html",
        "plots/roc.png",
        "plots/confusion.csv",
    ):
        assert (work / out).is_file(), out
    card = json.loads((work / "models/model.json").read_text())
    assert card["classes"] == [0, 1] and len(card["features"]) == 30
    assert len(card["data_hash"]) > 8 and card["data_hash"] != "unknown"
    lock = yaml.safe_load((work / "dvc.lock").read_text())
    assert card["data_hash"] == lock["stages"]["prepare"]["outs"][0]["md5"]
    client = mlflow_client(work)
    version = client.get_model_version(card["model_name"], card["model_version"])
    assert version.run_id == card["run_id"] and "candidate" in version.aliases
    run_data = client.get_run(card["run_id"]).data
    assert run_data.params["model"] == "logistic_regression"
    assert run_data.tags["dvc.data_hash"] == card["data_hash"]
    assert run_data.tags["parallel.backend"] == "loky"  # train.parallel's default
    metrics = json.loads((work / "metrics/holdout.json").read_text())
    assert run_data.metrics["holdout_roc_auc"] == pytest.approx(metrics["roc_auc"])
    assert metrics["roc_auc"] > 0.95
    golden = json.loads((work / "reports/golden.json").read_text())
    assert len(golden["rows"]) == 40


def test_second_repro_runs_no_stage(reproduced: tuple[Path, float], tmp_path: Path) -> None:
    work = clone(reproduced, tmp_path)
    started = time.monotonic()
    done = dvc(work, "repro")
    elapsed = time.monotonic() - started
    print(f"no-op dvc repro: {elapsed:.2f} s")
    assert "didn't change, skipping" in done.stdout
    assert not any(f"Running stage '{s}'" in done.stdout for s in STAGES)
    # How long it takes is the benchmark's business (tools/bench/): a timed assertion on a shared
    # 2-core machine only measures the neighbours.


def test_editing_a_cli_help_text_reruns_no_stage_and_editing_a_stage_reruns_it(
    reproduced: tuple[Path, float], tmp_path: Path
) -> None:
    work = clone(reproduced, tmp_path)
    cli = work / "pipeline/cli/__init__.py"
    cli.write_text(cli.read_text().replace('"""Move an environment', '"""Now: move an environment'))
    status = dvc(work, "status", "--json")
    assert json.loads(status.stdout) == {}, status.stdout
    prepare = work / "pipeline/stages/prepare.py"
    prepare.write_text(prepare.read_text() + "\n# an edit\n")
    changed = json.loads(dvc(work, "status", "--json").stdout)
    assert "prepare" in changed and "pipeline/stages/prepare.py" in json.dumps(changed)


def test_train_on_a_local_dask_cluster_tags_the_run_and_writes_the_same_model_file(
    reproduced: tuple[Path, float], tmp_path: Path
) -> None:
    work = clone(reproduced, tmp_path)
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["train"]["model"] = "random_forest"
    params["train"]["random_forest"]["n_estimators"] = 20  # the stage's wiring, kept short
    params["train"]["parallel"] = {"backend": "dask", "n_jobs": 2, "address": None}
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    done = dvc(work, "repro", "train")
    assert "started a local Dask cluster of 2 worker process(es)" in done.stdout + done.stderr
    card = json.loads((work / "models/model.json").read_text())
    run_data = mlflow_client(work).get_run(card["run_id"]).data
    assert run_data.tags["parallel.backend"] == "dask"
    assert run_data.tags["parallel.workers"] == "2"
    assert run_data.tags["parallel.scheduler"] == "local"
    assert run_data.metrics["fit_seconds"] > 0
    # The file the stage wrote on Dask is, byte for byte, the forest fitted here on the same
    # rows (in one process: tests/integration/test_parallel.py shows loky's is the same).
    split = pd.read_parquet(work / "data/prepared/train.parquet")
    features, target = data.features_and_target(split, params["data"]["target"])
    train = TrainParams.model_validate(params["train"])
    columns = training.columns_of(features)
    estimator = training.build(train, seed=params["base"]["seed"], task="classification",
                               columns=columns)  # fmt: skip
    with parallel.backend(ParallelParams(backend="loky", n_jobs=1)):
        here = training.fit(estimator, features, target, task="classification")
    assert hashlib.sha256(training.model_bytes(here)).hexdigest() == card["sha256"]


def test_changing_only_a_threshold_reruns_only_validate(
    reproduced: tuple[Path, float], tmp_path: Path
) -> None:
    work = clone(reproduced, tmp_path)
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["validate"]["gates"]["accuracy"]["threshold"] = 0.85
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    done = dvc(work, "repro")
    ran = [s for s in STAGES if f"Running stage '{s}'" in done.stdout]
    assert ran == ["validate"]


def test_impossible_gate_fails_validate_prints_the_table_and_sets_no_alias(
    reproduced: tuple[Path, float], tmp_path: Path
) -> None:
    work = clone(reproduced, tmp_path)
    card = json.loads((work / "models/model.json").read_text())
    client = mlflow_client(work)
    client.delete_registered_model_alias(card["model_name"], "candidate")
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["validate"]["gates"]["accuracy"]["threshold"] = 0.9999
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    done = dvc(work, "repro", check=False)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "quality gates" in output and "FAIL" in output and "0.9999" in output
    assert "failed 1 quality gate" in output
    assert "Traceback" not in output
    assert client.get_model_version(card["model_name"], card["model_version"]).aliases == []


@pytest.mark.parametrize(
    ("corruption", "named"),
    [
        ("nulls", "expect_column_values_to_not_be_null: column 'mean radius'"),
        ("out_of_range", "expect_column_values_to_be_between: column 'mean area'"),
        ("missing_column", "expect_table_columns_to_match_set"),
    ],
)
def test_corrupted_data_fails_prepare_naming_the_expectation_and_nothing_downstream_runs(
    template_root: Path, tmp_path: Path, corruption: str, named: str
) -> None:
    from sklearn.datasets import load_breast_cancer

    work = copy_template(template_root, tmp_path / "project")
    frame = load_breast_cancer(as_frame=True).frame
    if corruption == "nulls":
        frame.loc[:9, "mean radius"] = None
    elif corruption == "out_of_range":
        frame.loc[:2, "mean area"] = 1e9
    else:
        frame = frame.drop(columns=["worst symmetry"])
    frame.to_csv(work / "data/raw/cancer.csv", index=False)
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["data"]["source"] = "data/raw/cancer.csv"
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    done = dvc(work, "repro", check=False)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert named in output
    assert "reports/data_docs/index.html" in output
    assert "Running stage 'train'" not in output
    assert not (work / "models").exists()
    assert "Traceback" not in output
