"""Experiments and observations built in memory, for the A/B unit tests."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.ab.decision import ArmData, Observations
from pipeline.ab.record import (
    Candidate,
    Event,
    EvidenceRef,
    Experiment,
    ImageRef,
    Metric,
    ModelRef,
)

CHAMPION = "sha256:" + "a" * 64
CANDIDATE = "sha256:" + "b" * 64


def experiment(**metric: Any) -> Experiment:
    """A running experiment at 50 %; ``metric`` overrides the Metric's fields."""
    fields: dict[str, Any] = {
        "method": "fixed",
        "baseline_rate": 0.1,
        "mde": 0.01,
        "sample_size_per_arm": 10_000,
        **metric,
    }
    share = int(fields.pop("share", 50))
    return Experiment(
        id="exp-test",
        status="running",
        share=share,
        champion=ImageRef(repository="127.0.0.1:5000/acme/model", digest=CHAMPION),
        candidate=Candidate(
            image=ImageRef(repository="127.0.0.1:5000/acme/model", digest=CANDIDATE),
            model=ModelRef(name="model", version="2", mlflow_run_id="run2"),
            evidence=EvidenceRef(digest="sha256:" + "e" * 64, tag="sha256-b.contract"),
        ),
        metric=Metric(**fields),
        history=[Event(action="start", share=share, at="2026-01-01T00:00:00Z", by="test")],
    )


def arm(n: int, successes: int, *, seed: int = 0) -> ArmData:
    """n units, ``successes`` of them successful, in a shuffled (seeded) arrival order."""
    outcomes = np.zeros(n, dtype=np.int8)
    outcomes[:successes] = 1
    np.random.default_rng(seed).shuffle(outcomes)
    return ArmData(outcomes=outcomes, times=np.arange(n, dtype=np.float64))


def observations(a: tuple[int, int], b: tuple[int, int]) -> Observations:
    return Observations(a=arm(*a, seed=1), b=arm(*b, seed=2), source="test")
