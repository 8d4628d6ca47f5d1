"""The shipped rules on simulated A/A experiments (fixed seed): how often they name a winner
when there is none. The full run (2,000 experiments, 20 looks) is `python -m
tools.ab_simulation`; this one is smaller, with bounds far from its expected values."""

from __future__ import annotations

import pytest

from tools.ab_simulation import simulate

pytestmark = pytest.mark.slow


def test_msprt_and_the_fixed_horizon_keep_false_winners_near_alpha_where_peeking_does_not() -> None:
    results = {
        r.method: r
        for r in simulate(experiments=300, looks=20, baseline=0.2, mde=0.05, effect=0.0, seed=11)
    }
    peeking, fixed, msprt = results["peeking z-test"], results["fixed"], results["msprt"]
    # expected: about 25 % for peeking, 5 % for the fixed horizon, at most 5 % for mSPRT
    assert peeking.winner_rate > 0.15, "the simulation no longer shows the cost of peeking"
    assert 0.01 <= fixed.winner_rate <= 0.10
    assert msprt.winner_rate <= 0.05
    assert msprt.undecided + fixed.undecided < 0.05 * 300  # the budget ends the experiments
