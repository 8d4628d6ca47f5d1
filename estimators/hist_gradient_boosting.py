"""A worked example of ``train.model: custom``: histogram gradient boosting with native
categorical support.

Categorical columns are ordinal-encoded (a missing value is a category of its own, a value never
seen in training becomes -1, which the booster treats as missing) and handed to
``HistGradientBoosting*`` as categorical features; numbers pass through, missing values and all
(the booster handles NaN itself, so no imputation is needed).

params.yaml::

    train:
      model: custom
      custom:
        factory: estimators.hist_gradient_boosting:build
        params: {max_iter: 200, learning_rate: 0.1}
"""

from __future__ import annotations

from typing import Any

from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder


def build(
    *, numeric: list[int], categorical: list[int], task: str, seed: int, **params: Any
) -> Pipeline:
    """``params`` are HistGradientBoosting's own (max_iter, learning_rate, max_depth, ...)."""
    booster = (
        HistGradientBoostingRegressor if task == "regression" else HistGradientBoostingClassifier
    )
    if not categorical:
        return Pipeline([("model", booster(random_state=seed, **params))])
    encode = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)
    # The encoded categorical columns come first, then the numeric ones as they are.
    prepare = ColumnTransformer([("categorical", encode, categorical)], remainder="passthrough")
    model = booster(categorical_features=list(range(len(categorical))), random_state=seed, **params)
    return Pipeline([("prepare", prepare), ("model", model)])
