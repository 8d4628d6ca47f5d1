"""Outcome tables and logs into per-arm units: columns, users, shares, fallbacks, bounds."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pipeline.ab import outcomes
from pipeline.ab.outcomes import from_table, read_outcomes
from pipeline.errors import ArtifactError, ConfigError
from tests.unit.ab.conftest import experiment


def test_a_csv_of_units_becomes_two_arms_in_file_order(tmp_path: Path) -> None:
    path = tmp_path / "o.csv"
    path.write_text("variant,outcome\na,1\nB,0\nb,true\nA,false\n")
    obs = read_outcomes(path, experiment())
    assert obs.a.outcomes.tolist() == [1, 0]
    assert obs.b.outcomes.tolist() == [0, 1]


def test_a_parquet_file_reads_like_the_csv(tmp_path: Path) -> None:
    frame = pd.DataFrame({"variant": ["a", "b", "b"], "outcome": [0, 1, 1]})
    frame.to_parquet(tmp_path / "o.parquet")
    obs = read_outcomes(tmp_path / "o.parquet", experiment())
    assert (obs.a.n, obs.b.n, int(obs.b.outcomes.sum())) == (1, 2, 2)


def test_rows_of_one_user_are_one_unit_and_a_user_in_both_arms_is_dropped() -> None:
    columns = {
        "user": ["u1", "u1", "u2", "u3", "u3"],
        "variant": ["a", "a", "b", "a", "b"],
        "outcome": [0, 1, 0, 1, 1],
    }
    obs = from_table(columns, experiment(), where="t")
    assert obs.a.outcomes.tolist() == [1]  # u1: any success counts
    assert obs.b.outcomes.tolist() == [0]
    assert obs.crossovers == 1
    assert any("both arms" in note for note in obs.notes)


def test_only_rows_of_the_analysed_share_count_and_fallbacks_are_dropped() -> None:
    columns = {
        "variant": ["a", "b", "b", "a"],
        "outcome": [1, 1, 1, 0],
        "share": [10, 10, 50, 50],
        "fallback": ["false", "false", "true", "0"],
    }
    obs = from_table(columns, experiment(share=50), where="t")
    assert (obs.a.n, obs.b.n) == (1, 0)
    assert obs.dropped_fallback == 1
    assert any("another share than 50" in note for note in obs.notes)


def test_timestamps_order_the_units(tmp_path: Path) -> None:
    columns = {
        "variant": ["a", "a", "a"],
        "outcome": [1, 0, 0],
        "ts": ["2026-01-01T00:00:03Z", "2026-01-01T00:00:01Z", "1767225602"],
    }
    obs = from_table(columns, experiment(), where="t")
    assert obs.a.outcomes.tolist() == [0, 0, 1]
    assert obs.a.times is not None and list(obs.a.times) == sorted(obs.a.times)


@pytest.mark.parametrize(
    ("columns", "words"),
    [
        ({"variant": ["a"]}, "no 'outcome' column"),
        ({"variant": ["c"], "outcome": [1]}, "row 2: variant 'c' is not a or b"),
        ({"variant": ["a"], "outcome": ["maybe"]}, "row 2: outcome 'maybe' is not 0/1"),
        ({"variant": ["a"], "outcome": [1], "ts": ["yesterday"]}, "row 2: ts 'yesterday'"),
        ({"variant": ["a"], "outcome": [1], "share": ["1e400"]}, "row 2: share"),
    ],
)
def test_a_bad_table_is_an_error_naming_the_row(columns: dict[str, list[str]], words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        from_table(columns, experiment(), where="o.csv")
    assert words in str(caught.value)


def test_files_that_are_too_big_or_not_tables_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "o.csv"
    path.write_text("variant,outcome\n" + "a,1\n" * 50)
    monkeypatch.setattr(outcomes, "MAX_FILE_BYTES", 100)
    with pytest.raises(ConfigError, match="at most 100 are read"):
        read_outcomes(path, experiment())
    monkeypatch.setattr(outcomes, "MAX_FILE_BYTES", 10**6)
    monkeypatch.setattr(outcomes, "MAX_UNITS", 10)
    with pytest.raises(ConfigError, match="more than 10 rows"):
        read_outcomes(path, experiment())
    (tmp_path / "o.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"\.csv or \.parquet"):
        read_outcomes(tmp_path / "o.json", experiment())
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(ArtifactError, match="not a readable table"):
        read_outcomes(tmp_path / "bad.parquet", experiment())


def test_log_lines_that_are_not_json_or_too_long_are_handled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "x.log"
    log.write_text(
        "starting\n{not json\n"
        '{"logger": "serving.exposure", "experiment": "other", "variant": "b", "share": 50,'
        ' "user": "u9"}\n'
        '{"logger": "serving.exposure", "experiment": "exp-test", "variant": "b", "share": 50,'
        ' "user": "u1", "request_id": "r1", "rows": 1, "predictions": [1], "ts": '
        '"2026-01-01T00:00:00.000Z"}\n'
    )
    obs = outcomes.from_logs([log], experiment())
    assert (obs.a.n, obs.b.n) == (0, 1)  # the other experiment's line is not ours
    monkeypatch.setattr(outcomes, "MAX_LINE_BYTES", 20)
    with pytest.raises(ConfigError, match="longer than"):
        outcomes.from_logs([log], experiment())
    with pytest.raises(ConfigError, match="does not exist"):
        outcomes.from_logs([tmp_path / "missing.log"], experiment())


def test_label_feedback_judges_one_row_predictions(tmp_path: Path) -> None:
    lines = [
        {"logger": "serving.exposure", "experiment": "exp-test", "variant": v, "share": 50,
         "user": f"u{i}", "request_id": f"r{i}", "rows": 1, "predictions": [p]}
        for i, (v, p) in enumerate([("a", 1), ("a", 0), ("b", 1), ("b", 1)])
    ] + [
        {"logger": "serving.feedback", "request_id": "r0", "label": 1},
        {"logger": "serving.feedback", "request_id": "r1", "label": 1},
        {"logger": "serving.feedback", "request_id": "r2", "label": 1},
        {"logger": "serving.feedback", "request_id": "nope", "label": 1},
    ]  # fmt: skip
    log = tmp_path / "judged.log"
    log.write_text("\n".join(json.dumps(line) for line in lines))
    obs = outcomes.from_logs([log], experiment(source="label"))
    assert obs.a.outcomes.tolist() == [1, 0]  # r0 right, r1 wrong
    assert obs.b.outcomes.tolist() == [1]  # r2 right; r3 never judged
    assert obs.users() == (2, 2)  # the sample-ratio check counts assigned users
