"""The tests' numbers against values published or computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.ab import stats
from pipeline.ab.stats import Arm


def test_1000_of_10000_vs_1100_of_10000_gives_z_2_31_and_p_0_021() -> None:
    test = stats.z_test(Arm(10_000, 1_000), Arm(10_000, 1_100))
    assert test.z == pytest.approx(2.3066, abs=1e-4)
    assert test.p_value == pytest.approx(0.02108, abs=1e-5)
    assert test.difference == pytest.approx(0.01)
    assert test.lift == pytest.approx(0.10)
    low, _ = test.difference_ci  # unpooled Wald: 0.01 +- 1.96 * 0.004335
    assert low == pytest.approx(0.01 - 1.959964 * math.sqrt(0.09 / 1e4 + 0.0979 / 1e4), abs=1e-9)
    assert test.lift_ci[0] < 0.10 < test.lift_ci[1]


def test_the_z_test_is_symmetric_and_zero_for_equal_rates() -> None:
    forward = stats.z_test(Arm(5_000, 400), Arm(4_000, 380))
    backward = stats.z_test(Arm(4_000, 380), Arm(5_000, 400))
    assert forward.z == pytest.approx(-backward.z)
    assert forward.p_value == pytest.approx(backward.p_value)
    assert stats.z_test(Arm(1_000, 100), Arm(1_000, 100)).p_value == pytest.approx(1.0)


def test_the_sample_size_matches_the_classic_formula_and_grows_as_the_effect_shrinks() -> None:
    # 10 % -> 11 %, alpha 0.05 two-sided, power 0.8: 14,751 per arm (Fleiss, no continuity
    # correction; G*Power's "two independent proportions" gives the same).
    assert stats.sample_size_per_arm(baseline=0.1, mde=0.01) == 14_751
    assert stats.sample_size_per_arm(baseline=0.1, mde=0.02) < 14_751 / 3
    assert stats.sample_size_per_arm(baseline=0.1, mde=0.01, power=0.9) > 14_751
    with pytest.raises(ValueError, match="strictly in"):
        stats.sample_size_per_arm(baseline=0.95, mde=0.1)


def test_srm_flags_a_broken_split_and_passes_a_fair_one() -> None:
    fair = stats.srm(9_020, 980, share_b=0.10)
    assert fair.p_value > 0.001
    broken = stats.srm(5_000, 4_500, share_b=0.5)  # B lost 10 % of its users
    assert broken.p_value < 1e-6
    assert broken.observed_b_share == pytest.approx(4_500 / 9_500)
    # chi2 by hand for (600, 400) at 50 %: (100^2/500) * 2 = 40
    assert stats.srm(600, 400, share_b=0.5).chi2 == pytest.approx(40.0)


def test_msprt_has_no_evidence_for_equal_rates_and_much_for_a_large_difference() -> None:
    equal = stats.msprt(Arm(20_000, 2_000), Arm(20_000, 2_000), tau=0.01)
    assert equal.e_value < 1
    assert equal.p_value == 1.0
    strong = stats.msprt(Arm(20_000, 2_000), Arm(20_000, 2_400), tau=0.01)
    assert strong.e_value > 1e4
    assert strong.difference_ci[0] > 0


def test_the_msprt_interval_is_wider_than_the_fixed_one_at_the_same_data() -> None:
    a, b = Arm(10_000, 1_000), Arm(10_000, 1_100)
    fixed, sequential = stats.z_test(a, b), stats.msprt(a, b, tau=0.01)
    assert sequential.difference_ci[0] < fixed.difference_ci[0]
    assert sequential.difference_ci[1] > fixed.difference_ci[1]
    # the known data: significant once (p 0.021), not enough for an always-valid 0.05
    assert 1 < sequential.e_value < 20


def test_msprt_arrays_agree_with_the_scalar_version() -> None:
    n = np.array([100, 1_000, 10_000])
    x_a, x_b = np.array([10, 100, 1_000]), np.array([15, 120, 1_100])
    arrays = stats.msprt_arrays(n, x_a, n, x_b, tau=0.02)
    for i in range(3):
        single = stats.msprt(Arm(int(n[i]), int(x_a[i])), Arm(int(n[i]), int(x_b[i])), tau=0.02)
        assert arrays[i] == pytest.approx(single.e_value)


def test_empty_or_degenerate_arms_give_no_evidence_rather_than_an_error() -> None:
    assert stats.msprt(Arm(50, 0), Arm(50, 0), tau=0.01).e_value == 1.0
    assert math.isnan(stats.z_test(Arm(50, 0), Arm(50, 0)).z)
    assert stats.srm(0, 0, share_b=0.3).p_value == 1.0
    with pytest.raises(ValueError):
        Arm(10, 11)


def test_p95_interpolates_like_numpy() -> None:
    assert stats.p95(list(range(1, 101))) == pytest.approx(95.05)
    assert math.isnan(stats.p95([]))
