"""Build and fit the model named in params, and write the files serving reads.

Each model type is a scikit-learn Pipeline that carries its own preprocessing, so the pickled
object is the whole predictor. Outputs (see docs/model-card.md): `model.pkl`, the model card
(:class:`serving.card.ModelCard`, written through :mod:`pipeline.artifacts`), and `model.onnx`
when skl2onnx can convert the pipeline within tolerance.
"""

from __future__ import annotations

import hashlib
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

from pipeline import artifacts
from pipeline.config import BaseParams, TrainParams
from pipeline.errors import ArtifactError, ConfigError
from serving.card import Feature, ModelCard, OnnxEntry


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


def write_model(model: Pipeline, path: Path = artifacts.MODEL_FILE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
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
    onnx: OnnxEntry | None,
    provenance: dict[str, str],
) -> ModelCard:
    return ModelCard(
        model_name=registered["name"],
        model_version=registered["version"],
        run_id=registered["run_id"],
        model_file=artifacts.MODEL_FILE.name,
        sha256=sha256,
        onnx=onnx,
        model_type=model_type,
        target=target,
        features=tuple(Feature(str(c), str(features[c].dtype)) for c in features.columns),
        classes=tuple(c.item() if isinstance(c, np.generic) else c for c in model.classes_),
        git_commit=provenance["git_commit"],
        data_hash=provenance["data_hash"],
        library_versions={
            "scikit-learn": sklearn.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


def load_model(card_path: Path = artifacts.MODEL_CARD) -> Pipeline:
    """The pickled pipeline, refused unless its sha256 matches the model card."""
    card = artifacts.read_card(card_path)
    path = card_path.parent / card.model_file
    if not path.is_file():
        raise artifacts.missing(path)
    if sha256_file(path) != card.sha256:
        raise ArtifactError(
            f"{path} does not match the sha256 in {card_path}: the model file was replaced "
            "after training; run the train stage again (`dvc repro -f train`)"
        )
    model: Pipeline = pickle.loads(path.read_bytes())
    return model
