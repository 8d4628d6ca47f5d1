"""Build and fit the model named in params, and write the files serving reads.

Each model is a scikit-learn Pipeline that carries its own preprocessing, so the pickled object
is the whole predictor. The built-in pipelines impute missing values (median for numbers, a
``(missing)`` category for text), scale for the linear family, and one-hot encode categorical
columns (values never seen in training are ignored). Columns are selected by position, because
the serving image has no pandas: it feeds the model what :mod:`serving.schema` builds.

Outputs (see docs/model-card.md): `model.pkl`, the model card (:class:`serving.card.ModelCard`,
written through :mod:`pipeline.artifacts`), and `model.onnx` when skl2onnx can convert the
pipeline within tolerance.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import io
import logging
import pickle
import platform
import sys
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sklearn
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from pipeline import artifacts
from pipeline.config import CUSTOM_DIR, TrainParams
from pipeline.errors import ArtifactError, ConfigError
from serving.card import NUMERIC_DTYPES, TEXT_DTYPE, Feature, ModelCard, OnnxEntry

log = logging.getLogger("pipeline")

#: How a missing categorical value reaches the model: the empty string (serving sends the same;
#: ONNX string tensors have no null).
MISSING_TEXT = ""
#: Module roots a pickled model may reference: what the serving image has installed.
SERVABLE_MODULES = frozenset(
    {"sklearn", "numpy", "scipy", "joblib", "builtins", "copyreg", "collections", "_codecs",
     "functools", "operator", "threadpoolctl"}
)  # fmt: skip
#: A categorical column with more distinct values than this is probably an identifier.
MANY_CATEGORIES = 200


@dataclass(frozen=True)
class Columns:
    """Which input positions are numeric and which categorical (what a factory may take)."""

    names: tuple[str, ...]
    numeric: tuple[int, ...]
    categorical: tuple[int, ...]


def columns_of(features: pd.DataFrame) -> Columns:
    numeric: list[int] = []
    categorical: list[int] = []
    for i, name in enumerate(features.columns):
        series = features[name]
        is_number = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
        (numeric if is_number else categorical).append(i)
    return Columns(tuple(str(c) for c in features.columns), tuple(numeric), tuple(categorical))


def model_input(features: pd.DataFrame) -> pd.DataFrame:
    """The table the model is fitted on and scored with: categorical columns as Python strings
    with :data:`MISSING_TEXT` for a missing value, numbers unchanged (NaN = missing)."""
    table = features.copy()
    for i in columns_of(features).categorical:
        name = table.columns[i]
        column = table[name].astype(object)
        table[name] = column.where(column.notna(), MISSING_TEXT).astype(object)
    return table


def build(params: TrainParams, *, seed: int, task: str, columns: Columns) -> Any:
    """An unfitted estimator: a built-in pipeline, or what ``train.custom.factory`` returns."""
    if params.model == "custom":
        return _custom(params, columns, task=task, seed=seed)
    regression = task == "regression"
    estimator: Any
    if params.model == "logistic_regression":
        lr = params.logistic_regression
        estimator = (
            Ridge(alpha=1.0 / lr.C, random_state=seed)
            if regression
            else LogisticRegression(C=lr.C, max_iter=lr.max_iter, random_state=seed)
        )
        scale = True
    elif params.model == "random_forest":
        rf = params.random_forest
        kind = RandomForestRegressor if regression else RandomForestClassifier
        estimator = kind(
            n_estimators=rf.n_estimators,
            max_depth=rf.max_depth,
            min_samples_leaf=rf.min_samples_leaf,
            random_state=seed,
            n_jobs=None,  # the fit's joblib backend decides (train.parallel); serving: one job
        )
        scale = False
    else:
        gb = params.gradient_boosting
        kind = GradientBoostingRegressor if regression else GradientBoostingClassifier
        estimator = kind(
            n_estimators=gb.n_estimators,
            learning_rate=gb.learning_rate,
            max_depth=gb.max_depth,
            random_state=seed,
        )
        scale = False
    numbers: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median"))]
    if scale:
        numbers.append(("scale", StandardScaler()))
    if not columns.categorical:  # all numeric: one matrix in, one ONNX input tensor
        return Pipeline([*numbers, ("model", estimator)])
    text = Pipeline(
        [
            (
                "impute",
                SimpleImputer(
                    missing_values=MISSING_TEXT, strategy="constant", fill_value="(missing)"
                ),
            ),
            ("onehot", OneHotEncoder(handle_unknown="ignore")),
        ]
    )
    parts = [("categorical", text, list(columns.categorical))]
    if columns.numeric:
        parts.insert(0, ("numeric", Pipeline(numbers), list(columns.numeric)))
    return Pipeline([("prepare", ColumnTransformer(parts)), ("model", estimator)])


def _custom(params: TrainParams, columns: Columns, *, task: str, seed: int) -> Any:
    """``factory(**train.custom.params)``; a factory that takes ``numeric``, ``categorical``
    (column positions), ``task`` or ``seed`` gets those too."""
    assert params.custom is not None  # TrainParams checks it for model: custom
    spec = params.custom.factory
    module_name, _, function_name = spec.partition(":")
    where = f"params.yaml: train.custom.factory {spec!r}"
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"{where}: cannot import {module_name!r} ({exc}); put your module under "
            f"{CUSTOM_DIR}/ (e.g. {CUSTOM_DIR}/my_model.py -> {CUSTOM_DIR}.my_model:build)"
        ) from None
    source = getattr(module, "__file__", None)
    if source is not None:
        path = Path(source).resolve()
        root = Path.cwd().resolve()
        installed = Path(sys.prefix).resolve() in path.parents
        if root in path.parents and (root / CUSTOM_DIR) not in path.parents and not installed:
            raise ConfigError(
                f"{where}: {path.relative_to(root)} is not under {CUSTOM_DIR}/, the folder "
                "dvc.yaml tracks for the train stage: move it there so editing it retrains"
            )
    factory = getattr(module, function_name, None)
    if not callable(factory):
        raise ConfigError(f"{where}: {module_name} has no function {function_name!r}")
    kwargs = dict(params.custom.params)
    accepted = _parameters(factory)
    offered: dict[str, Any] = {
        "numeric": list(columns.numeric),
        "categorical": list(columns.categorical),
        "task": task,
        "seed": seed,
    }
    kwargs |= {k: v for k, v in offered.items() if k in accepted and k not in kwargs}
    try:
        estimator = factory(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: calling it with train.custom.params failed: {exc}") from None
    for method in ("fit", "predict"):
        if not callable(getattr(estimator, method, None)):
            raise ConfigError(
                f"{where} returned {type(estimator).__name__}, which has no {method}(): return "
                "a scikit-learn estimator or pipeline"
            )
    return estimator


def _parameters(factory: Any) -> set[str]:
    try:
        return set(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        return set()


def hyperparameters(params: TrainParams) -> dict[str, Any]:
    if params.model == "custom":
        assert params.custom is not None
        custom = {f"custom.params.{k}": v for k, v in params.custom.params.items()}
        return {"model": "custom", "custom.factory": params.custom.factory, **custom}
    chosen: Any = getattr(params, params.model)
    return {"model": params.model, **{f"{params.model}.{k}": v for k, v in chosen}}


def fit(model: Any, features: pd.DataFrame, target: pd.Series, *, task: str) -> Any:
    """Fit on :func:`model_input`; a classifier without ``predict_proba`` or an estimator of
    the other task is a ConfigError (the serving contract needs both)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Found unknown categories")
        try:
            model.fit(model_input(features), target)
        except (ValueError, TypeError) as exc:  # the estimator refused these columns
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(
                f"fitting {type(model).__name__} failed: {first[:300]} (text columns reach the "
                "model as strings, missing values as NaN or ''; see README 'Your own estimator')"
            ) from None
    if task == "classification" and not callable(getattr(model, "predict_proba", None)):
        raise ConfigError(
            f"the classifier {type(model).__name__} has no predict_proba(): the served model "
            "answers with class probabilities; choose an estimator that has it"
        )
    if task == "classification" and getattr(model, "classes_", None) is None:
        raise ConfigError(
            f"{type(model).__name__} has no classes_ after fit: for train.task 'regression' "
            "set it in params.yaml, else return a classifier"
        )
    return model


