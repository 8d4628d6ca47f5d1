"""Holdout metrics, the plots DVC shows, and the golden set the contract tests replay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from serving.card import GoldenRow, GoldenSet


def holdout_metrics(model: Any, features: pd.DataFrame, target: pd.Series) -> dict[str, float]:
    """accuracy, precision, recall, f1, roc_auc, log_loss; macro averages beyond two classes."""
    proba = model.predict_proba(features)
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
    model: Any, features: pd.DataFrame, target: pd.Series, directory: Path
) -> list[Path]:
    """DVC plot data (CSV) plus PNGs: confusion matrix, ROC and PR curves (one-vs-rest)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    proba = model.predict_proba(features)
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
    display = skm.ConfusionMatrixDisplay.from_predictions(target, predicted)
    display.figure_.savefig(directory / "confusion.png", dpi=80, bbox_inches="tight")
    plt.close(display.figure_)
    written.append(directory / "confusion.png")
    return written


def golden_set(model: Any, features: pd.DataFrame, *, rows: int) -> GoldenSet:
    """The first `rows` holdout rows with the in-process model's exact classes and
    probabilities: what the serving image and the contract tests must reproduce."""
    sample = features.head(rows)
    proba = model.predict_proba(sample)
    labels = model.predict(sample)
    records = sample.to_dict(orient="records")
    return GoldenSet(
        features=tuple(str(c) for c in features.columns),
        classes=tuple(_plain(c) for c in model.classes_),
        rows=tuple(
            GoldenRow(
                inputs={str(k): float(v) for k, v in record.items()},
                label=_plain(label),
                probabilities=tuple(float(p) for p in probs),
            )
            for record, label, probs in zip(records, labels, proba, strict=True)
        ),
    )


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
