"""The decision of ``pipeline ab decide``: ordered checks over the observations, one verdict.

1. **Sample-ratio mismatch** (chi-square of users per arm against the share): below the
   experiment's ``srm_threshold`` (0.001) the split or the logging is broken; the experiment
   stops and nothing else is read.
2. **Guardrails**: the candidate's 5xx rate and p95 latency may not exceed the champion's by
   more than the configured margins; a breach stops the experiment. Unmeasured guardrails never
   let a candidate be promoted (the verdict stays ``continue``) unless the caller waives them.
3. **The primary metric**: ``fixed``: nothing before each arm has the planned users, then one
   two-proportion z-test on exactly the first ``sample_size_per_arm`` users of each arm, so
   looking again later gives the same answer; ``msprt``: an e-value valid at every look.

Verdicts and exit codes (what CI gates on):

=========  ====  ===========================================================================
verdict    code  meaning
=========  ====  ===========================================================================
promote    0     the candidate is better: ``pipeline ab conclude --winner b``
continue   20    not enough evidence yet (the output says what is missing)
keep       21    the candidate is not better (or is worse): ``conclude --winner a``
keep       22    stopped: sample-ratio mismatch or a guardrail breach; the run is not evidence
=========  ====  ===========================================================================

The codes stay clear of the error codes (1-10, :mod:`pipeline.errors`), so a CI step can tell
"the experiment says keep" from "the command failed".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from pipeline.ab import stats
from pipeline.ab.record import Experiment, Guardrails, Metric

__all__ = [
    "EXIT_CODES",
    "ArmData",
    "Check",
    "Decision",
    "GuardrailData",
    "Health",
    "Observations",
    "decide",
]

Verdict = Literal["promote", "keep", "continue"]
EXIT_CODES = {"promote": 0, "continue": 20, "keep": 21, "stop": 22}


@dataclass(frozen=True)
class ArmData:
    """One arm's units in order of first exposure: 0/1 outcomes and (optionally) their times."""

    outcomes: NDArray[np.int8]
    times: NDArray[np.float64] | None = None

    @property
    def n(self) -> int:
        return int(self.outcomes.size)

    def arm(self, limit: int | None = None) -> stats.Arm:
        values = self.outcomes if limit is None else self.outcomes[:limit]
        return stats.Arm(n=int(values.size), successes=int(values.sum()))


@dataclass(frozen=True)
class Observations:
    a: ArmData
    b: ArmData
    source: str
    dropped_fallback: int = 0  # exposures served by A because B had no healthy task
    crossovers: int = 0  # users seen in both arms under one share (dropped; should be 0)
    notes: tuple[str, ...] = ()
    assigned: tuple[int, int] | None = None  # users per arm when units are not users

    def users(self) -> tuple[int, int]:
        """Users per arm: what the split assigned, so what the sample-ratio check counts."""
        return self.assigned if self.assigned is not None else (self.a.n, self.b.n)


@dataclass(frozen=True)
class Health:
    requests: int
    errors_5xx: int
    p95_ms: float

    @property
    def error_rate(self) -> float:
        return self.errors_5xx / self.requests if self.requests else math.nan


@dataclass(frozen=True)
class GuardrailData:
    a: Health
    b: Health
    source: str


@dataclass(frozen=True)
class Check:
    name: str
    status: Literal["pass", "fail", "wait", "skip"]
    detail: str


@dataclass(frozen=True)
class VariantSummary:
    variant: str
    units: int
    successes: int
    rate: float
    requests: int | None = None
    error_rate: float | None = None
    p95_ms: float | None = None


