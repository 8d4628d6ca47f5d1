"""Holdout metrics, the plots DVC shows, and the golden set the contract tests replay.

Classification: accuracy, precision, recall, f1, roc_auc, log_loss (macro averages beyond two
classes); a confusion matrix, ROC and PR curves. Regression: rmse, mae, r2; predicted against
actual and residuals. Every model is scored on :func:`pipeline.ml.training.model_input`, the
table serving builds from a request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from pipeline.ml.training import model_input, request_records
from serving.card import Feature, GoldenRow, GoldenSet

#: What a golden row sends in a categorical column to prove an unseen category is served.
UNSEEN = "(a value never seen in training)"


def holdout_metrics(
    model: Any, features: pd.DataFrame, target: pd.Series, *, task: str = "classification"
) -> dict[str, float]:
    x = model_input(features)
    if task == "regression":
        predicted = np.asarray(model.predict(x), dtype=np.float64)
        return {
            "rmse": float(np.sqrt(skm.mean_squared_error(target, predicted))),
            "mae": float(skm.mean_absolute_error(target, predicted)),
            "r2": float(skm.r2_score(target, predicted)),
        }
    proba = model.predict_proba(x)
    predicted = model.classes_[np.argmax(proba, axis=1)]
    binary = len(model.classes_) == 2
    average = "binary" if binary else "macro"
    positive = model.classes_[1] if binary else 1
    kwargs: dict[str, Any] = {"average": average, "zero_division": 0}
    if binary:
        kwargs["pos_label"] = positive
    return {
        "accuracy": float(skm.accuracy_score(target, predicted)),
        "precision": float(skm.precision_score(target, predicted, **kwargs)),
        "recall": float(skm.recall_score(target, predicted, **kwargs)),
        "f1": float(skm.f1_score(target, predicted, **kwargs)),
        "roc_auc": float(
            skm.roc_auc_score(target, proba[:, 1])
            if binary
            else skm.roc_auc_score(target, proba, multi_class="ovr", labels=model.classes_)
        ),
        "log_loss": float(skm.log_loss(target, proba, labels=model.classes_)),
    }


def write_plots(
    model: Any,
    features: pd.DataFrame,
    target: pd.Series,
    directory: Path,
    *,
    task: str = "classification",
) -> list[Path]:
    """DVC plot data (CSV) plus PNGs: confusion matrix, ROC and PR curves (one-vs-rest), or
    for a regressor predicted-vs-actual and residuals."""
    import matplotlib

    matplotlib.use("Agg")
    directory.mkdir(parents=True, exist_ok=True)
    if task == "regression":
        return _regression_plots(model, features, target, directory)
    return _classification_plots(model, features, target, directory)


def _regression_plots(
    model: Any, features: pd.DataFrame, target: pd.Series, directory: Path
) -> list[Path]:
    import matplotlib.pyplot as plt

    actual = target.to_numpy(dtype=np.float64)
    predicted = np.asarray(model.predict(model_input(features)), dtype=np.float64)
    frame = pd.DataFrame({"actual": actual, "predicted": predicted, "residual": actual - predicted})
    written: list[Path] = []
    low, high = float(min(actual.min(), predicted.min())), float(max(actual.max(), predicted.max()))
    for name, (x, y) in (
        ("predicted_vs_actual", ("actual", "predicted")),
        ("residuals", ("predicted", "residual")),
    ):
        frame[[x, y]].to_csv(directory / f"{name}.csv", index=False)
        figure, axes = plt.subplots(figsize=(4, 4))
        axes.scatter(frame[x], frame[y], s=8, alpha=0.6)
        if name == "residuals":
            axes.axhline(0.0, color="grey", linewidth=1)
        else:
            axes.plot([low, high], [low, high], color="grey", linewidth=1)
        axes.set_xlabel(x)
        axes.set_ylabel(y)
        figure.savefig(directory / f"{name}.png", dpi=80, bbox_inches="tight")
        plt.close(figure)
        written += [directory / f"{name}.csv", directory / f"{name}.png"]
    return written


def _classification_plots(
    model: Any, features: pd.DataFrame, target: pd.Series, directory: Path
) -> list[Path]:
    import matplotlib.pyplot as plt

    proba = model.predict_proba(model_input(features))
    predicted = model.classes_[np.argmax(proba, axis=1)]
    pd.DataFrame({"actual": target.astype(str), "predicted": predicted.astype(str)}).to_csv(
        directory / "confusion.csv", index=False
    )
    written = [directory / "confusion.csv"]
    positive_columns = [1] if len(model.classes_) == 2 else range(len(model.classes_))
    roc_rows, pr_rows = [], []
    for i in positive_columns:
        label = model.classes_[i]
        fpr, tpr, _ = skm.roc_curve(target == label, proba[:, i])
        precision, recall, _ = skm.precision_recall_curve(target == label, proba[:, i])
        roc_rows += [
            {"class": str(label), "fpr": a, "tpr": b} for a, b in zip(fpr, tpr, strict=True)
        ]
        pr_rows += [
            {"class": str(label), "recall": a, "precision": b}
            for a, b in zip(recall, precision, strict=True)
        ]
    for name, rows, (x, y) in (
        ("roc", roc_rows, ("fpr", "tpr")),
        ("pr", pr_rows, ("recall", "precision")),
    ):
        frame = pd.DataFrame(rows)
        frame.to_csv(directory / f"{name}.csv", index=False)
        figure, axes = plt.subplots(figsize=(4, 4))
        for label, group in frame.groupby("class"):
            axes.plot(group[x], group[y], label=f"class {label!s}")
        axes.set_xlabel(x)
        axes.set_ylabel(y)
        axes.legend()
        figure.savefig(directory / f"{name}.png", dpi=80, bbox_inches="tight")
        plt.close(figure)
        written += [directory / f"{name}.csv", directory / f"{name}.png"]
    display = skm.ConfusionMatrixDisplay.from_predictions(target.astype(str), predicted.astype(str))
    display.figure_.savefig(directory / "confusion.png", dpi=80, bbox_inches="tight")
    plt.close(display.figure_)
    written.append(directory / "confusion.png")
    return written


def golden_rows(
    features: pd.DataFrame, *, rows: int, schema: tuple[Feature, ...] | None = None
) -> pd.DataFrame:
    """The rows the golden set replays: the first ``rows`` holdout rows serving accepts (none
    missing a value where the model takes no null), a quarter of them with missing values where
    the holdout has such rows, then one row per categorical column with a category never seen in
    training and one per nullable column with that value missing."""
    if schema is None:
        return features.head(rows).reset_index(drop=True)
    strict = [f.name for f in schema if not f.nullable]
    usable = features[features[strict].notna().all(axis=1)]
    with_nulls = usable[usable.isna().any(axis=1)].head(max(1, rows // 4))
    rest = usable.drop(index=with_nulls.index).head(rows - len(with_nulls))
    chosen = pd.concat([rest, with_nulls]).sort_index().head(rows)
    extra = []
    if len(chosen):
        base = chosen.iloc[[0]]
        for feature in schema:
            if feature.categorical:
                extra.append(base.assign(**{feature.name: UNSEEN}))
            if feature.nullable:
                extra.append(base.assign(**{feature.name: None}))
    table = pd.concat([chosen, *extra]) if extra else chosen
    return table.astype(features.dtypes.to_dict()).reset_index(drop=True)


def golden_set(
    model: Any,
    features: pd.DataFrame,
    *,
    rows: int,
    schema: tuple[Feature, ...] | None = None,
    task: str = "classification",
) -> GoldenSet:
    """Holdout rows (see :func:`golden_rows`) with the in-process model's exact answers: what
    the serving image and the contract tests must reproduce."""
    sample = golden_rows(features, rows=rows, schema=schema)
    x = model_input(sample)
    labels = model.predict(x)
    records = request_records(sample)
    if task == "regression":
        return GoldenSet(
            features=tuple(str(c) for c in features.columns),
            classes=(),
            rows=tuple(
                GoldenRow(inputs=record, label=float(value), probabilities=())
                for record, value in zip(records, labels, strict=True)
            ),
        )
    proba = model.predict_proba(x)
    return GoldenSet(
        features=tuple(str(c) for c in features.columns),
        classes=tuple(_plain(c) for c in model.classes_),
        rows=tuple(
            GoldenRow(
                inputs=record,
                label=_plain(label),
                probabilities=tuple(float(p) for p in probs),
            )
            for record, label, probs in zip(records, labels, proba, strict=True)
        ),
    )


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
