"""`pipeline autoscale`: the loop that applies :mod:`.autoscale`'s policy to a Swarm service.

Each tick reads the entry HAProxy's request counter of the ``model`` backend (``show stat``
through the runtime API, :func:`.haproxy_runtime.backend_counters`), the model service's
replicas (:mod:`.swarm`), decides, and scales with ``docker service scale`` when the decision
differs. Every decision is one JSON object handed to ``emit`` (the CLI appends it to
``build/deploy/<env>.autoscale.jsonl`` and prints it) and the latest figures are written as a
Prometheus text file (``build/deploy/<env>.autoscale.prom``, node_exporter's textfile format,
rewritten atomically). The stabilisation state is saved after each decision
(``build/deploy/<env>.autoscale.state.json``) so that `--once`, run from cron, still waits a
whole quiet window before a step down.

A failed reading (the entry restarting, a docker exec timing out) is logged as an ``error``
decision and the loop goes on; `--once` raises it instead.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.deploy import haproxy_runtime
from pipeline.deploy.autoscale import Decision, Sample, ScaleState, decide, request_rate, trim
from pipeline.deploy.swarm import Swarm
from pipeline.deploy.topology import Autoscale, EnvTopology
from pipeline.errors import ConfigError, SwarmError

__all__ = ["Autoscaler", "Files"]

log = logging.getLogger("pipeline.deploy")
Emit = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Files:
    metrics: Path
    state: Path

    @classmethod
    def default(cls, env: str, root: Path = Path("build/deploy")) -> Files:
        return cls(
            metrics=root / f"{env}.autoscale.prom", state=root / f"{env}.autoscale.state.json"
        )


@dataclass
class Autoscaler:
    """One environment's autoscaler; :meth:`tick` is one decision, :meth:`run` the loop."""

    swarm: Swarm
    env: str
    shape: EnvTopology
    files: Files
    emit: Emit
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    samples: list[Sample] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {"up": 0, "down": 0, "hold": 0})
    errors: int = 0

    def __post_init__(self) -> None:
        if self.shape.autoscale is None:
            raise ConfigError(
                f"deploy/topology.yaml: {self.env} has no `autoscale:` section (min_replicas, "
                "max_replicas, target_rps_per_replica, ...): see docs/deploy.md"
            )
        self.state = self._load_state()

    @property
    def policy(self) -> Autoscale:
        assert self.shape.autoscale is not None  # checked in __post_init__
        return self.shape.autoscale

    @property
    def service(self) -> str:
        return f"{self.shape.stack}_model"

    def sample(self) -> None:
        """Read the counter once and keep the samples of the window."""
        counters = haproxy_runtime.backend_counters(self.swarm, f"{self.shape.stack}_entry")
        now = self.clock()
        self.samples = trim(
            [*self.samples, Sample(now, counters.total)], now=now, window_s=self.policy.window_s
        )

    def tick(self) -> Decision:
        """Sample, decide, scale when the decision differs, record."""
        live = self.swarm.services(self.shape.stack).get("model")
        if live is None:
            raise SwarmError(
                f"the stack {self.shape.stack} has no model service: `pipeline reconcile "
                f"--env {self.env}` first"
            )
        self.sample()
        decision, self.state = decide(
            self.policy,
            current=live.replicas,
            rate=request_rate(self.samples),
            now=self.clock(),
            state=self.state,
        )
        if decision.desired != decision.current:
            self.swarm.scale(self.service, decision.desired)
        self.counts[decision.action] += 1
        self._record(decision)
        return decision

    def run(self, *, once: bool = False, stop: Callable[[], bool] = lambda: False) -> None:
        """Tick every ``interval_s`` until ``stop()``; ``once``: read the counter, wait one
        window, decide once (and raise what fails)."""
        if once:
            self.sample()
            self.sleep(self.policy.window_s)
            self.tick()
            return
        while not stop():
            started = self.clock()
            try:
                self.tick()
            except SwarmError as exc:  # the next tick may well succeed: say it, go on
                self.errors += 1
                log.warning("autoscale %s: %s", self.env, exc)
                self.emit({"at": _iso(started), "env": self.env, "error": str(exc)})
            self.sleep(max(0.0, self.policy.interval_s - (self.clock() - started)))

    def _record(self, decision: Decision) -> None:
        policy = self.policy
        rate = decision.rate
        self.emit(
            {
                "at": _iso(decision.at),
                "env": self.env,
                "service": self.service,
                "action": decision.action,
                "current": decision.current,
                "desired": decision.desired,
                "recommended": decision.recommended,
                "rate": None if rate is None else round(rate, 2),
                "rate_per_replica": None
                if rate is None
                else round(rate / decision.current, 2)
                if decision.current
                else None,
                "target_rps_per_replica": policy.target_rps_per_replica,
                "min": policy.min_replicas,
                "max": policy.max_replicas,
                "reason": decision.reason,
            }
        )
        self._write(self.files.state, json.dumps({"low_since": self.state.low_since}) + "\n")
        self._write(self.files.metrics, self._metrics(decision))

    def _metrics(self, decision: Decision) -> str:
        labels = f'env="{self.env}",service="{self.service}"'
        gauges = [
            ("replicas", "replicas of the model service after the last decision", decision.desired),
            ("recommended_replicas", "clamp(ceil(rate / target), min, max)", decision.recommended),
            ("request_rate", "requests per second at the entry's model backend", decision.rate),
            (
                "target_rps_per_replica",
                "the topology's target",
                self.policy.target_rps_per_replica,
            ),
            ("min_replicas", "the topology's lower bound", self.policy.min_replicas),
            ("max_replicas", "the topology's upper bound", self.policy.max_replicas),
            ("last_decision_timestamp_seconds", "wall time of the last decision", decision.at),
        ]
        lines = []
        for name, what, value in gauges:
            if value is None:
                continue
            lines += [
                f"# HELP pipeline_autoscale_{name} {what}",
                f"# TYPE pipeline_autoscale_{name} gauge",
                f"pipeline_autoscale_{name}{{{labels}}} {value:g}",
            ]
        lines += [
            "# HELP pipeline_autoscale_decisions_total decisions since the autoscaler started",
            "# TYPE pipeline_autoscale_decisions_total counter",
        ]
        lines += [
            f'pipeline_autoscale_decisions_total{{{labels},action="{action}"}} {count}'
            for action, count in sorted(self.counts.items())
        ]
        lines += [
            "# HELP pipeline_autoscale_errors_total ticks that could not read or scale",
            "# TYPE pipeline_autoscale_errors_total counter",
            f"pipeline_autoscale_errors_total{{{labels}}} {self.errors}",
        ]
        return "\n".join(lines) + "\n"

    def _load_state(self) -> ScaleState:
        try:
            saved = json.loads(self.files.state.read_text())
            since = saved.get("low_since")
            return ScaleState(low_since=float(since) if since is not None else None)
        except (OSError, ValueError, TypeError, AttributeError):
            return ScaleState()  # none yet, or unreadable: start a fresh window

    @staticmethod
    def _write(path: Path, text: str) -> None:
        """Write atomically (a scraper never reads half a file)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        temporary.write_text(text)
        temporary.replace(path)


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
