"""Stage `prepare`: raw data -> Great Expectations suite -> stratified Parquet split."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline import data, data_checks
from pipeline.config import Params

log = logging.getLogger("pipeline")
DOCS_DIR = Path("reports/data_docs")


def prepare(params: Params) -> dict[str, Any]:
    log.info("loading %s", params.data.source)
    raw = data.load_raw(params.data)
    log.info("checking %d rows x %d columns against %s", *raw.shape, params.data.expectations)
    checked = data_checks.validate_raw(raw, suite_path=params.data.expectations, docs_dir=DOCS_DIR)
    parts = data.split(raw, data=params.data, base=params.base)
    data.write_split(parts, params.data.prepared_dir)
    log.info(
        "%d expectations passed; wrote %d train / %d test rows to %s",
        checked,
        len(parts.train),
        len(parts.test),
        params.data.prepared_dir,
    )
    return {"rows": len(raw), "expectations": checked, "docs": str(DOCS_DIR / "index.html")}
