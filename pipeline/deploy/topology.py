"""``deploy/topology.yaml``: the serving shape of each environment.

What a promotion decides (which digest runs) lives in ``deploy/<env>.yaml``; what does not
(how many replicas, their limits, the stable entry port, health timings, how an update rolls)
lives here, edited by hand and validated like ``params.yaml``: frozen models with
``extra="forbid"``, so a misspelt key is a one-line error that names it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.errors import ConfigError

__all__ = [
    "Autoscale",
    "Entry",
    "EnvTopology",
    "Health",
    "Resources",
    "Topology",
    "Update",
    "load_topology",
]

DEFAULT_PATH = Path("deploy/topology.yaml")
NAME = r"^[a-z0-9][a-z0-9-]{0,40}$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Resources(_Section):
    cpus: float = Field(gt=0, le=64, description="CPU limit per task (Swarm NanoCPUs)")
    memory_mb: int = Field(ge=16, le=262144, description="memory limit per task")


class Health(_Section):
    """The model tasks' health check (GET /v2/health/ready), also HAProxy's server check."""

    interval_s: float = Field(default=3, gt=0, le=300)
    timeout_s: float = Field(default=3, gt=0, le=300)
    retries: int = Field(default=5, ge=1, le=100)
    start_period_s: float = Field(
        default=30, ge=0, le=3600, description="failures before this do not count"
    )

    @model_validator(mode="after")
    def _timeout_fits(self) -> Health:
        if self.timeout_s > self.interval_s:
            raise ValueError("timeout_s must not exceed interval_s")
        return self


class Update(_Section):
    """How a new digest rolls out: Swarm's update_config (order start-first, rollback on
    failure, always)."""

    parallelism: int = Field(default=1, ge=1, le=100)
    delay_s: float = Field(default=0, ge=0, le=3600)
    monitor_s: float = Field(
        default=10, gt=0, le=3600, description="a task failing this soon after start fails it"
    )
    max_failure_ratio: float = Field(default=0, ge=0, le=1)
    timeout_s: float = Field(
        default=300, gt=0, le=7200, description="reconcile waits this long for the update"
    )


class Entry(_Section):
    """The HAProxy entry service: the one published port, in Swarm's host mode."""

    port: int = Field(ge=1024, le=65535, description="the stable host port users call")
    resources: Resources = Resources(cpus=0.5, memory_mb=128)
    stats_port: int | None = Field(
        default=None, ge=1024, le=65535, description="HAProxy stats + Prometheus, host mode"
    )


class Autoscale(_Section):
    """Replicas of the model service follow the request rate at the entry (``pipeline
    autoscale``): ``clamp(ceil(rate / target_rps_per_replica), min_replicas, max_replicas)``,
    up at once, down one replica per quiet ``scale_down_stabilisation_s``. Never to zero: a
    request arriving at zero replicas would have nothing to wake it up (the entry answers 503)."""

    min_replicas: int = Field(ge=1, le=50, description="never fewer (no scale to zero)")
    max_replicas: int = Field(ge=1, le=50)
    target_rps_per_replica: float = Field(gt=0, le=1_000_000)
    window_s: float = Field(default=10, ge=1, le=3600, description="the rate is averaged over")
    scale_down_stabilisation_s: float = Field(default=60, ge=0, le=1800)  # an HPA's limit
    interval_s: float = Field(default=5, ge=0.5, le=3600, description="between two decisions")

    @model_validator(mode="after")
    def _bounds(self) -> Autoscale:
        if self.min_replicas > self.max_replicas:
            raise ValueError("autoscale.min_replicas must not exceed autoscale.max_replicas")
        return self


class EnvTopology(_Section):
    stack: str = Field(pattern=NAME, description="the Swarm stack name (services are stack_*)")
    replicas: int = Field(ge=1, le=50)
    resources: Resources
    health: Health = Health()
    update: Update = Update()
    entry: Entry
    serving_workers: int = Field(default=1, ge=1, le=16, description="SERVING_WORKERS per task")
    stop_grace_period_s: float = Field(default=15, ge=0, le=600)
    autoscale: Autoscale | None = Field(
        default=None, description="replicas follow the request rate (`pipeline autoscale`)"
    )

    @model_validator(mode="after")
    def _ports_differ(self) -> EnvTopology:
        if self.entry.stats_port is not None and self.entry.stats_port == self.entry.port:
            raise ValueError("entry.stats_port must differ from entry.port")
        scale = self.autoscale
        if scale is not None and not scale.min_replicas <= self.replicas <= scale.max_replicas:
            raise ValueError(
                f"replicas ({self.replicas}) must lie within autoscale.min_replicas "
                f"({scale.min_replicas}) and autoscale.max_replicas ({scale.max_replicas})"
            )
        return self

    def replica_bounds(self) -> tuple[int, int] | None:
        """(min, max) when the replicas of the model are the autoscaler's, else None."""
        if self.autoscale is None:
            return None
        return self.autoscale.min_replicas, self.autoscale.max_replicas

    def with_replicas(self, replicas: int) -> EnvTopology:
        """This shape with ``replicas`` clamped into the autoscale bounds (the live count of an
        autoscaled service, which reconcile renders instead of the file's)."""
        bounds = self.replica_bounds()
        if bounds is None:
            return self
        return self.model_copy(update={"replicas": max(bounds[0], min(bounds[1], replicas))})


class Topology(_Section):
    environments: dict[Literal["staging", "production"], EnvTopology]

    @model_validator(mode="after")
    def _distinct(self) -> Topology:
        seen: dict[int, str] = {}
        stacks: dict[str, str] = {}
        for env, shape in self.environments.items():
            for port in (shape.entry.port, shape.entry.stats_port):
                if port is None:
                    continue
                if port in seen:
                    raise ValueError(f"{env} and {seen[port]} both publish port {port}")
                seen[port] = env
            if shape.stack in stacks:
                raise ValueError(f"{env} and {stacks[shape.stack]} share stack {shape.stack!r}")
            stacks[shape.stack] = env
        return self

    def get(self, env: str, *, path: Path = DEFAULT_PATH) -> EnvTopology:
        shape = self.environments.get(env)  # type: ignore[call-overload]
        if shape is None:
            known = ", ".join(sorted(self.environments)) or "none"
            raise ConfigError(f"{path}: no environment {env!r} (it has: {known})")
        return shape  # type: ignore[no-any-return]


def load_topology(path: Path = DEFAULT_PATH) -> Topology:
    """Read and validate the topology file; any problem is a one-line `ConfigError`."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"{path} not found: copy deploy/topology.yaml from the template, or run from the "
            "project root"
        ) from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(f"{path} is not valid YAML: {first}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must be a mapping with an `environments:` section")
    try:
        return Topology.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe(exc)}") from None


def describe(err: ValidationError) -> str:
    """Each problem as ``dotted.key: what is wrong (got VALUE)``, joined on one line."""
    parts = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see docs/deploy.md)"
        shown = "" if e["type"] in ("missing", "extra_forbidden") else f" (got {e.get('input')!r})"
        parts.append(f"{key}: {msg}{shown}")
    return "; ".join(parts)