def check_servable(model: Any) -> None:
    """The pickle may reference only what the serving image has (scikit-learn, numpy, scipy):
    a class of your own would load here and fail in the image."""
    foreign = sorted(
        {
            name
            for name in _pickled_globals(pickle.dumps(model, protocol=5))
            if name.split(".")[0] not in SERVABLE_MODULES
        }
    )
    if foreign:
        raise ConfigError(
            f"the model references {foreign}, which the serving image does not have (it ships "
            "scikit-learn, numpy and scipy only): build your factory from scikit-learn classes"
        )


def _pickled_globals(data: bytes) -> set[str]:
    """Every ``module.name`` the pickle loads (it is the model just fitted here: safe to load)."""
    found: set[str] = set()

    class Recorder(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            found.add(f"{module}.{name}")
            return super().find_class(module, name)

    Recorder(io.BytesIO(data)).load()
    return found


def card_features(model: Any, features: pd.DataFrame) -> tuple[Feature, ...]:
    """Each column's kind, dtype, categories and whether serving accepts a null there: nulls
    were seen in training and the fitted model scores a row with that column missing."""
    columns = columns_of(features)
    table = model_input(features)
    out: list[Feature] = []
    for i, name in enumerate(columns.names):
        series = features[name]
        seen_missing = bool(series.isna().any())
        nullable = seen_missing and _handles_missing(model, table, i)
        if i in columns.categorical:
            categories = tuple(sorted(str(v) for v in series.dropna().unique()))
            if len(categories) > MANY_CATEGORIES:
                log.warning(
                    "column %r has %d categories: if it is an identifier, leave it out with "
                    "data.drop: [%s]",
                    name,
                    len(categories),
                    name,
                )
            out.append(Feature(name, TEXT_DTYPE, "categorical", nullable, categories))
        else:
            dtype = str(series.dtype)
            out.append(Feature(name, dtype if dtype in NUMERIC_DTYPES else "float64", "numeric",
                               nullable))  # fmt: skip
    return tuple(out)


def _handles_missing(model: Any, table: pd.DataFrame, position: int) -> bool:
    row = table.iloc[:1].copy()
    name = row.columns[position]
    row[name] = MISSING_TEXT if row[name].dtype == object else np.nan
    try:
        model.predict(row)
    except (ValueError, TypeError) as exc:
        log.warning("column %r: the model does not score a missing value (%s)", name, exc)
        return False
    return True


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_model(model: Any, path: Path = artifacts.MODEL_FILE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model_bytes(model))
    return path


def model_bytes(model: Any) -> bytes:
    """The model pickled without the memo, so equal models give equal bytes.

    With the memo, an object referenced twice is written once: a forest fitted in one process
    shares its trees' ``criterion`` strings and parameter floats, one whose trees came back
    from loky or Dask workers holds a copy per batch of trees, and the batch sizes depend on
    timing, so the bytes (and the model's sha256, DVC's hash, the image tag) would change from
    run to run. Without it each value is written where it occurs (a forest's file grows by
    about a third). A model that refers to itself cannot be written that way: it gets the
    usual pickle, and a warning that its bytes may vary between equal fits."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=5)
    pickler.fast = True  # no memo (CPython refuses a cycle with ValueError, not a loop)
    try:
        pickler.dump(model)
    except ValueError as exc:
        if "cyclic" not in str(exc):
            raise
        log.warning("the model refers to itself (%s): model.pkl is pickled with the memo", exc)
        return pickle.dumps(model, protocol=5)
    return buffer.getvalue()


def model_card(
    *,
    model: Any,
    features: tuple[Feature, ...],
    target: str,
    task: str,
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
        features=features,
        classes=()
        if task == "regression"
        else tuple(c.item() if isinstance(c, np.generic) else c for c in model.classes_),
        git_commit=provenance["git_commit"],
        data_hash=provenance["data_hash"],
        library_versions={
            "scikit-learn": sklearn.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        task=task,
    )


def load_model(card_path: Path = artifacts.MODEL_CARD) -> Any:
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
    return pickle.loads(path.read_bytes())


def request_records(features: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as a client sends them: numbers as floats, text as strings, ``None`` where a value
    is missing (what golden.json holds and serving's request converter reads)."""
    records = features.astype(object).to_dict(orient="records")
    return [
        {str(k): (None if _missing(v) else _plain(v)) for k, v in record.items()}
        for record in records
    ]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
