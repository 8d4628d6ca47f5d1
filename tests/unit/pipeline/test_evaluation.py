"""Holdout metrics and the golden set written for the contract tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import load_breast_cancer, load_wine
from sklearn.linear_model import LogisticRegression

from pipeline.ml.evaluation import golden_set, holdout_metrics
from serving.card import read_golden, write_golden


def _fitted(loader) -> tuple[LogisticRegression, pd.DataFrame, pd.Series]:  # type: ignore[no-untyped-def]
    x, y = loader(as_frame=True, return_X_y=True)
    return LogisticRegression(max_iter=5000).fit(x, y), x, y


def test_golden_set_round_trips_the_probabilities_to_float_rounding(tmp_path: Path) -> None:
    model, x, _ = _fitted(load_breast_cancer)
    golden = golden_set(model, x, rows=25)
    path = write_golden(golden, tmp_path / "golden.json")
    assert read_golden(path) == golden  # the one reader gives back exactly what was written
    back = json.loads(path.read_text())
    assert len(back["rows"]) == 25 and back["classes"] == [0, 1]
    replay = pd.DataFrame([r["inputs"] for r in back["rows"]])[back["features"]]
    written = np.array([r["probabilities"] for r in back["rows"]])
    # JSON keeps every double exactly; a replay differs only by BLAS summation order (~1e-16).
    assert np.abs(model.predict_proba(replay) - written).max() < 1e-12
    assert [r["label"] for r in back["rows"]] == model.predict(replay).tolist()


def test_golden_rows_are_capped_by_the_holdout_size() -> None:
    model, x, _ = _fitted(load_breast_cancer)
    assert len(golden_set(model, x.head(7), rows=40).rows) == 7


def test_metrics_cover_the_six_names_for_binary_and_multiclass() -> None:
    for loader in (load_breast_cancer, load_wine):
        model, x, y = _fitted(loader)
        metrics = holdout_metrics(model, x, y)
        assert set(metrics) == {"accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"}
        assert 0.9 < metrics["accuracy"] <= 1.0 and metrics["log_loss"] > 0


def test_a_regressor_is_scored_with_rmse_mae_r2_and_gets_its_two_plots(tmp_path: Path) -> None:
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    from pipeline.ml.evaluation import write_plots

    x, y = load_diabetes(as_frame=True, return_X_y=True)
    model = Ridge().fit(x, y)
    metrics = holdout_metrics(model, x, y, task="regression")
    assert set(metrics) == {"rmse", "mae", "r2"}
    assert metrics["mae"] <= metrics["rmse"] and 0 < metrics["r2"] < 1
    written = write_plots(model, x, y, tmp_path, task="regression")
    assert sorted(p.name for p in written) == [
        "predicted_vs_actual.csv", "predicted_vs_actual.png", "residuals.csv", "residuals.png"
    ]  # fmt: skip
    residuals = pd.read_csv(tmp_path / "residuals.csv")
    assert np.allclose(residuals["residual"], y - model.predict(x))
    golden = golden_set(model, x, rows=5, task="regression")
    assert golden.classes == () and all(r.probabilities == () for r in golden.rows)
    assert [r.label for r in golden.rows] == model.predict(x.head(5)).tolist()
