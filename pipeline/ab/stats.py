"""The statistics of an A/B experiment, as pure functions of counts (no I/O, no state).

- :func:`srm`: the sample-ratio mismatch check, Pearson's chi-square of the users each arm got
  against the share the split promised. A mismatch means the split or the logging is broken, so
  no other number of the experiment can be trusted.
- :func:`z_test`: the fixed-horizon two-proportion z-test (pooled standard error for the test,
  unpooled for the interval), with :func:`sample_size_per_arm` for its horizon. Valid once, at
  the planned sample size: looking at it every day and stopping when it says "significant" is
  what inflates false winners (see ``tools/ab_simulation.py``).
- :func:`msprt`: the mixture sequential probability ratio test (Johari, Pekelis, Walsh, "Always
  valid inference", 2017): a normal mixture N(0, tau^2) over the difference of the two rates
  gives an e-value that may be checked at every look; rejecting when it reaches 1/alpha keeps
  the false-winner rate at most alpha however often one looks. Its confidence interval is the
  matching confidence sequence.

The array functions (``*_arrays``) broadcast over numpy arrays: the A/A simulation runs
thousands of experiments through exactly the code the decision uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats as sps

__all__ = [
    "Arm",
    "Msprt",
    "Srm",
    "ZTest",
    "msprt",
    "msprt_arrays",
    "p95",
    "sample_size_per_arm",
    "srm",
    "z_test",
    "z_test_arrays",
]

Floats = NDArray[np.float64]


@dataclass(frozen=True)
class Arm:
    """One arm's units (users) and how many of them had the outcome."""

    n: int
    successes: int

    def __post_init__(self) -> None:
        if self.n < 0 or not 0 <= self.successes <= self.n:
            raise ValueError(f"an arm needs 0 <= successes <= n (got {self.successes}/{self.n})")

    @property
    def rate(self) -> float:
        return self.successes / self.n if self.n else math.nan


@dataclass(frozen=True)
class Srm:
    chi2: float
    p_value: float
    expected_b_share: float  # the share of units B should have (0..1)
    observed_b_share: float


def srm(n_a: int, n_b: int, *, share_b: float) -> Srm:
    """Chi-square goodness of fit (1 degree of freedom) of (n_a, n_b) to (1 - share_b, share_b)."""
    if not 0 < share_b < 1:
        raise ValueError(f"share_b must be strictly between 0 and 1 (got {share_b})")
    total = n_a + n_b
    if total == 0:
        return Srm(chi2=0.0, p_value=1.0, expected_b_share=share_b, observed_b_share=math.nan)
    expected_a, expected_b = total * (1 - share_b), total * share_b
    chi2 = (n_a - expected_a) ** 2 / expected_a + (n_b - expected_b) ** 2 / expected_b
    return Srm(
        chi2=chi2,
        p_value=float(sps.chi2.sf(chi2, df=1)),
        expected_b_share=share_b,
        observed_b_share=n_b / total,
    )


@dataclass(frozen=True)
class ZTest:
    z: float
    p_value: float  # two-sided
    difference: float  # rate_b - rate_a
    difference_ci: tuple[float, float]
    lift: float  # (rate_b - rate_a) / rate_a
    lift_ci: tuple[float, float]


def z_test_arrays(
    n_a: ArrayLike, x_a: ArrayLike, n_b: ArrayLike, x_b: ArrayLike
) -> tuple[Floats, Floats]:
    """(z, two-sided p) of the pooled two-proportion z-test, elementwise; nan where undefined."""
    na, xa, nb, xb = (np.asarray(v, dtype=np.float64) for v in (n_a, x_a, n_b, x_b))
    with np.errstate(divide="ignore", invalid="ignore"):
        pooled = (xa + xb) / (na + nb)
        se = np.sqrt(pooled * (1 - pooled) * (1 / na + 1 / nb))
        z = (xb / nb - xa / na) / se
    z = np.where(se > 0, z, np.nan)
    return z, 2 * sps.norm.sf(np.abs(z))


def z_test(a: Arm, b: Arm, *, alpha: float = 0.05) -> ZTest:
    """The two-sided pooled z-test of rate_b - rate_a, with (1 - alpha) intervals for the
    difference (unpooled Wald) and for the relative lift (delta method on the log ratio)."""
    z, p = (float(v) for v in z_test_arrays(a.n, a.successes, b.n, b.successes))
    q = float(sps.norm.ppf(1 - alpha / 2))
    diff = b.rate - a.rate
    se = math.sqrt(_variance(a) + _variance(b)) if a.n and b.n else math.nan
    return ZTest(
        z=z,
        p_value=p,
        difference=diff,
        difference_ci=(diff - q * se, diff + q * se),
        lift=_lift(a, b),
        lift_ci=_lift_ci(a, b, q),
    )


