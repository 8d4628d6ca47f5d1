"""Stage `prepare`: raw data -> the model's columns -> data rules and the Great Expectations
suite -> a deterministic Parquet split (stratified for classification)."""

from __future__ import annotations

import logging
from typing import Any

from pipeline import artifacts, config, console
from pipeline.config import Params
from pipeline.ml import data, data_checks

log = logging.getLogger("pipeline")


def prepare(params: Params) -> dict[str, Any]:
    log.info("loading %s", params.data.source)
    raw = data.load_raw(params.data)
    table = data.select_columns(raw, params.data)
    task, why = data.infer_task(table[params.data.target], params.train.task)
    log.info("task: %s (%s)", task, why)
    data.check_table(table, data=params.data, task=task)
    log.info("checking %d rows x %d columns against %s", *raw.shape, params.data.expectations)
    checked = data_checks.validate_raw(
        raw, suite_path=params.data.expectations, docs_dir=artifacts.DATA_DOCS
    )
    parts = data.split(table, data=params.data, base=params.base, task=task)
    artifacts.write_split(parts)
    kinds = {c: data.column_kind(table[c]) for c in table.columns if c != params.data.target}
    log.info(
        "%d expectations passed; %d feature column(s) (%d categorical); wrote %d train / %d "
        "test rows to %s",
        checked,
        len(kinds),
        sum(k == "categorical" for k in kinds.values()),
        len(parts.train),
        len(parts.test),
        artifacts.PREPARED_DIR,
    )
    return {"rows": len(raw), "expectations": checked, "docs": str(artifacts.DATA_DOCS)}


def main() -> None:
    console.run_stage(lambda: prepare(config.load_params()))


if __name__ == "__main__":
    main()
