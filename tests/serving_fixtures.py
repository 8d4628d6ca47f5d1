"""Build a model directory exactly as docs/model-card.md describes, for serving tests.

A scikit-learn Pipeline (StandardScaler + LogisticRegression) trained on the breast-cancer data
that ships inside scikit-learn, fitted on a DataFrame as the train stage fits it, written as
``models/model.pkl``, ``models/model.onnx``, ``models/model.json``, ``models/golden.json`` and
``metrics/holdout.json`` under the given root.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.onnx_export import check_parity, to_onnx

MODEL_NAME = "breast-cancer-classifier"
MODEL_VERSION = "3"


@dataclass(frozen=True)
class ModelDir:
    root: Path
    models: Path
    features: list[str]
    classes: list[int]
    golden: list[dict[str, Any]]
    card: dict[str, Any]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_model_dir(root: Path, *, onnx: bool = True, golden_rows: int = 60) -> ModelDir:
    data = load_breast_cancer(as_frame=True)
    x, y = data.data, data.target
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=42, stratify=y
    )
    model = Pipeline(
        [("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=1000, C=1.0))]
    ).fit(x_train, y_train)
    models = root / "models"
    metrics = root / "metrics"
    models.mkdir(parents=True, exist_ok=True)
    metrics.mkdir(parents=True, exist_ok=True)
    (models / "model.pkl").write_bytes(pickle.dumps(model, protocol=5))
    features = [str(c) for c in x.columns]
    test = x_test.to_numpy(dtype=np.float64)
    frame = x_test.iloc[:golden_rows]
    onnx_entry = None
    graph = to_onnx(model, n_features=len(features)) if onnx else None
    if graph is not None:
        parity = check_parity(model, graph, x_test)
        assert parity.ok, parity
        (models / "model.onnx").write_bytes(graph)
        onnx_entry = {
            "file": "model.onnx",
            "sha256": sha256(models / "model.onnx"),
            "max_abs_diff": parity.max_abs_diff,
            "tolerance": parity.tolerance,
        }
    classes = [int(c) for c in model.classes_]
    card = {
        "model_name": MODEL_NAME,
        "model_version": MODEL_VERSION,
        "run_id": "0f3c9d2e5b7a4c1d8e6f0a2b4c6d8e0f",
        "model_file": "model.pkl",
        "sha256": sha256(models / "model.pkl"),
        "onnx": onnx_entry,
        "model_type": "logistic_regression",
        "target": "target",
        "features": [{"name": name, "dtype": "float64"} for name in features],
        "classes": classes,
        "git_commit": "unknown",
        "data_hash": "d41d8cd98f00b204e9800998ecf8427e.dir",
        "library_versions": {"scikit-learn": "1.9.1", "python": "3.11.7"},
        "created": "2026-11-24T21:40:00Z",
    }
    (models / "model.json").write_text(json.dumps(card, indent=2))
    rows = test[:golden_rows]
    labels = model.predict(frame)
    probabilities = model.predict_proba(frame)
    golden = [
        {
            "inputs": dict(zip(features, map(float, row), strict=True)),
            "label": int(label),
            "probabilities": [float(p) for p in proba],
        }
        for row, label, proba in zip(rows, labels, probabilities, strict=True)
    ]
    (models / "golden.json").write_text(
        json.dumps({"features": features, "classes": classes, "rows": golden})
    )
    holdout = {
        "accuracy": float(accuracy_score(y_test, model.predict(x_test))),
        "roc_auc": float(roc_auc_score(y_test, model.predict_proba(x_test)[:, 1])),
    }
    (metrics / "holdout.json").write_text(json.dumps(holdout))
    return ModelDir(
        root=root, models=models, features=features, classes=classes, golden=golden, card=card
    )
