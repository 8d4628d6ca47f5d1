"""params.yaml validation: every user error names the key, the bad value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.config import load_params
from tests.support.params import config_error, write_params


def test_template_params_load_and_are_frozen(template_root: Path, tmp_path: Path) -> None:
    params = load_params(write_params(tmp_path, template_root, {}))
    assert params.train.model == "logistic_regression"
    with pytest.raises(ValueError, match="frozen"):
        params.base.seed = 1  # type: ignore[misc]


def test_unknown_key_is_named(template_root: Path, tmp_path: Path) -> None:
    message = config_error(write_params(tmp_path, template_root, {"train": {"n_estimator": 5}}))
    assert "train.n_estimator: unknown key" in message


def test_test_size_out_of_range_names_key_value_and_bound(
    template_root: Path, tmp_path: Path
) -> None:
    message = config_error(write_params(tmp_path, template_root, {"data": {"test_size": 1.5}}))
    assert "data.test_size" in message and "1.5" in message and "less than 1" in message


def test_unknown_model_type_lists_the_allowed_ones(template_root: Path, tmp_path: Path) -> None:
    message = config_error(write_params(tmp_path, template_root, {"train": {"model": "xgboost"}}))
    assert "train.model" in message and "'xgboost'" in message
    assert "random_forest" in message and "gradient_boosting" in message


def test_missing_data_file_is_named(template_root: Path, tmp_path: Path) -> None:
    message = config_error(
        write_params(tmp_path, template_root, {"data": {"source": "data/raw/nope.csv"}})
    )
    assert "data" in message and "data/raw/nope.csv" in message and "does not exist" in message


def test_unknown_builtin_dataset_lists_the_builtins(template_root: Path, tmp_path: Path) -> None:
    message = config_error(
        write_params(tmp_path, template_root, {"data": {"source": "builtin:iris"}})
    )
    assert "iris" in message and "breast_cancer" in message


def test_unknown_gate_metric_is_named(template_root: Path, tmp_path: Path) -> None:
    path = write_params(tmp_path, template_root, {})
    raw = yaml.safe_load(path.read_text())
    raw["validate"]["gates"]["auc"] = {"threshold": 0.9}
    path.write_text(yaml.safe_dump(raw))
    message = config_error(path)
    assert "validate.gates.auc" in message and "roc_auc" in message


def test_missing_section_is_named(template_root: Path, tmp_path: Path) -> None:
    path = write_params(tmp_path, template_root, {})
    raw = yaml.safe_load(path.read_text())
    del raw["train"]
    path.write_text(yaml.safe_dump(raw))
    assert "train: Field required" in config_error(path)


def test_invalid_yaml_is_reported_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("base: [unclosed\n")
    assert "not valid YAML" in config_error(path)
