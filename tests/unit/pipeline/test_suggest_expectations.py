"""`pipeline suggest-expectations`: a starter suite that passes on the data it came from (checked
by Great Expectations itself), never overwrites a suite unasked, and shows what it inferred."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from palmerpenguins import load_penguins
from sklearn.datasets import load_diabetes
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.ml.data_checks import suggest_suite, validate_raw


def _passes(frame: pd.DataFrame, target: str, tmp_path: Path) -> dict[str, object]:
    suite, _ = suggest_suite(frame, target=target, name="suggested")
    path = tmp_path / "suite.json"
    path.write_text(__import__("json").dumps(suite))
    assert validate_raw(frame, suite_path=path, docs_dir=tmp_path / "docs") == len(
        suite["expectations"]
    )
    return suite


def test_a_suite_suggested_from_a_table_with_nulls_and_text_passes_on_that_table(
    tmp_path: Path,
) -> None:
    frame = load_penguins()
    frame.loc[:40, "island"] = None  # a text column with many nulls, too
    suite = _passes(frame, "species", tmp_path)
    by_column = {}
    for e in suite["expectations"]:  # type: ignore[attr-defined]
        by_column.setdefault(e["kwargs"].get("column"), []).append(e)
    sex = {e["type"]: e["kwargs"] for e in by_column["sex"]}
    assert 0.85 < sex["expect_column_values_to_not_be_null"]["mostly"] < 0.97
    assert sex["expect_column_values_to_be_in_set"]["value_set"] == ["female", "male"]
    assert (
        "mostly"
        not in {e["type"]: e["kwargs"] for e in by_column["species"]}[
            "expect_column_values_to_not_be_null"
        ]
    )


def test_a_suite_suggested_from_a_regression_table_passes_on_it(tmp_path: Path) -> None:
    frame = load_diabetes(as_frame=True, scaled=False).frame
    frame.loc[::7, "bmi"] = np.nan
    _passes(frame, "target", tmp_path)


def test_the_command_prints_the_table_and_refuses_to_overwrite_without_force(
    template_root: Path, tmp_path: Path
) -> None:
    raw = yaml.safe_load((template_root / "params.yaml").read_text())
    raw["data"].update(source="builtin:penguins", target="species", expectations="missing.json")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    output = tmp_path / "penguins.json"
    runner = CliRunner()
    args = ["suggest-expectations", "--output", str(output), "--params", str(params)]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "island" in first.output and "categorical" in first.output
    assert "not null in >= " in first.output and output.is_file()
    written = output.read_text()
    output.write_text(written + " ")
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--force" in again.output
    assert output.read_text() == written + " "
    forced = runner.invoke(app, [*args, "--force"])
    assert forced.exit_code == 0 and output.read_text() == written


def test_a_boolean_column_keeps_its_type_and_an_id_column_is_pointed_out(tmp_path: Path) -> None:
    frame = load_penguins().dropna().reset_index(drop=True)
    frame["tagged"] = frame.index % 3 == 0  # a bool column, as read from a CSV of True/False
    frame["band"] = [f"B-{i:04d}" for i in range(len(frame))]  # an ID: every value distinct
    suite = _passes(frame, "species", tmp_path)  # GX compares True with True, not "True"
    tagged = [e for e in suite["expectations"] if e["kwargs"].get("column") == "tagged"]  # type: ignore[attr-defined]
    assert {"type": "expect_column_values_to_be_in_set",
            "kwargs": {"column": "tagged", "value_set": [False, True]}} in tagged  # fmt: skip
    _, inferred = suggest_suite(frame, target="species", name="s")
    band = next(i for i in inferred if i.column == "band")
    assert any("an ID?" in check and "data.drop" in check for check in band.checks)