def sample_size_per_arm(
    *, baseline: float, mde: float, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Users per arm for a two-sided z-test at ``alpha`` to detect ``baseline -> baseline + mde``
    with probability ``power`` (equal arms; the classic formula, as in Evan Miller's calculator).
    Unequal arms with at least this many users each have at least this power."""
    p1, p2 = baseline, baseline + mde
    if not (0 < p1 < 1 and 0 < p2 < 1) or mde == 0:
        raise ValueError(
            f"baseline {baseline} and baseline + mde {p2} must both lie strictly in (0, 1), "
            "and mde must not be 0"
        )
    za, zb = sps.norm.ppf(1 - alpha / 2), sps.norm.ppf(power)
    mean = (p1 + p2) / 2
    numerator = za * math.sqrt(2 * mean * (1 - mean)) + zb * math.sqrt(
        p1 * (1 - p1) + p2 * (1 - p2)
    )
    needed: float = float(numerator) ** 2 / mde**2
    return math.ceil(needed)


@dataclass(frozen=True)
class Msprt:
    e_value: float  # the mixture likelihood ratio Lambda; reject H0 when >= 1 / alpha
    p_value: float  # min(1, 1 / Lambda): valid at this look, whenever it is taken
    difference: float
    difference_ci: tuple[float, float]  # the (1 - alpha) confidence sequence at this look
    lift: float
    lift_ci: tuple[float, float]


def msprt_arrays(
    n_a: ArrayLike, x_a: ArrayLike, n_b: ArrayLike, x_b: ArrayLike, *, tau: float
) -> Floats:
    """The mSPRT e-value Lambda for H0: rate_a == rate_b, elementwise.

    With the difference estimate d and its variance V under H0 (pooled rate),
    Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 d^2 / (2 V (V + tau^2))). Where V is 0 (no
    successes, or only successes, in both arms) there is no evidence: Lambda = 1.
    """
    na, xa, nb, xb = (np.asarray(v, dtype=np.float64) for v in (n_a, x_a, n_b, x_b))
    t2 = tau * tau
    with np.errstate(divide="ignore", invalid="ignore"):
        pooled = (xa + xb) / (na + nb)
        v = pooled * (1 - pooled) * (1 / na + 1 / nb)
        d = xb / nb - xa / na
        log_lambda = 0.5 * np.log(v / (v + t2)) + t2 * d * d / (2 * v * (v + t2))
    result: Floats = np.where(v > 0, np.exp(np.minimum(log_lambda, 700.0)), 1.0)
    return result


def msprt(a: Arm, b: Arm, *, tau: float, alpha: float = 0.05) -> Msprt:
    """The mSPRT at the current look, and the always-valid (1 - alpha) confidence sequence for
    the difference: d +- sqrt(V (V + tau^2) / tau^2 * (2 log(1/alpha) + log((V + tau^2) / V)))
    with V the unpooled variance of d."""
    if tau <= 0:
        raise ValueError(f"tau must be positive (got {tau})")
    e_value = float(msprt_arrays(a.n, a.successes, b.n, b.successes, tau=tau))
    diff = b.rate - a.rate
    v = _variance(a) + _variance(b) if a.n and b.n else math.nan
    t2 = tau * tau
    if v > 0:
        half = math.sqrt(v * (v + t2) / t2 * (2 * math.log(1 / alpha) + math.log((v + t2) / v)))
    else:
        half = math.inf
    low, high = diff - half, diff + half
    base = a.rate
    lift_ci = (low / base, high / base) if base > 0 else (math.nan, math.nan)
    return Msprt(
        e_value=e_value,
        p_value=min(1.0, 1.0 / e_value),
        difference=diff,
        difference_ci=(low, high),
        lift=_lift(a, b),
        lift_ci=lift_ci,
    )


def p95(latencies_ms: ArrayLike) -> float:
    """The 95th percentile (linear interpolation, numpy's default); nan for no values."""
    values = np.asarray(latencies_ms, dtype=np.float64)
    return float(np.percentile(values, 95)) if values.size else math.nan


def _variance(arm: Arm) -> float:
    return arm.rate * (1 - arm.rate) / arm.n


def _lift(a: Arm, b: Arm) -> float:
    return (b.rate - a.rate) / a.rate if a.n and b.n and a.rate > 0 else math.nan


def _lift_ci(a: Arm, b: Arm, q: float) -> tuple[float, float]:
    if not (a.n and b.n and a.successes and b.successes):
        return (math.nan, math.nan)
    log_ratio = math.log(b.rate / a.rate)
    se = math.sqrt(
        (1 - a.rate) / (a.n * a.rate) + (1 - b.rate) / (b.n * b.rate)
    )  # delta method on log(rate_b / rate_a)
    return (math.exp(log_ratio - q * se) - 1, math.exp(log_ratio + q * se) - 1)
