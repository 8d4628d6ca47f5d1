"""Great Expectations: the data suite run on the raw table, and a starter suite for new data.

The only module that imports great_expectations. The suite is a file in GX's own JSON format
(`{"name": ..., "expectations": [{"type": ..., "kwargs": {...}}]}`), so anything GX documents can
be added to it by hand. A run writes HTML Data Docs; a failure lists one line per failed
expectation and the path of those docs.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.errors import ConfigError, DataValidationError

log = logging.getLogger(__name__)


def _context(docs_dir: Path) -> Any:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    context.add_data_docs_site(
        site_name="local",
        site_config={
            "class_name": "SiteBuilder",
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs_dir.resolve()),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    return context


def load_suite(path: Path) -> dict[str, Any]:
    try:
        suite: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"expectations suite {path} could not be read: {exc}") from None
    if not isinstance(suite.get("expectations"), list) or not suite.get("name"):
        raise ConfigError(f"{path} must be a GX suite: {{'name': ..., 'expectations': [...]}}")
    return suite


def _describe_failure(result: Any) -> str:
    config = result.expectation_config
    kwargs = {k: v for k, v in config.kwargs.items() if k != "batch_id"}
    column = kwargs.pop("column", None)
    where = f"column {column!r}: " if column is not None else ""
    detail = result.result or {}
    if result.exception_info and result.exception_info.get("raised_exception"):
        seen = result.exception_info.get("exception_message", "").splitlines()[0]
    elif detail.get("unexpected_count") is not None:
        sample = detail.get("partial_unexpected_list") or []
        seen = f"{detail['unexpected_count']} unexpected value(s), e.g. {sample[:3]}"
    else:
        seen = f"observed {detail.get('observed_value')!r}"
    return f"{config.type}: {where}{seen} (expected {kwargs})"


def validate_raw(frame: pd.DataFrame, *, suite_path: Path, docs_dir: Path) -> int:
    """Run the suite; return how many expectations passed, or raise `DataValidationError`."""
    import great_expectations as gx
    from great_expectations.checkpoint.actions import UpdateDataDocsAction

    suite_dict = load_suite(suite_path)
    context = _context(docs_dir)
    asset = context.data_sources.add_pandas("raw").add_dataframe_asset(name="raw")
    batch = asset.add_batch_definition_whole_dataframe("whole")
    try:
        suite = context.suites.add(gx.ExpectationSuite(**suite_dict))
    except Exception as exc:  # GX raises many types for a malformed suite; report the file
        raise ConfigError(f"{suite_path}: not a valid expectation suite: {exc}") from None
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(data=batch, suite=suite, name="raw")
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name="prepare",
            validation_definitions=[definition],
            actions=[UpdateDataDocsAction(name="data_docs")],
            result_format={"result_format": "SUMMARY"},
        )
    )
    outcome = checkpoint.run(batch_parameters={"dataframe": frame})
    results = [r for run in outcome.run_results.values() for r in run.results]
    failures = [_describe_failure(r) for r in results if not r.success]
    index = docs_dir / "index.html"
    if failures:
        raise DataValidationError(
            f"{len(failures)} of {len(results)} expectations in {suite_path} failed "
            f"(Data Docs: {index})",
            failures=failures,
            docs_path=str(index),
        )
    return len(results)


def suggest_suite(frame: pd.DataFrame, *, target: str, name: str) -> dict[str, Any]:
    """A starter suite from a table you trust: columns, types, no nulls, observed ranges."""
    expectations: list[dict[str, Any]] = [
        {
            "type": "expect_table_columns_to_match_set",
            "kwargs": {"column_set": list(frame.columns)},
        },
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": len(frame) // 2}},
    ]
    for column in frame.columns:
        series = frame[column]
        expectations.append(
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": column}}
        )
        if column == target:
            values = sorted(series.dropna().unique().tolist())
            expectations.append(
                {
                    "type": "expect_column_values_to_be_in_set",
                    "kwargs": {"column": column, "value_set": values},
                }
            )
        elif pd.api.types.is_numeric_dtype(series):
            expectations.append(
                {
                    "type": "expect_column_values_to_be_in_type_list",
                    "kwargs": {
                        "column": column,
                        "type_list": ["float64", "float32", "int64", "int32"],
                    },
                }
            )
            low, high = float(series.min()), float(series.max())
            margin = (high - low) * 0.5
            expectations.append(
                {
                    "type": "expect_column_values_to_be_between",
                    "kwargs": {
                        "column": column,
                        "min_value": round(min(0.0, low) if low >= 0 else low - margin, 6),
                        "max_value": round(high + margin, 6),
                    },
                }
            )
    return {
        "name": name,
        "expectations": expectations,
        "meta": {"generated_by": "pipeline suggest-expectations"},
    }


def render_suite(suite: dict[str, Any]) -> str:
    """GX's JSON, one expectation per line, so a reviewer reads (and diffs) it row by row."""
    rows = ",\n".join("    " + json.dumps(e) for e in suite["expectations"])
    meta = json.dumps(suite.get("meta", {}))
    return (
        f'{{\n  "name": {json.dumps(suite["name"])},\n  "meta": {meta},\n'
        f'  "expectations": [\n{rows}\n  ]\n}}\n'
    )
