"""Raw data in, the model's columns checked, a deterministic split out.

Raw data is never modified: the built-in sets come from package files (scikit-learn's bundled
tables, the `palmerpenguins` package), a user's CSV/Parquet is only read. What the prepare stage
hands on (:class:`pipeline.artifacts.Split`) holds exactly the model's feature columns
(``data.features`` or all but ``data.drop``) and the target, categorical columns as text.

Data that cannot make a model stops here with one line naming the column and what to do
(:func:`check_table`), before anything is trained.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from sklearn import datasets
from sklearn.model_selection import train_test_split

from pipeline.artifacts import Split
from pipeline.config import BaseParams, DataParams, Task
from pipeline.errors import ConfigError, DataValidationError

log = logging.getLogger("pipeline")

Kind = Literal["numeric", "categorical"]
#: An integer target with at most this many distinct values is read as class labels.
MAX_INFERRED_CLASSES = 20


def load_raw(params: DataParams) -> pd.DataFrame:
    """The raw table, target column included, exactly as the source holds it."""
    if params.source.startswith("builtin:"):
        return _builtin(params.source.removeprefix("builtin:"), target=params.target)
    path = Path(params.source)
    try:
        frame = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise DataValidationError(
            f"{params.source} is empty (no header, no rows): write a header line and the data "
            "rows into it"
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"data.source {params.source!r} could not be read: {exc}") from None
    if frame.empty:
        raise DataValidationError(
            f"{params.source} has a header ({len(frame.columns)} columns) but no data rows: "
            "add the rows below the header"
        )
    return frame


def _builtin(name: str, *, target: str) -> pd.DataFrame:
    if name == "penguins":
        from palmerpenguins import load_penguins

        frame: pd.DataFrame = load_penguins()
        return frame
    loaders = {
        "breast_cancer": datasets.load_breast_cancer,
        "wine": datasets.load_wine,
        "diabetes": datasets.load_diabetes,
    }
    kwargs = {"scaled": False} if name == "diabetes" else {}
    loaded: pd.DataFrame = loaders[name](as_frame=True, **kwargs).frame
    return loaded.rename(columns={"target": target})


def select_columns(frame: pd.DataFrame, data: DataParams) -> pd.DataFrame:
    """The model's feature columns (in ``data.features`` order, else the file's) and the target.

    A name in ``data.features`` or ``data.drop`` the data does not have is a ConfigError naming
    it; categorical (non-numeric) columns become text, missing values kept as missing."""
    columns = [str(c) for c in frame.columns]
    if data.target not in columns:
        raise DataValidationError(
            f"target column {data.target!r} is not in the data (columns: {columns}): set "
            "data.target to one of them"
        )
    for key, names in (("features", data.features or []), ("drop", data.drop)):
        unknown = [n for n in names if n not in columns]
        if unknown:
            raise ConfigError(
                f"params.yaml: data.{key}: column(s) {unknown} are not in {data.source} "
                f"(its columns: {columns})"
            )
    if data.features is not None:
        keep = list(data.features)
    else:
        keep = [c for c in columns if c != data.target and c not in data.drop]
    if not keep:
        raise ConfigError(f"params.yaml: data.drop leaves no feature column in {data.source}")
    selected = frame.loc[:, [*keep, data.target]].copy()
    for column in keep:
        if column_kind(selected[column]) == "categorical":
            selected[column] = as_text(selected[column])
    if not pd.api.types.is_numeric_dtype(selected[data.target]) or pd.api.types.is_bool_dtype(
        selected[data.target]
    ):
        selected[data.target] = as_text(selected[data.target])
    return selected


def column_kind(series: pd.Series) -> Kind:
    """numeric: a numeric dtype (booleans excluded); categorical: anything else."""
    numeric = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
    return "numeric" if numeric else "categorical"


def as_text(series: pd.Series) -> pd.Series:
    """Values as strings (``True`` -> ``"True"``), missing values left missing."""
    missing = series.isna()
    text = series.astype(object).where(missing, series.astype(object).map(str))
    return text.astype(pd.StringDtype(na_value=np.nan))


def infer_task(target: pd.Series, declared: Task | None) -> tuple[Task, str]:
    """The task and why: ``declared`` if set (checked against the target), else inferred.

    Text or boolean labels, or integers with at most ``MAX_INFERRED_CLASSES`` distinct values,
    are classes; other numbers are a regression target."""
    name = target.name
    numeric = pd.api.types.is_numeric_dtype(target) and not pd.api.types.is_bool_dtype(target)
    values = target.dropna()
    if declared is not None:
        if declared == "regression" and not numeric:
            raise ConfigError(
                f"params.yaml: train.task is 'regression' but target {name!r} holds text "
                f"(e.g. {values.iloc[0]!r}): use 'classification' or a numeric target"
            )
        return declared, "train.task"
    if not numeric:
        return "classification", f"target {name!r} holds text labels"
    integral = bool(np.all(np.mod(values.to_numpy(dtype=np.float64), 1) == 0))
    distinct = int(values.nunique())
    if integral and distinct <= MAX_INFERRED_CLASSES:
        return "classification", f"target {name!r} holds {distinct} distinct integers"
    why = "fractions" if not integral else f"{distinct} distinct integers"
    return "regression", f"target {name!r} holds {why}"


def check_table(frame: pd.DataFrame, *, data: DataParams, task: Task) -> None:
    """Refuse data no model can be trained on: one line naming the column and what to do."""
    target = frame[data.target]
    where = data.source
    missing = np.flatnonzero(target.isna().to_numpy())
    if missing.size:
        rows = ", ".join(str(int(i)) for i in missing[:5])
        raise DataValidationError(
            f"target {data.target!r} is missing in {missing.size} row(s) of {where} (rows "
            f"{rows}{', ...' if missing.size > 5 else ''}, counted from 0 after the header): "
            "drop those rows or fill in their labels"
        )
    for column in frame.columns:
        if column == data.target:
            continue
        series = frame[column]
        if series.isna().all():
            raise DataValidationError(
                f"column {column!r} in {where} is empty (all {len(series)} values are missing):"
                f" leave it out with data.drop: [{column}] or fill it in"
            )
        if series.nunique(dropna=False) == 1:
            raise DataValidationError(
                f"column {column!r} in {where} holds the same value ({series.iloc[0]!r}) in "
                f"every row, so it cannot inform the model: leave it out with "
                f"data.drop: [{column}]"
            )
        present = series.dropna()
        if (
            column_kind(series) == "categorical"
            and len(present) >= 20
            and present.nunique() == len(present)
        ):
            log.warning(
                "column %r in %s holds a different value in every row (%d of %d): an ID or a "
                "timestamp as text, which the model can only memorise; leave it out with "
                "data.drop: [%s]",
                column,
                where,
                len(present),
                len(series),
                column,
            )
    if task == "classification":
        counts = target.value_counts()
        if len(counts) < 2:
            raise DataValidationError(
                f"target {data.target!r} holds one class ({counts.index[0]!r}): a classifier "
                "needs at least two; check data.target"
            )
        single = counts[counts < 2]
        if len(single):
            raise DataValidationError(
                f"target {data.target!r}: class {single.index[0]!r} has only one row, and a "
                "stratified split needs at least two per class: add rows of that class or "
                "drop its row"
            )
    elif target.nunique() < 2:
        raise DataValidationError(
            f"target {data.target!r} holds the same value ({target.iloc[0]!r}) in every row: "
            "there is nothing to predict; check data.target"
        )


def split(frame: pd.DataFrame, *, data: DataParams, base: BaseParams, task: Task) -> Split:
    """Deterministic for a given seed; stratified by the target for classification."""
    stratify = frame[data.target] if task == "classification" else None
    try:
        train, test = train_test_split(
            frame, test_size=data.test_size, random_state=base.seed, stratify=stratify
        )
    except ValueError as exc:  # e.g. fewer holdout rows than classes
        raise DataValidationError(
            f"cannot split {len(frame)} rows with data.test_size = {data.test_size:g}: {exc}"
        ) from None
    return Split(train=train.reset_index(drop=True), test=test.reset_index(drop=True))


def features_and_target(frame: pd.DataFrame, target: str) -> tuple[pd.DataFrame, pd.Series]:
    return frame.drop(columns=[target]), frame[target]
