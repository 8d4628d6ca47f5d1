"""Raw data in, a deterministic stratified split out.

Raw data is never modified: the built-in sets come from scikit-learn's package files, a user's
CSV/Parquet is only read. The split is handed on as :class:`pipeline.artifacts.Split`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from sklearn import datasets
from sklearn.model_selection import train_test_split

from pipeline.artifacts import Split
from pipeline.config import BaseParams, DataParams
from pipeline.errors import ConfigError, DataValidationError


def load_raw(params: DataParams) -> pd.DataFrame:
    """The raw table, target column included, exactly as the source holds it."""
    if params.source.startswith("builtin:"):
        name = params.source.removeprefix("builtin:")
        loader = {"breast_cancer": datasets.load_breast_cancer, "wine": datasets.load_wine}[name]
        frame: pd.DataFrame = loader(as_frame=True).frame
        return frame.rename(columns={"target": params.target})
    path = Path(params.source)
    try:
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"data.source {params.source!r} could not be read: {exc}") from None


def split(frame: pd.DataFrame, *, data: DataParams, base: BaseParams) -> Split:
    """Stratified by the target, deterministic for a given seed."""
    if data.target not in frame.columns:
        raise DataValidationError(
            f"target column {data.target!r} is not in the data (columns: {list(frame.columns)})",
            failures=[f"expect_column_to_exist: {data.target}"],
            docs_path=None,
        )
    train, test = train_test_split(
        frame, test_size=data.test_size, random_state=base.seed, stratify=frame[data.target]
    )
    return Split(train=train.reset_index(drop=True), test=test.reset_index(drop=True))


def features_and_target(frame: pd.DataFrame, target: str) -> tuple[pd.DataFrame, pd.Series]:
    return frame.drop(columns=[target]), frame[target]
