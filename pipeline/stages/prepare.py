"""Stage `prepare`: raw data -> Great Expectations suite -> stratified Parquet split."""

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
    log.info("checking %d rows x %d columns against %s", *raw.shape, params.data.expectations)
    checked = data_checks.validate_raw(
        raw, suite_path=params.data.expectations, docs_dir=artifacts.DATA_DOCS
    )
    parts = data.split(raw, data=params.data, base=params.base)
    artifacts.write_split(parts)
    log.info(
        "%d expectations passed; wrote %d train / %d test rows to %s",
        checked,
        len(parts.train),
        len(parts.test),
        artifacts.PREPARED_DIR,
    )
    return {"rows": len(raw), "expectations": checked, "docs": str(artifacts.DATA_DOCS)}


def main() -> None:
    console.run_stage(lambda: prepare(config.load_params()))


if __name__ == "__main__":
    main()
