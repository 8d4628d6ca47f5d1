"""``pipeline ab decide``: gather what the experiment observed, then :func:`.decision.decide`.

The experiment comes from ``deploy/<env>.yaml``; the units from a table of outcomes
(``--outcomes``) or from exposure/feedback logs (``--logs``); the guardrail numbers from a
Prometheus server (``--prometheus``) or a JSON file (``--guardrails``: ``{"a": {"requests":
N, "errors_5xx": N, "p95_ms": X}, "b": {...}}``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pipeline.ab import outcomes, prometheus
from pipeline.ab.decision import Check, Decision, GuardrailData, Health, Observations, decide
from pipeline.ab.record import Experiment
from pipeline.config import Settings
from pipeline.errors import ConfigError
from pipeline.release.state import Environment, State, read_state, state_path

__all__ = ["Inputs", "experiment_of", "observe", "run", "swarm_inputs"]

MAX_GUARDRAIL_BYTES = 64 * 1024


@dataclass(frozen=True)
class Inputs:
    outcomes: Path | None = None
    logs: tuple[Path, ...] = ()
    guardrails: Path | None = None
    prometheus: str | None = None
    waive_guardrails: bool = False


def swarm_inputs(
    settings: Settings,
    env: Environment,
    *,
    stack: str,
    stats_port: int | None,
    out_dir: Path,
    since: str | None = None,
) -> Inputs:
    """The logs of both arms' services since the experiment started (or ``since``), through
    ``docker service logs`` into ``out_dir``, and its Prometheus behind the entry's stats port."""
    from pipeline.deploy.swarm import Swarm

    _, experiment = experiment_of(settings, env)
    swarm = Swarm()
    started = since or (experiment.history[-1].at if experiment.history else "0")
    live = swarm.services(stack)
    logs = tuple(
        swarm.service_logs(f"{stack}_{name}", since=started, into=out_dir / f"{name}.log")
        for name in ("model", "candidate")
        if name in live
    )
    if not logs:
        raise ConfigError(f"stack {stack} runs no model service: nothing to read logs from")
    prometheus = f"http://127.0.0.1:{stats_port}" if stats_port and "prometheus" in live else None
    return Inputs(logs=logs, prometheus=prometheus)


def experiment_of(settings: Settings, env: Environment) -> tuple[State, Experiment]:
    state = read_state(settings.deploy_dir, env)
    if state is None or state.experiment is None:
        raise ConfigError(
            f"{state_path(settings.deploy_dir, env)} holds no experiment: `pipeline ab start` one"
        )
    return state, state.experiment


def observe(experiment: Experiment, inputs: Inputs) -> Observations:
    if (inputs.outcomes is None) == (not inputs.logs):
        raise ConfigError("give either --outcomes FILE or --logs FILE (one or more), not both")
    if inputs.outcomes is not None:
        return outcomes.read_outcomes(inputs.outcomes, experiment)
    return outcomes.from_logs(inputs.logs, experiment)


def run(settings: Settings, env: Environment, inputs: Inputs) -> Decision:
    state, experiment = experiment_of(settings, env)
    observations = observe(experiment, inputs)
    checks = []
    if experiment.running and state.image.digest != experiment.champion.digest:
        checks.append(
            Check(
                "champion",
                "fail",
                f"{env} runs {state.image.digest}, not the champion {experiment.champion.digest} "
                "the experiment started with: arm A is not one model; stop it and start anew",
            )
        )
    data = _guardrails(experiment, inputs)
    return decide(
        experiment,
        observations,
        guardrails=data,
        waive_guardrails=inputs.waive_guardrails,
        extra_checks=tuple(checks),
    )


def _guardrails(experiment: Experiment, inputs: Inputs) -> GuardrailData | None:
    if inputs.guardrails is not None and inputs.prometheus is not None:
        raise ConfigError("give --guardrails FILE or --prometheus URL, not both")
    if inputs.prometheus is not None:
        since = datetime.strptime(experiment.since, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        window = int((datetime.now(UTC) - since).total_seconds())
        return prometheus.guardrails(inputs.prometheus, window_s=window, experiment=experiment.id)
    if inputs.guardrails is None:
        return None
    return read_guardrails(inputs.guardrails)


def read_guardrails(path: Path) -> GuardrailData:
    """A guardrails JSON file, bounded and checked field by field."""
    if not path.is_file():
        raise ConfigError(f"guardrails file {path} does not exist")
    if path.stat().st_size > MAX_GUARDRAIL_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_GUARDRAIL_BYTES} bytes")
    try:
        raw = json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(f"{path} is not JSON: {exc}") from None
    arms = {}
    for variant in ("a", "b"):
        entry = raw.get(variant) if isinstance(raw, dict) else None
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: no object {variant!r} (requests, errors_5xx, p95_ms)")
        values = []
        for key in ("requests", "errors_5xx", "p95_ms"):
            value = entry.get(key)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{path}: {variant}.{key} is not a number (got {value!r})")
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"{path}: {variant}.{key} must be finite and >= 0")
            values.append(value)
        requests, errors, p95 = values
        if errors > requests or requests != int(requests) or errors != int(errors):
            raise ConfigError(f"{path}: {variant} needs whole numbers with errors_5xx <= requests")
        arms[variant] = Health(requests=int(requests), errors_5xx=int(errors), p95_ms=float(p95))
    return GuardrailData(a=arms["a"], b=arms["b"], source=str(path))
