"""Great Expectations: the data suite run on the raw table, and a starter suite for new data.

The only module that imports great_expectations. The suite is a file in GX's own JSON format
(`{"name": ..., "expectations": [{"type": ..., "kwargs": {...}}]}`), so anything GX documents can
be added to it by hand. A run writes HTML Data Docs; a failure lists one line per failed
expectation and the path of those docs.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
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


#: A column with at most this many distinct values gets a value set in a suggested suite.
MAX_VALUE_SET = 50
#: How far below the observed share of non-null values a suggested `mostly` sits.
NULL_MARGIN = 0.05


@dataclass(frozen=True)
class Inferred:
    """What :func:`suggest_suite` inferred for one column (the CLI prints these as a table)."""

    column: str
    kind: str
    nulls: str
    checks: tuple[str, ...]


def suggest_suite(
    frame: pd.DataFrame, *, target: str, name: str
) -> tuple[dict[str, Any], list[Inferred]]:
    """A starter suite from a table you trust, and what it inferred per column.

    It passes on ``frame`` itself: columns and row count; per column, no nulls where it has
    none and a ``mostly`` a little below the observed share where it has some; numbers of a
    numeric type within a generous range around what was seen; the values seen, for the target
    (classes) and for text columns with at most :data:`MAX_VALUE_SET` distinct values."""
    expectations: list[dict[str, Any]] = [
        {
            "type": "expect_table_columns_to_match_set",
            "kwargs": {"column_set": [str(c) for c in frame.columns]},
        },
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": len(frame) // 2}},
    ]
    inferred: list[Inferred] = []
    for column in frame.columns:
        series = frame[column]
        checks: list[str] = []
        present = float(series.notna().mean()) if len(series) else 0.0
        if present == 1.0:
            expectations.append(_expect("not_be_null", column))
            nulls = "none"
            checks.append("not null")
        elif present > NULL_MARGIN:
            mostly = math.floor((present - NULL_MARGIN) * 100) / 100
            expectations.append(_expect("not_be_null", column, mostly=mostly))
            nulls = f"{1 - present:.1%}"
            checks.append(f"not null in >= {mostly:.0%} of rows")
        else:
            nulls = f"{1 - present:.1%}"
        numeric = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
        values = series.dropna()
        distinct = values.unique()
        if column == target and (not numeric or len(distinct) <= MAX_VALUE_SET):
            value_set = sorted(_plain(v) for v in distinct)
            expectations.append(_expect("be_in_set", column, value_set=value_set))
            checks.append(f"in {_short(value_set)}")
        elif numeric and len(values):
            expectations.append(
                _expect(
                    "be_in_type_list", column, type_list=["float64", "float32", "int64", "int32"]
                )
            )
            low, high = float(values.min()), float(values.max())
            margin = (high - low) * 0.5
            lowest = round(min(0.0, low) if low >= 0 else low - margin, 6)
            highest = round(high + margin, 6)
            expectations.append(_expect("be_between", column, min_value=lowest, max_value=highest))
            checks.append(f"number in [{lowest:g}, {highest:g}]")
        elif not numeric and 0 < len(distinct) <= MAX_VALUE_SET:
            # a boolean column keeps its type (GX compares True with True, not with "True")
            value_set = sorted(
                _plain(v) if pd.api.types.is_bool_dtype(series) else str(v) for v in distinct
            )
            expectations.append(_expect("be_in_set", column, value_set=value_set))
            checks.append(f"in {_short(value_set)}")
        elif not numeric:
            checks.append(f"{len(distinct)} distinct values: no value set")
            if len(distinct) == len(values) == len(frame):
                checks.append("every value distinct: an ID? leave it out with data.drop")
        kind = "target" if column == target else "numeric" if numeric else "categorical"
        inferred.append(Inferred(str(column), kind, nulls, tuple(checks)))
    suite = {
        "name": name,
        "expectations": expectations,
        "meta": {"generated_by": "pipeline suggest-expectations"},
    }
    return suite, inferred


def _expect(what: str, column: Any, **kwargs: Any) -> dict[str, Any]:
    return {"type": f"expect_column_values_to_{what}", "kwargs": {"column": str(column), **kwargs}}


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _short(values: list[Any]) -> str:
    shown = ", ".join(str(v) for v in values[:5])
    return "{" + shown + (f", ... ({len(values)} values)" if len(values) > 5 else "") + "}"


def render_suite(suite: dict[str, Any]) -> str:
    """GX's JSON, one expectation per line, so a reviewer reads (and diffs) it row by row."""
    rows = ",\n".join("    " + json.dumps(e) for e in suite["expectations"])
    meta = json.dumps(suite.get("meta", {}))
    return (
        f'{{\n  "name": {json.dumps(suite["name"])},\n  "meta": {meta},\n'
        f'  "expectations": [\n{rows}\n  ]\n}}\n'
    )
