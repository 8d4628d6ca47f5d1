"""Generated data sets for the data-size series: a binary task of any size, with a suite.

`make_classification` with well separated classes, so the template's quality gates pass at
every size and the series measures the pipeline, not a model that fails its gates.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import make_classification

FEATURES = 30  # as many as the built-in breast-cancer set
TARGET = "target"


def write_dataset(project: Path, *, rows: int, seed: int = 42) -> tuple[str, str]:
    """Write ``data/raw/generated_<rows>.parquet`` and its suite into ``project``; return the
    ``data.source`` and ``data.expectations`` values that point at them."""
    features, labels = make_classification(
        n_samples=rows,
        n_features=FEATURES,
        n_informative=12,
        n_redundant=6,
        class_sep=2.0,
        flip_y=0.0,
        random_state=seed,
    )
    columns = [f"f{i:02d}" for i in range(FEATURES)]
    frame = pd.DataFrame(features.astype(np.float64), columns=columns)
    frame[TARGET] = labels.astype(np.int64)
    source = Path("data/raw") / f"generated_{rows}.parquet"
    suite_path = Path("expectations") / f"generated_{rows}.json"
    (project / source).parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(project / source, index=False)
    expectations: list[dict[str, object]] = [
        {"type": "expect_table_columns_to_match_set", "kwargs": {"column_set": [*columns, TARGET]}},
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": rows // 2}},
        {
            "type": "expect_column_values_to_be_in_set",
            "kwargs": {"column": TARGET, "value_set": [0, 1]},
        },
    ]
    for column in columns:
        expectations.append(
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": column}}
        )
    suite = {
        "name": suite_path.stem,
        "meta": {"generated_by": "bench"},
        "expectations": expectations,
    }
    (project / suite_path).write_text(json.dumps(suite, indent=1) + "\n")
    return str(source), str(suite_path)
