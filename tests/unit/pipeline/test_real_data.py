"""Real tables: column selection, the data rules that stop bad data before training, the task
inferred from the target, and the models each task and feature kind gets."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from palmerpenguins import load_penguins

from pipeline.config import DataParams, TrainParams, load_params
from pipeline.errors import ConfigError, DataValidationError
from pipeline.ml import data, training


def params(tmp_path: Path, frame: pd.DataFrame | None, **values: Any) -> DataParams:
    suite = tmp_path / "suite.json"
    suite.write_text('{"name": "s", "expectations": []}')
    source = tmp_path / "data.csv"
    if frame is not None:
        frame.to_csv(source, index=False)
    else:
        source.write_text("")
    fields: dict[str, Any] = {
        "source": str(source),
        "target": "species",
        "test_size": 0.25,
        "expectations": str(suite),
    }
    return DataParams(**(fields | values))


def penguins() -> pd.DataFrame:
    frame: pd.DataFrame = load_penguins()
    return frame


def selected(tmp_path: Path, frame: pd.DataFrame, **values: Any) -> pd.DataFrame:
    data_params = params(tmp_path, frame, **values)
    return data.select_columns(data.load_raw(data_params), data_params)


def test_data_drop_keeps_a_column_out_and_categorical_columns_become_text(tmp_path: Path) -> None:
    table = selected(tmp_path, penguins(), drop=["year"])
    assert list(table.columns) == [
        "island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "sex",
        "species",
    ]  # fmt: skip
    assert pd.api.types.is_string_dtype(table["sex"]) and table["sex"].isna().sum() == 11


def test_data_features_names_the_model_columns_in_that_order(tmp_path: Path) -> None:
    table = selected(tmp_path, penguins(), features=["sex", "bill_length_mm"])
    assert list(table.columns) == ["sex", "bill_length_mm", "species"]


@pytest.mark.parametrize("key", ["features", "drop"])
def test_an_unknown_column_in_features_or_drop_is_named(tmp_path: Path, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"data\.{key}: column\(s\) \['flipper'\] are not in"):
        selected(tmp_path, penguins(), **{key: ["flipper"]})


def test_features_and_drop_together_or_naming_the_target_are_refused(
    template_root: Path, tmp_path: Path
) -> None:
    raw = yaml.safe_load((template_root / "params.yaml").read_text())
    raw["data"]["expectations"] = str(template_root / raw["data"]["expectations"])
    for edit, words in (
        ({"features": ["a"], "drop": ["b"]}, "not both"),
        ({"drop": ["target"]}, "names the target"),
    ):
        raw["data"] = {**raw["data"], **edit}
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump(raw))
        with pytest.raises(ConfigError, match=words):
            load_params(path)
        for key in edit:
            del raw["data"][key]


def _bad(tmp_path: Path, frame: pd.DataFrame, **values: Any) -> str:
    data_params = params(tmp_path, frame, **values)
    with pytest.raises(DataValidationError) as caught:
        table = data.select_columns(data.load_raw(data_params), data_params)
        task, _ = data.infer_task(table[data_params.target], None)
        data.check_table(table, data=data_params, task=task)
    assert caught.value.exit_code == 5
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_text_column_distinct_in_every_row_is_warned_about_but_trained_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    frame = penguins()
    frame["band"] = [f"B-{i:04d}" for i in range(len(frame))]
    data_params = params(tmp_path, frame, target="species")
    table = data.select_columns(data.load_raw(data_params), data_params)
    with caplog.at_level("WARNING", logger="pipeline"):
        data.check_table(table, data=data_params, task="classification")
    warned = [r.getMessage() for r in caplog.records if "band" in r.getMessage()]
    assert len(warned) == 1 and "data.drop: [band]" in warned[0], warned
    assert not [r for r in caplog.records if "island" in r.getMessage()]


def test_a_missing_target_value_is_named_with_its_rows(tmp_path: Path) -> None:
    frame = penguins()
    frame.loc[[4, 9], "species"] = None
    message = _bad(tmp_path, frame)
    assert "target 'species' is missing in 2 row(s)" in message and "rows 4, 9" in message


def test_a_class_with_one_row_is_named(tmp_path: Path) -> None:
    frame = penguins()
    frame.loc[0, "species"] = "Emperor"
    message = _bad(tmp_path, frame)
    assert "class 'Emperor' has only one row" in message


def test_a_constant_column_is_named_with_what_to_do(tmp_path: Path) -> None:
    frame = penguins().assign(colony="Palmer")
    assert "column 'colony'" in (m := _bad(tmp_path, frame)) and "data.drop: [colony]" in m


def test_an_all_null_column_is_named_with_what_to_do(tmp_path: Path) -> None:
    frame = penguins().assign(notes=np.nan)
    message = _bad(tmp_path, frame)
    assert "column 'notes'" in message and "all 344 values are missing" in message
    assert "data.drop: [notes]" in message


def test_an_empty_file_and_a_header_only_file_are_named(tmp_path: Path) -> None:
    data_params = params(tmp_path, None)
    Path(data_params.source).write_text("")
    with pytest.raises(DataValidationError, match="is empty"):
        data.load_raw(data_params)
    Path(data_params.source).write_text("species,island\n")
    with pytest.raises(DataValidationError, match=r"header \(2 columns\) but no data rows"):
        data.load_raw(data_params)


def test_the_task_is_inferred_from_the_target_and_a_declared_one_is_checked() -> None:
    assert data.infer_task(pd.Series(["a", "b"], name="y"), None)[0] == "classification"
    assert data.infer_task(pd.Series([0, 1, 1, 2], name="y"), None)[0] == "classification"
    assert data.infer_task(pd.Series([0.5, 1.25, 3.0], name="y"), None)[0] == "regression"
    assert data.infer_task(pd.Series(range(100), name="y"), None)[0] == "regression"
    assert data.infer_task(pd.Series([0, 1], name="y"), "regression")[0] == "regression"
    with pytest.raises(ConfigError, match="holds text"):
        data.infer_task(pd.Series(["a", "b"], name="y"), "regression")


def _fit(model: str, task: str) -> tuple[Any, pd.DataFrame, pd.Series]:
    frame = penguins().drop(columns=["year"])
    target = "body_mass_g" if task == "regression" else "species"
    frame = frame[frame[target].notna()]
    for column in ("island", "sex", "species"):
        frame[column] = data.as_text(frame[column])
    x, y = frame.drop(columns=[target]), frame[target]
    params = TrainParams(model=model, experiment="e", registered_model_name="m")
    built = training.build(params, seed=1, task=task, columns=training.columns_of(x))
    return training.fit(built, x, y, task=task), x, y


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("model", ["logistic_regression", "random_forest", "gradient_boosting"])
def test_each_family_fits_categoricals_with_nulls_and_exports_onnx_within_tolerance(
    model: str, task: str
) -> None:
    from pipeline.ml.onnx_export import check_parity, to_onnx

    fitted, x, _ = _fit(model, task)
    estimator = fitted.steps[-1][1]
    assert type(estimator).__name__.endswith(
        "Regressor" if task == "regression" else "Classifier"
    ) or (type(estimator).__name__ in ("Ridge", "LogisticRegression"))
    features = training.card_features(fitted, x)
    graph = to_onnx(fitted, features=features, task=task)
    assert graph is not None
    strict = [f.name for f in features if not f.nullable]
    rows = x[x[strict].notna().all(axis=1)].reset_index(drop=True)
    parity = check_parity(fitted, graph, rows, features=features, task=task)
    assert parity.ok, parity
    assert parity.n_rows == len(rows) > 300


def test_a_custom_factory_gets_params_and_column_positions_and_onnx_names_the_failing_step(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from pipeline.ml.onnx_export import to_onnx

    params = TrainParams.model_validate(
        {
            "model": "custom",
            "experiment": "e",
            "registered_model_name": "m",
            "custom": {
                "factory": "estimators.hist_gradient_boosting:build",
                "params": {"max_iter": 20},
            },
        }
    )
    frame = penguins().drop(columns=["year"])
    for column in ("island", "sex", "species"):
        frame[column] = data.as_text(frame[column])
    x, y = frame.drop(columns=["species"]), frame["species"]
    columns = training.columns_of(x)
    assert columns.categorical == (0, 5)
    model = training.fit(
        training.build(params, seed=1, task="classification", columns=columns), x, y,
        task="classification",
    )  # fmt: skip
    assert model.named_steps["model"].max_iter == 20
    assert list(model.named_steps["model"].categorical_features) == [0, 1]
    training.check_servable(model)
    features = training.card_features(model, x)
    assert all(f.nullable for f in features if f.name != "island")  # the booster takes NaN
    with caplog.at_level("WARNING"):
        graph = to_onnx(model, features=features, task="classification")
    if graph is None:  # skl2onnx 1.20 cannot write categorical splits: the step is named
        assert "step 'model' (HistGradientBoostingClassifier)" in caplog.text


def test_a_factory_outside_estimators_or_returning_a_foreign_class_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "mine.py").write_text(
        "from sklearn.base import BaseEstimator, ClassifierMixin\n"
        "class Mine(ClassifierMixin, BaseEstimator):\n"
        "    def fit(self, x, y):\n        self.classes_ = sorted(set(y)); return self\n"
        "    def predict(self, x):\n        return [self.classes_[0]] * len(x)\n"
        "def build():\n    return Mine()\n"
    )
    params = TrainParams.model_validate(
        {"model": "custom", "experiment": "e", "registered_model_name": "m",
         "custom": {"factory": "mine:build"}}
    )  # fmt: skip
    columns = training.Columns(("a",), (0,), ())
    with pytest.raises(ConfigError, match="not under estimators/"):
        training.build(params, seed=1, task="classification", columns=columns)
    (tmp_path / "estimators").mkdir()
    (tmp_path / "estimators" / "__init__.py").write_text("")
    (tmp_path / "mine.py").rename(tmp_path / "estimators" / "mine.py")
    monkeypatch.delitem(sys.modules, "estimators", raising=False)  # this repository's own
    importlib.invalidate_caches()
    params = TrainParams.model_validate(
        {"model": "custom", "experiment": "e", "registered_model_name": "m",
         "custom": {"factory": "estimators.mine:build"}}
    )  # fmt: skip
    model = training.build(params, seed=1, task="classification", columns=columns)
    model.fit(pd.DataFrame({"a": [1.0, 2.0]}), ["x", "y"])
    with pytest.raises(ConfigError, match=r"estimators\.mine\.Mine.*serving image does not"):
        training.check_servable(model)


def test_model_custom_without_a_factory_is_a_config_error(
    template_root: Path, tmp_path: Path
) -> None:
    raw = yaml.safe_load((template_root / "params.yaml").read_text())
    raw["data"]["expectations"] = str(template_root / raw["data"]["expectations"])
    raw["train"]["model"] = "custom"
    del raw["train"]["custom"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"train\.custom is missing"):
        load_params(path)


def test_an_estimator_that_cannot_take_text_columns_fails_train_with_one_line() -> None:
    params = TrainParams.model_validate(
        {"model": "custom", "experiment": "e", "registered_model_name": "m",
         "custom": {"factory": "sklearn.ensemble:RandomForestClassifier",
                    "params": {"n_estimators": 5}}}
    )  # fmt: skip
    frame = penguins().drop(columns=["year"]).dropna()
    for column in ("island", "sex", "species"):
        frame[column] = data.as_text(frame[column])
    x, y = frame.drop(columns=["species"]), frame["species"]
    model = training.build(params, seed=1, task="classification", columns=training.columns_of(x))
    with pytest.raises(ConfigError) as caught:
        training.fit(model, x, y, task="classification")
    message = str(caught.value)
    assert message.startswith("fitting RandomForestClassifier failed:") and "\n" not in message
    assert "'Biscoe'" in message or "string" in message
