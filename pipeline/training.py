"""Build and fit the model named in params, and write the files serving reads.

Each model type is a scikit-learn Pipeline that carries its own preprocessing, so the pickled
object is the whole predictor. Outputs (see docs/model-card.md): `model.pkl`, `model.json`, and
`model.onnx` when skl2onnx can convert the pipeline within tolerance.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sklearn
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.config import BaseParams, TrainParams
from pipeline.errors import ConfigError

MODEL_FILE = "model.pkl"
CARD_FILE = "model.json"
ONNX_FILE = "model.onnx"


def build(params: TrainParams, *, seed: int) -> Pipeline:
    """An unfitted Pipeline: median imputation, scaling where the estimator needs it."""
    if params.model == "logistic_regression":
        lr = params.logistic_regression
        estimator: Any = LogisticRegression(C=lr.C, max_iter=lr.max_iter, random_state=seed)
        steps = [("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]
    elif params.model == "random_forest":
        rf = params.random_forest
        estimator = RandomForestClassifier(
            n_estimators=rf.n_estimators,
            max_depth=rf.max_depth,
            min_samples_leaf=rf.min_samples_leaf,
            random_state=seed,
            n_jobs=1,
        )
        steps = [("impute", SimpleImputer(strategy="median"))]
    else:
        gb = params.gradient_boosting
        estimator = GradientBoostingClassifier(
            n_estimators=gb.n_estimators,
            learning_rate=gb.learning_rate,
            max_depth=gb.max_depth,
            random_state=seed,
        )
        steps = [("impute", SimpleImputer(strategy="median"))]
    return Pipeline([*steps, ("model", estimator)])


def hyperparameters(params: TrainParams) -> dict[str, Any]:
    chosen: BaseParams | Any = getattr(params, params.model)
    return {"model": params.model, **{f"{params.model}.{k}": v for k, v in chosen}}


def check_features(features: pd.DataFrame) -> None:
    """Only numeric features are modelled; anything else must be encoded in the data."""
    bad = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if bad:
        raise ConfigError(
            f"feature column(s) {bad} are not numeric; encode them in your data "
            "(the built-in pipelines scale and impute numeric features only)"
        )


def fit(model: Pipeline, features: pd.DataFrame, target: pd.Series) -> Pipeline:
    check_features(features)
    model.fit(features, target)
    return model


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_model(model: Pipeline, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / MODEL_FILE
    path.write_bytes(pickle.dumps(model, protocol=5))
    return path


def model_card(
    *,
    model: Pipeline,
    features: pd.DataFrame,
    target: str,
    model_type: str,
    registered: dict[str, str],
    sha256: str,
    onnx: dict[str, Any] | None,
    provenance: dict[str, str],
) -> dict[str, Any]:
    classes = [c.item() if isinstance(c, np.generic) else c for c in model.classes_]
    return {
        "model_name": registered["name"],
        "model_version": registered["version"],
        "run_id": registered["run_id"],
        "model_file": MODEL_FILE,
        "sha256": sha256,
        "onnx": onnx,
        "model_type": model_type,
        "target": target,
        "features": [{"name": str(c), "dtype": str(features[c].dtype)} for c in features.columns],
        "classes": classes,
        "git_commit": provenance["git_commit"],
        "data_hash": provenance["data_hash"],
        "library_versions": {
            "scikit-learn": sklearn.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def write_card(card: dict[str, Any], directory: Path) -> Path:
    path = directory / CARD_FILE
    path.write_text(json.dumps(card, indent=2) + "\n")
    return path


def read_card(directory: Path) -> dict[str, Any]:
    try:
        card: dict[str, Any] = json.loads((directory / CARD_FILE).read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"{directory / CARD_FILE} is missing: run the train stage first"
        ) from None
    return card


def load_model(directory: Path) -> Pipeline:
    """The pickled pipeline, refused unless its sha256 matches the model card."""
    card = read_card(directory)
    path = directory / card["model_file"]
    if sha256_file(path) != card["sha256"]:
        raise ConfigError(f"{path} does not match the sha256 in {directory / CARD_FILE}")
    model: Pipeline = pickle.loads(path.read_bytes())
    return model
