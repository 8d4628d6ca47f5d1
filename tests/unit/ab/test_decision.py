"""The order of the checks and the verdicts CI gates on."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.ab.decision import (
    EXIT_CODES,
    ArmData,
    Check,
    GuardrailData,
    Health,
    Observations,
    decide,
)
from tests.unit.ab.conftest import arm, experiment, observations

HEALTHY = GuardrailData(
    a=Health(requests=5_000, errors_5xx=2, p95_ms=8.0),
    b=Health(requests=5_000, errors_5xx=3, p95_ms=8.5),
    source="test",
)


def test_the_known_fixture_promotes_at_the_fixed_horizon_with_z_2_31() -> None:
    verdict = decide(
        experiment(), observations((10_000, 1_000), (10_000, 1_100)), guardrails=HEALTHY
    )
    assert verdict.decision == "promote"
    assert verdict.exit_code == 0
    assert verdict.z == pytest.approx(2.31, abs=0.005)
    assert verdict.p_value == pytest.approx(0.021, abs=0.0005)
    assert verdict.winner == "b"
    assert [c.name for c in verdict.checks] == ["sample ratio", "guardrails", "primary metric"]


def test_the_fixed_test_refuses_before_the_horizon_and_says_what_is_missing() -> None:
    verdict = decide(
        experiment(sample_size_per_arm=14_751),
        observations((10_000, 1_000), (9_900, 1_100)),
        guardrails=HEALTHY,
    )
    assert verdict.decision == "continue"
    assert verdict.exit_code == EXIT_CODES["continue"] == 20
    assert verdict.missing_per_arm == {"a": 4_751, "b": 4_851}
    assert "A needs 4,751 more, B needs 4,851 more" in verdict.reason
    assert verdict.p_value != verdict.p_value  # nan: no p-value before the horizon


def test_the_fixed_test_uses_only_the_first_horizon_users_so_later_looks_agree() -> None:
    rule = experiment(sample_size_per_arm=1_000)
    rng = np.random.default_rng(3)
    a = (rng.random(5_000) < 0.10).astype(np.int8)
    b = (rng.random(5_000) < 0.10).astype(np.int8)
    answers = set()
    for n in (1_000, 2_000, 5_000):
        obs = Observations(a=ArmData(a[:n]), b=ArmData(b[:n]), source="test")
        verdict = decide(rule, obs, guardrails=HEALTHY)
        answers.add((verdict.decision, round(verdict.p_value, 12)))
    assert len(answers) == 1, f"looking later changed the fixed-horizon answer: {answers}"


def test_a_significantly_worse_candidate_is_kept_out_and_named_the_loser() -> None:
    verdict = decide(experiment(), observations((10_000, 1_100), (10_000, 950)), guardrails=HEALTHY)
    assert (verdict.decision, verdict.exit_code, verdict.winner) == ("keep", 21, "a")
    assert verdict.reason.startswith("B is worse")


def test_no_difference_at_the_horizon_keeps_the_champion_without_a_winner() -> None:
    verdict = decide(
        experiment(), observations((10_000, 1_000), (10_000, 1_010)), guardrails=HEALTHY
    )
    assert (verdict.decision, verdict.exit_code, verdict.winner) == ("keep", 21, None)


def test_a_broken_split_is_stopped_by_the_srm_check_before_the_metric_is_read() -> None:
    verdict = decide(
        experiment(), observations((10_000, 1_000), (9_000, 1_500)), guardrails=HEALTHY
    )
    assert verdict.decision == "keep"
    assert verdict.exit_code == EXIT_CODES["stop"] == 22
    assert "sample-ratio mismatch" in verdict.reason
    assert [c.name for c in verdict.checks] == ["sample ratio"]


def test_the_srm_check_uses_the_share_not_an_even_split() -> None:
    fair_at_10 = decide(
        experiment(share=10, sample_size_per_arm=100),
        observations((9_000, 900), (1_000, 100)),
        guardrails=HEALTHY,
    )
    assert fair_at_10.checks[0].status == "pass"


def test_a_candidate_with_more_5xx_is_stopped_by_the_guardrail() -> None:
    bad = GuardrailData(
        a=Health(requests=5_000, errors_5xx=5, p95_ms=8.0),
        b=Health(requests=5_000, errors_5xx=60, p95_ms=8.0),
        source="test",
    )
    verdict = decide(experiment(), observations((10_000, 1_000), (10_000, 1_300)), guardrails=bad)
    assert (verdict.decision, verdict.exit_code) == ("keep", 22)
    assert "5xx rate B 1.20 %" in verdict.reason


def test_a_slower_candidate_is_stopped_by_the_latency_guardrail() -> None:
    slow = GuardrailData(
        a=Health(requests=5_000, errors_5xx=0, p95_ms=10.0),
        b=Health(requests=5_000, errors_5xx=0, p95_ms=18.0),  # allowed: 10 * 1.25 + 5 = 17.5
        source="test",
    )
    verdict = decide(experiment(), observations((10_000, 1_000), (10_000, 1_300)), guardrails=slow)
    assert verdict.exit_code == 22
    assert "p95 B 18.0 ms > 17.5 ms" in verdict.reason


def test_without_guardrail_numbers_a_winner_is_not_promoted_unless_waived() -> None:
    obs = observations((10_000, 1_000), (10_000, 1_100))
    unmeasured = decide(experiment(), obs, guardrails=None)
    assert (unmeasured.decision, unmeasured.exit_code) == ("continue", 20)
    assert "guardrails are not measured" in unmeasured.reason
    waived = decide(experiment(), obs, guardrails=None, waive_guardrails=True)
    assert waived.decision == "promote"


def test_msprt_waits_for_the_minimum_then_decides_on_strong_evidence() -> None:
    rule = experiment(method="msprt", min_users_per_arm=500)
    early = decide(rule, observations((300, 30), (300, 60)), guardrails=HEALTHY)
    assert early.decision == "continue"
    assert early.missing_per_arm == {"a": 200, "b": 200}
    strong = decide(rule, observations((20_000, 2_000), (20_000, 2_500)), guardrails=HEALTHY)
    assert strong.decision == "promote"
    assert strong.e_value is not None and strong.e_value >= 20


def test_msprt_reaching_its_budget_without_a_winner_keeps_the_champion() -> None:
    rule = experiment(method="msprt", max_users_per_arm=10_000)
    obs = observations((10_000, 1_000), (10_000, 1_020))
    assert decide(rule, obs, guardrails=HEALTHY).decision == "keep"
    under = decide(experiment(method="msprt", max_users_per_arm=20_000), obs, guardrails=HEALTHY)
    assert under.decision == "continue"
    assert under.missing_per_arm == {"a": 10_000, "b": 10_000}


def test_a_failed_precondition_stops_the_experiment() -> None:
    verdict = decide(
        experiment(),
        observations((10_000, 1_000), (10_000, 1_100)),
        guardrails=HEALTHY,
        extra_checks=(Check("champion", "fail", "the champion changed"),),
    )
    assert (verdict.decision, verdict.exit_code) == ("keep", 22)


def test_the_json_form_has_no_nan_and_names_every_field() -> None:
    verdict = decide(experiment(), observations((100, 10), (100, 12)), guardrails=None)
    data = verdict.to_json()
    assert data["p_value"] is None  # nan before the horizon
    assert {"decision", "exit_code", "variants", "checks", "lift", "lift_ci"} <= set(data)
    assert data["variants"][0]["units"] == 100


def test_arm_data_counts_its_units() -> None:
    assert arm(10, 3).arm().successes == 3
    assert arm(10, 3).arm(limit=0).n == 0
