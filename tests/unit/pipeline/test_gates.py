"""Gate logic: thresholds, champion comparison with absolute and relative tolerances."""

from __future__ import annotations

from pipeline.config import Gate
from pipeline.ml.gates import evaluate, passed


def test_without_champion_only_thresholds_apply() -> None:
    rows = evaluate(
        gates={"roc_auc": Gate(threshold=0.9, min_absolute_change=0.0)},
        candidate={"roc_auc": 0.95},
        champion=None,
    )
    assert [r.gate for r in rows] == ["threshold"]
    assert passed(rows)


def test_threshold_below_fails() -> None:
    rows = evaluate(
        gates={"accuracy": Gate(threshold=0.99)}, candidate={"accuracy": 0.95}, champion=None
    )
    assert not passed(rows)
    assert rows[0].requirement == ">= 0.99"


def test_log_loss_is_lower_is_better_by_default() -> None:
    rows = evaluate(
        gates={"log_loss": Gate(threshold=0.3)}, candidate={"log_loss": 0.2}, champion=None
    )
    assert passed(rows) and rows[0].requirement == "<= 0.3"
    rows = evaluate(
        gates={"log_loss": Gate(threshold=0.3)}, candidate={"log_loss": 0.4}, champion=None
    )
    assert not passed(rows)


def test_absolute_tolerance_allows_a_small_regression_and_refuses_a_large_one() -> None:
    gate = {"roc_auc": Gate(min_absolute_change=-0.01)}
    assert passed(evaluate(gates=gate, candidate={"roc_auc": 0.955}, champion={"roc_auc": 0.96}))
    assert not passed(evaluate(gates=gate, candidate={"roc_auc": 0.94}, champion={"roc_auc": 0.96}))


def test_positive_absolute_change_demands_an_improvement() -> None:
    gate = {"f1": Gate(min_absolute_change=0.01)}
    assert not passed(evaluate(gates=gate, candidate={"f1": 0.905}, champion={"f1": 0.90}))
    assert passed(evaluate(gates=gate, candidate={"f1": 0.911}, champion={"f1": 0.90}))


def test_relative_tolerance_is_measured_against_the_champion() -> None:
    gate = {"f1": Gate(min_relative_change=-0.02)}
    assert passed(evaluate(gates=gate, candidate={"f1": 0.885}, champion={"f1": 0.90}))  # -1.7 %
    assert not passed(evaluate(gates=gate, candidate={"f1": 0.87}, champion={"f1": 0.90}))  # -3.3 %


def test_lower_is_better_flips_the_direction_of_change() -> None:
    gate = {"log_loss": Gate(min_absolute_change=-0.05)}
    assert passed(evaluate(gates=gate, candidate={"log_loss": 0.24}, champion={"log_loss": 0.20}))
    assert not passed(
        evaluate(gates=gate, candidate={"log_loss": 0.30}, champion={"log_loss": 0.20})
    )


def test_zero_champion_baseline_skips_the_relative_check_and_says_so() -> None:
    rows = evaluate(
        gates={"log_loss": Gate(min_relative_change=0.1, min_absolute_change=-0.01)},
        candidate={"log_loss": 0.005},
        champion={"log_loss": 0.0},
    )
    relative = next(r for r in rows if r.gate == "vs champion (rel)")
    assert relative.passed and "champion value is 0" in relative.note
    absolute = next(r for r in rows if r.gate == "vs champion (abs)")
    assert absolute.passed and absolute.champion == 0.0


def test_rows_carry_champion_and_candidate_values_for_the_table() -> None:
    rows = evaluate(
        gates={"accuracy": Gate(threshold=0.9, min_absolute_change=0.0)},
        candidate={"accuracy": 0.93},
        champion={"accuracy": 0.95},
    )
    comparison = rows[1]
    assert (comparison.champion, comparison.candidate, comparison.passed) == (0.95, 0.93, False)
