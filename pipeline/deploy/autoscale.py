"""The autoscaling policy: pure functions of numbers, no I/O (the loop is :mod:`.autoscaler`).

Replicas follow the request rate at the entry, not CPU: a model server's CPU says little about
how many requests wait in HAProxy's queue, and Swarm itself scales on nothing. The rule is the
Kubernetes HPA's for an external metric, with its default behaviour:

- ``recommended = clamp(ceil(rate / target_rps_per_replica), min_replicas, max_replicas)``,
  ``rate`` being the backend's requests per second over the last ``window_s`` (from counter
  deltas, so a restart of the entry, which resets its counters, only costs one window);
- up: at once, to the recommendation;
- down: only after every recommendation for ``scale_down_stabilisation_s`` was below the
  current count, and then one replica at a time (each further step waits another window);
- a current count outside the bounds (a hand edit, a changed topology) is brought back in at
  once.

Never to zero (``min_replicas >= 1``): at zero replicas the entry has no server, so the first
request after a quiet spell would get a 503, and there is no request rate to wake the scaler
(the rate at the entry is what it reads). Scale-to-zero needs a proxy that holds the request
while a task starts (KEDA's HTTP add-on, Knative's activator); HAProxy does not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pipeline.deploy.topology import Autoscale

__all__ = ["Decision", "Sample", "ScaleState", "decide", "recommend", "request_rate", "trim"]

Action = Literal["up", "down", "hold"]


@dataclass(frozen=True)
class Sample:
    """A reading of the backend's cumulative request counter at wall time ``at`` (seconds)."""

    at: float
    total: int


@dataclass(frozen=True)
class ScaleState:
    """What a decision remembers: since when every recommendation has been below the current
    count (None: not below now). Persisted between `pipeline autoscale --once` runs."""

    low_since: float | None = None


@dataclass(frozen=True)
class Decision:
    at: float
    current: int
    desired: int
    recommended: int | None  # None: no rate yet
    rate: float | None  # requests per second at the backend over the window
    action: Action
    reason: str


def trim(samples: Sequence[Sample], *, now: float, window_s: float) -> list[Sample]:
    """The samples the rate at ``now`` uses: those of the last ``window_s`` seconds, and none
    from before a counter reset (a counter that went down: the entry restarted)."""
    kept = [s for s in samples if now - s.at <= window_s + 1e-9]
    for i in range(len(kept) - 1, 0, -1):
        if kept[i].total < kept[i - 1].total:
            return kept[i:]
    return kept


def request_rate(samples: Sequence[Sample]) -> float | None:
    """Requests per second between the oldest and the newest sample; None with fewer than two
    samples or no time between them."""
    if len(samples) < 2:
        return None
    first, last = samples[0], samples[-1]
    seconds = last.at - first.at
    if seconds <= 0 or last.total < first.total:
        return None
    return (last.total - first.total) / seconds


def recommend(rate: float, policy: Autoscale) -> int:
    """``clamp(ceil(rate / target), min, max)``; a rate that is an exact multiple of the
    target is not rounded up by float noise."""
    wanted = math.ceil(rate / policy.target_rps_per_replica - 1e-9)
    return max(policy.min_replicas, min(policy.max_replicas, wanted))


def decide(
    policy: Autoscale, *, current: int, rate: float | None, now: float, state: ScaleState
) -> tuple[Decision, ScaleState]:
    """The next replica count for ``current`` replicas at ``rate`` (module docstring)."""

    def made(desired: int, action: Action, reason: str, recommended: int | None) -> Decision:
        return Decision(now, current, desired, recommended, rate, action, reason)

    low, high = policy.min_replicas, policy.max_replicas
    recommended = None if rate is None else recommend(rate, policy)
    if current < low:
        return made(low, "up", f"below min_replicas ({low})", recommended), ScaleState()
    if current > high:
        return made(high, "down", f"above max_replicas ({high})", recommended), ScaleState()
    if recommended is None:
        return made(current, "hold", "no rate yet (two counter readings needed)", None), state
    if recommended > current:
        reason = f"{rate:.1f} req/s needs {recommended} at {policy.target_rps_per_replica:g}/s each"
        return made(recommended, "up", reason, recommended), ScaleState()
    if recommended == current:
        return made(current, "hold", "at the recommendation", recommended), ScaleState()
    since = now if state.low_since is None else state.low_since
    quiet = now - since
    stabilisation = policy.scale_down_stabilisation_s
    if quiet + 1e-9 >= stabilisation:
        reason = f"below {current} for {quiet:.0f} s (stabilisation {stabilisation:g} s): one step"
        return made(current - 1, "down", reason, recommended), ScaleState(low_since=now)
    reason = f"stabilising: below {current} for {quiet:.0f} of {stabilisation:g} s"
    return made(current, "hold", reason, recommended), ScaleState(low_since=since)
