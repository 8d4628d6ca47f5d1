"""The ``experiment:`` block of ``deploy/<env>.yaml``: one typed record, validated on read.

Written only by ``pipeline ab start | ramp | stop | conclude`` (:mod:`.lifecycle`), read by
``pipeline ab decide``/``report`` and by ``pipeline reconcile``, which turns a running
experiment into a second model service and the entry's split. Every field is bounded: the
id, the header and the cookie name end up inside the HAProxy configuration, so their
patterns admit nothing a config line could be bent with.

```yaml
experiment:
  id: production-20261129-3fa2c1     # the hashing salt: a new id reshuffles users
  status: running                    # running | stopped | concluded
  share: 10                          # % of buckets (users) on the candidate (B)
  champion: {repository: ..., digest: sha256:...}   # A when the experiment started
  candidate:                         # B: image by digest, its model, its contract evidence
    image: {repository: ..., digest: sha256:...}
    model: {name: ..., version: '5', mlflow_run_id: ...}
    evidence: {digest: sha256:..., tag: sha256-....contract}
  split: {user_header: X-User-Id, cookie: ab_uid}
  metric: {name: conversion, source: outcome, method: msprt, alpha: 0.05, ...}
  guardrails: {max_5xx_rate_increase: 0.005, max_p95_latency_increase: 0.25, ...}
  srm_threshold: 0.001
  winner: null                       # a | b once concluded
  history:                           # newest first, one entry per command
    - {action: start, share: 10, at: '2026-11-29T10:00:00Z', by: octocat, note: ''}
```
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.errors import ConfigError

__all__ = [
    "Candidate",
    "Event",
    "Experiment",
    "Guardrails",
    "ImageRef",
    "Metric",
    "ModelRef",
    "Split",
    "validated",
]

EXPERIMENT_ID = r"^[a-z0-9][a-z0-9._-]{0,62}$"
DIGEST = r"^sha256:[0-9a-f]{64}$"


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], /, **values: Any) -> M:
    """``model(**values)``, or a one-line ConfigError naming each bad field and its value."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or model.__name__}: "
            f"{e['msg'].removeprefix('Value error, ')} (got {e.get('input')!r})"
            for e in exc.errors()
        )
        raise ConfigError(f"{model.__name__.lower()}: {problems}") from None


class ImageRef(_Entry):
    repository: str = Field(min_length=1, max_length=255)
    digest: str = Field(pattern=DIGEST)


class ModelRef(_Entry):
    name: str = Field(min_length=1, max_length=255)
    version: str = Field(min_length=1, max_length=64)
    mlflow_run_id: str = Field(max_length=64)


class EvidenceRef(_Entry):
    digest: str = Field(pattern=DIGEST)
    tag: str = Field(min_length=1, max_length=255)
    signer: str | None = Field(default=None, max_length=255)  # the key that signed it


class Candidate(_Entry):
    image: ImageRef
    model: ModelRef
    evidence: EvidenceRef


class Split(_Entry):
    """How the entry finds the user: a header, else a cookie it sets for anonymous callers."""

    user_header: str = Field(default="X-User-Id", pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")
    cookie: str = Field(default="ab_uid", pattern=r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$")
    cookie_max_age_days: int = Field(default=90, ge=1, le=400)


class Metric(_Entry):
    """The primary metric (a proportion per user) and how it is tested.

    ``source: outcome``: a user succeeded when any of their outcomes is positive (``POST
    /feedback`` with ``outcome``, or a CSV/Parquet). ``source: label``: the unit is a judged
    prediction, successful when the true label sent back equals what was predicted.
    """

    name: str = Field(default="conversion", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    source: Literal["outcome", "label"] = "outcome"
    method: Literal["msprt", "fixed"] = "msprt"
    alpha: float = Field(default=0.05, gt=0, le=0.2)
    power: float = Field(default=0.8, ge=0.5, lt=1, description="fixed horizon only")
    baseline_rate: float = Field(gt=0, lt=1, description="the champion's expected rate")
    mde: float = Field(gt=0, lt=1, description="smallest absolute difference worth detecting")
    sample_size_per_arm: int = Field(
        ge=1, description="fixed: the horizon, computed at start from the fields above"
    )
    min_users_per_arm: int = Field(
        default=200, ge=1, description="msprt: no decision before each arm has this many"
    )
    max_users_per_arm: int | None = Field(
        default=None, ge=1, description="msprt: the budget; reached without a winner = keep"
    )

    @model_validator(mode="after")
    def _within_unit_interval(self) -> Metric:
        if self.baseline_rate + self.mde >= 1:
            raise ValueError("baseline_rate + mde must stay below 1")
        return self


class Guardrails(_Entry):
    """How much worse the candidate may be than the champion before the experiment stops."""

    max_5xx_rate_increase: float = Field(default=0.005, ge=0, le=1, description="absolute")
    max_p95_latency_increase: float = Field(default=0.25, ge=0, le=10, description="relative")
    max_p95_latency_increase_ms: float = Field(
        default=5.0, ge=0, le=60_000, description="absolute slack on top of the relative margin"
    )
    min_requests: int = Field(
        default=200, ge=1, description="per arm, before the guardrails are judged"
    )


class Event(_Entry):
    action: Literal["start", "ramp", "stop", "conclude"]
    share: int = Field(ge=0, le=99)
    at: str
    by: str
    note: str = Field(default="", max_length=500)


class Experiment(_Entry):
    id: str = Field(pattern=EXPERIMENT_ID)
    status: Literal["running", "stopped", "concluded"]
    share: int = Field(ge=0, le=99, description="% of users on the candidate")
    champion: ImageRef
    candidate: Candidate
    split: Split = Split()
    metric: Metric
    guardrails: Guardrails = Guardrails()
    srm_threshold: float = Field(default=0.001, gt=0, lt=0.5)
    winner: Literal["a", "b"] | None = None
    history: list[Event] = Field(default_factory=list, max_length=10_000)

    @model_validator(mode="after")
    def _consistent(self) -> Experiment:
        if self.status == "running" and self.share < 1:
            raise ValueError("a running experiment has a share of at least 1 %")
        if self.status != "running" and self.share != 0:
            raise ValueError(f"a {self.status} experiment has share 0")
        if (self.winner is not None) != (self.status == "concluded"):
            raise ValueError("winner is set exactly when the experiment is concluded")
        return self

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def since(self) -> str:
        """When the current share took effect in git (the newest start or ramp)."""
        for event in self.history:
            if event.action in ("start", "ramp"):
                return event.at
        return ""