@dataclass(frozen=True)
class Decision:
    experiment: str
    method: str
    metric: str
    decision: Verdict
    reason: str
    exit_code: int
    checks: list[Check]
    variants: list[VariantSummary]
    winner: Literal["a", "b"] | None = None  # a significant difference, either way
    difference: float = math.nan
    difference_ci: tuple[float, float] = (math.nan, math.nan)
    lift: float = math.nan
    lift_ci: tuple[float, float] = (math.nan, math.nan)
    p_value: float = math.nan
    z: float | None = None
    e_value: float | None = None
    required_per_arm: int | None = None
    missing_per_arm: dict[str, int] = field(default_factory=dict)
    source: str = ""
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict (NaN and infinities become null)."""
        return _clean(asdict(self))  # type: ignore[no-any-return]


def decide(
    experiment: Experiment,
    observations: Observations,
    *,
    guardrails: GuardrailData | None,
    waive_guardrails: bool = False,
    extra_checks: tuple[Check, ...] = (),
) -> Decision:
    """The verdict for ``experiment`` on ``observations`` (see the module docstring)."""
    metric = experiment.metric
    checks = list(extra_checks)
    variants = _variants(observations, guardrails)
    base: dict[str, Any] = {
        "experiment": experiment.id,
        "method": metric.method,
        "metric": metric.name,
        "variants": variants,
        "source": observations.source,
        "notes": observations.notes,
    }

    def stop(reason: str) -> Decision:
        return Decision(
            decision="keep", reason=reason, exit_code=EXIT_CODES["stop"], checks=checks, **base
        )

    if any(c.status == "fail" for c in checks):
        return stop("; ".join(c.detail for c in checks if c.status == "fail"))

    share = experiment.share if experiment.running else _last_share(experiment)
    n_a, n_b = observations.users()
    ratio = stats.srm(n_a, n_b, share_b=share / 100)
    srm_text = (
        f"users A {n_a:,} / B {n_b:,}: B has {_pct(ratio.observed_b_share)} for a share of "
        f"{share} %; chi2 {ratio.chi2:.2f}, p {ratio.p_value:.2g} (stop below "
        f"{experiment.srm_threshold:g})"
    )
    if ratio.p_value < experiment.srm_threshold:
        checks.append(Check("sample ratio", "fail", srm_text))
        return stop(
            f"sample-ratio mismatch (p {ratio.p_value:.2g} < {experiment.srm_threshold:g}): the "
            "split or the logging is broken, so the metric is not evidence; fix it and start a "
            "new experiment"
        )
    checks.append(Check("sample ratio", "pass", srm_text))

    guard = _guardrails(experiment.guardrails, guardrails)
    checks.append(guard)
    if guard.status == "fail":
        return stop(f"guardrail breached: {guard.detail}")

    primary = _fixed if metric.method == "fixed" else _msprt
    verdict, reason, check, numbers = primary(metric, observations)
    checks.append(check)
    winner = numbers.pop("winner", None)
    if verdict == "promote" and guard.status != "pass" and not waive_guardrails:
        verdict = "continue"
        reason = (
            f"{reason}, but the guardrails are not measured ({guard.detail}): pass --prometheus "
            "or --guardrails FILE, or --waive-guardrails"
        )
    return Decision(
        decision=verdict,
        reason=reason,
        exit_code=EXIT_CODES[verdict],
        checks=checks,
        winner=winner,
        **base,
        **numbers,
    )


def _fixed(metric: Metric, obs: Observations) -> tuple[Verdict, str, Check, dict[str, Any]]:
    horizon = metric.sample_size_per_arm
    missing = {"a": max(0, horizon - obs.a.n), "b": max(0, horizon - obs.b.n)}
    numbers: dict[str, Any] = {"required_per_arm": horizon, "missing_per_arm": missing}
    if missing["a"] or missing["b"]:
        need = ", ".join(
            f"{v.upper()} needs {m:,} more" for v, m in missing.items() if m
        )  # the refusal says what is missing
        detail = f"fixed horizon {horizon:,} users per arm not reached: {need}"
        observed = _z_numbers(obs.a.arm(), obs.b.arm(), metric.alpha)
        numbers.update({k: v for k, v in observed.items() if k not in ("p_value", "z")})
        return "continue", detail, Check("primary metric", "wait", detail), numbers
    a, b = obs.a.arm(horizon), obs.b.arm(horizon)
    numbers.update(_z_numbers(a, b, metric.alpha))
    p, diff = numbers["p_value"], numbers["difference"]
    text = (
        f"{metric.name}: A {_pct(a.rate)} vs B {_pct(b.rate)} on the first {horizon:,} users "
        f"per arm; z {numbers['z']:.2f}, p {p:.3g} (alpha {metric.alpha:g})"
    )
    if p < metric.alpha:
        numbers["winner"] = "b" if diff > 0 else "a"
    if p < metric.alpha and diff > 0:
        return "promote", f"B is better: {text}", Check("primary metric", "pass", text), numbers
    if p < metric.alpha:
        return "keep", f"B is worse: {text}", Check("primary metric", "fail", text), numbers
    reason = f"no significant difference at the planned horizon: {text}"
    return "keep", reason, Check("primary metric", "fail", text), numbers


def _msprt(metric: Metric, obs: Observations) -> tuple[Verdict, str, Check, dict[str, Any]]:
    a, b = obs.a.arm(), obs.b.arm()
    test = stats.msprt(a, b, tau=metric.mde, alpha=metric.alpha)
    numbers: dict[str, Any] = {
        "difference": test.difference,
        "difference_ci": test.difference_ci,
        "lift": test.lift,
        "lift_ci": test.lift_ci,
        "p_value": test.p_value,
        "e_value": test.e_value,
    }
    threshold = 1 / metric.alpha
    text = (
        f"{metric.name}: A {_pct(a.rate)} ({a.n:,} users) vs B {_pct(b.rate)} ({b.n:,}); "
        f"e-value {test.e_value:.3g} (decides at {threshold:g}), always-valid p {test.p_value:.3g}"
    )
    low = min(a.n, b.n)
    if low < metric.min_users_per_arm:
        missing = {v: max(0, metric.min_users_per_arm - n) for v, n in (("a", a.n), ("b", b.n))}
        numbers["missing_per_arm"] = missing
        detail = f"fewer than {metric.min_users_per_arm:,} users in an arm: {text}"
        return "continue", detail, Check("primary metric", "wait", detail), numbers
    if test.e_value >= threshold:
        numbers["winner"] = "b" if test.difference > 0 else "a"
    if test.e_value >= threshold and test.difference > 0:
        return "promote", f"B is better: {text}", Check("primary metric", "pass", text), numbers
    if test.e_value >= threshold:
        return "keep", f"B is worse: {text}", Check("primary metric", "fail", text), numbers
    budget = metric.max_users_per_arm
    if budget is not None and low >= budget:
        reason = f"no winner within the budget of {budget:,} users per arm: {text}"
        return "keep", reason, Check("primary metric", "fail", text), numbers
    if budget is not None:
        numbers["missing_per_arm"] = {"a": max(0, budget - a.n), "b": max(0, budget - b.n)}
    return "continue", f"no winner yet: {text}", Check("primary metric", "wait", text), numbers


def _guardrails(limits: Guardrails, data: GuardrailData | None) -> Check:
    if data is None:
        return Check("guardrails", "skip", "no 5xx or latency measurements given")
    a, b = data.a, data.b
    if min(a.requests, b.requests) < limits.min_requests:
        return Check(
            "guardrails",
            "wait",
            f"fewer than {limits.min_requests} requests in an arm (A {a.requests}, "
            f"B {b.requests}; {data.source})",
        )
    problems = []
    allowed_errors = a.error_rate + limits.max_5xx_rate_increase
    if b.error_rate > allowed_errors:
        problems.append(
            f"5xx rate B {_pct(b.error_rate)} > A {_pct(a.error_rate)} + "
            f"{_pct(limits.max_5xx_rate_increase)}"
        )
    allowed_p95 = a.p95_ms * (1 + limits.max_p95_latency_increase)
    allowed_p95 += limits.max_p95_latency_increase_ms
    if b.p95_ms > allowed_p95:
        problems.append(
            f"p95 B {b.p95_ms:.1f} ms > {allowed_p95:.1f} ms allowed (A {a.p95_ms:.1f})"
        )
    summary = (
        f"5xx A {_pct(a.error_rate)} B {_pct(b.error_rate)}; p95 A {a.p95_ms:.1f} ms "
        f"B {b.p95_ms:.1f} ms ({data.source})"
    )
    if problems:
        return Check("guardrails", "fail", "; ".join(problems) + f" [{summary}]")
    return Check("guardrails", "pass", summary)


def _z_numbers(a: stats.Arm, b: stats.Arm, alpha: float) -> dict[str, Any]:
    test = stats.z_test(a, b, alpha=alpha)
    return {
        "difference": test.difference,
        "difference_ci": test.difference_ci,
        "lift": test.lift,
        "lift_ci": test.lift_ci,
        "p_value": test.p_value,
        "z": test.z,
    }


def _variants(obs: Observations, data: GuardrailData | None) -> list[VariantSummary]:
    rows = []
    for name, arm_data in (("a", obs.a), ("b", obs.b)):
        arm = arm_data.arm()
        health = None if data is None else (data.a if name == "a" else data.b)
        rows.append(
            VariantSummary(
                variant=name,
                units=arm.n,
                successes=arm.successes,
                rate=arm.rate,
                requests=None if health is None else health.requests,
                error_rate=None if health is None else health.error_rate,
                p95_ms=None if health is None else health.p95_ms,
            )
        )
    return rows


def _last_share(experiment: Experiment) -> int:
    """The share the data was collected under, for a stopped experiment: the newest non-zero."""
    for event in experiment.history:
        if event.share > 0:
            return event.share
    raise ValueError(f"experiment {experiment.id} never had a share above 0")


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value * 100:.2f} %"


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value
