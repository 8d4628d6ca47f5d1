"""``pipeline ab start | ramp | stop | conclude``: the only writers of the ``experiment:`` block.

Each command takes the environment's promotion lock, checks its rule, appends one event to the
experiment's history and writes ``deploy/<env>.yaml`` (commit it; ``pipeline reconcile`` makes
the cluster follow). The candidate of ``start`` passes the rules of a promotion: a digest in
the registry with passing, verified contract evidence for exactly that digest
(:func:`pipeline.release.evidence.find_evidence`), a model version the MLflow store knows, and
in production a digest that staging holds or held. ``ramp`` only raises the share (a lower
share would move users from B back to A); ``stop`` sets it to 0; ``conclude --winner b``
promotes the candidate through :func:`pipeline.release.promotion.promote` (the same checks
again), ``--winner a`` stops and records A as the winner.
"""

from __future__ import annotations

import getpass
import logging
import secrets
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pipeline.ab.record import (
    Candidate,
    Event,
    EvidenceRef,
    Experiment,
    Guardrails,
    ImageRef,
    Metric,
    ModelRef,
    Split,
    validated,
)
from pipeline.ab.stats import sample_size_per_arm
from pipeline.config import Settings
from pipeline.errors import ConfigError, ReleaseRefused
from pipeline.ml import tracking
from pipeline.release import promotion, signing
from pipeline.release.evidence import evidence_tag, find_evidence, image_manifest
from pipeline.release.registry import Registry
from pipeline.release.state import Environment, State, read_state, state_path, write_state

__all__ = ["ExperimentRefused", "MetricPlan", "conclude", "ramp", "start", "stop"]

log = logging.getLogger("pipeline.ab")


class ExperimentRefused(ReleaseRefused):
    """An experiment rule refused the step; deploy/<env>.yaml is unchanged."""


@dataclass(frozen=True)
class MetricPlan:
    """What ``start`` asks for; the sample size is computed from it unless given."""

    name: str = "conversion"
    source: Literal["outcome", "label"] = "outcome"
    method: Literal["msprt", "fixed"] = "msprt"
    baseline_rate: float = 0.1
    mde: float = 0.01
    alpha: float = 0.05
    power: float = 0.8
    sample_size_per_arm: int | None = None
    min_users_per_arm: int = 200
    max_users_per_arm: int | None = None

    def metric(self) -> Metric:
        size = self.sample_size_per_arm
        if size is None:
            try:
                size = sample_size_per_arm(
                    baseline=self.baseline_rate, mde=self.mde, alpha=self.alpha, power=self.power
                )
            except ValueError as exc:
                raise ConfigError(f"metric: {exc}") from None
        return validated(
            Metric,
            name=self.name,
            source=self.source,
            method=self.method,
            alpha=self.alpha,
            power=self.power,
            baseline_rate=self.baseline_rate,
            mde=self.mde,
            sample_size_per_arm=size,
            min_users_per_arm=self.min_users_per_arm,
            max_users_per_arm=self.max_users_per_arm,
        )


def start(
    settings: Settings,
    *,
    env: Environment,
    ref: str,
    share: int,
    plan: MetricPlan,
    experiment_id: str | None = None,
    split: Split | None = None,
    guardrails: Guardrails | None = None,
    srm_threshold: float = 0.001,
    allow_same_image: bool = False,
    note: str = "",
) -> Experiment:
    """Start an experiment of the candidate ``ref`` against what ``env`` runs now."""
    if not 1 <= share <= 99:
        raise ExperimentRefused(f"share {share} is outside 1..99 (% of users on the candidate)")
    metric = plan.metric()  # a bad plan fails before anything is read
    registry = Registry(settings)
    with promotion.locked(settings, env):
        state = _state(settings, env)
        current = state.experiment
        if current is not None and current.running:
            raise ExperimentRefused(
                f"experiment {current.id} is running in {env}: `pipeline ab stop --env {env}` "
                "or `pipeline ab conclude` it first"
            )
        manifest = image_manifest(registry, registry.reference(ref))
        if manifest.digest == state.image.digest and not allow_same_image:
            raise ExperimentRefused(
                f"{registry.ref(manifest.digest)} is what {env} runs already (the champion): "
                "pass --aa to run an A/A experiment on purpose"
            )
        if env == "production":
            _held_by_staging(settings, manifest.digest)
        evidence = find_evidence(registry, manifest, keys=signing.trusted_keys(settings))
        labels = (registry.image_config(manifest).get("config") or {}).get("Labels") or {}
        name, version = labels.get("ml.model.name"), labels.get("ml.model.version")
        if not name or not version:
            raise ExperimentRefused(f"{registry.ref(manifest.digest)} has no ml.model.* labels")
        model = tracking.version_state(settings, name=name, version=version)
        new_id = experiment_id or f"{env}-{_now('%Y%m%d')}-{secrets.token_hex(3)}"
        if current is not None and current.id == new_id:
            raise ExperimentRefused(
                f"experiment id {new_id} was used already: a new experiment needs a new id "
                "(the id is the hashing salt; reusing it gives users the same arms again)"
            )
        experiment = Experiment(
            id=new_id,
            status="running",
            share=share,
            champion=ImageRef(repository=state.image.repository, digest=state.image.digest),
            candidate=Candidate(
                image=ImageRef(repository=registry.repository, digest=manifest.digest),
                model=ModelRef(name=name, version=version, mlflow_run_id=model.run_id),
                evidence=EvidenceRef(
                    digest=evidence.digest,
                    tag=evidence_tag(manifest.digest),
                    signer=evidence.signer,
                ),
            ),
            split=split or Split(),
            metric=metric,
            guardrails=guardrails or Guardrails(),
            srm_threshold=srm_threshold,
            history=[_event("start", share, settings, note)],
        )
        _write(settings, state, experiment)
        return experiment


def ramp(settings: Settings, *, env: Environment, share: int, note: str = "") -> Experiment:
    """Raise the candidate's share; users already on B stay on B."""
    with promotion.locked(settings, env):
        state = _state(settings, env)
        current = _running(state, env)
        if share == current.share:
            return current
        if share < current.share:
            raise ExperimentRefused(
                f"a ramp only raises the share ({current.share} % now): {share} % would move "
                f"users from B back to A; `pipeline ab stop --env {env}` ends the experiment"
            )
        if share > 99:
            raise ExperimentRefused(
                f"share {share} is above 99: to give everyone the candidate, `pipeline ab "
                f"conclude --env {env} --winner b`"
            )
        experiment = current.model_copy(
            update={
                "share": share,
                "history": [_event("ramp", share, settings, note), *current.history],
            }
        )
        _write(settings, state, Experiment.model_validate(experiment.model_dump()))
        return experiment


def stop(settings: Settings, *, env: Environment, note: str = "") -> Experiment:
    """Share 0: the next reconcile removes the candidate's service; the record stays."""
    with promotion.locked(settings, env):
        state = _state(settings, env)
        current = _running(state, env)
        experiment = Experiment.model_validate(
            current.model_copy(
                update={
                    "status": "stopped",
                    "share": 0,
                    "history": [_event("stop", 0, settings, note), *current.history],
                }
            ).model_dump()
        )
        _write(settings, state, experiment)
        return experiment


def conclude(
    settings: Settings, *, env: Environment, winner: Literal["a", "b"], note: str = ""
) -> tuple[Experiment, promotion.Outcome | None]:
    """Record the winner; for B, promote the candidate (evidence and staging rules apply)."""
    with promotion.locked(settings, env):
        current = _state(settings, env).experiment
        if current is None or current.status == "concluded":
            done = "" if current is None else f" ({current.id} was concluded already)"
            raise ExperimentRefused(f"{env} has no experiment to conclude{done}")
    outcome = None
    if winner == "b":
        # The normal promotion path, with its own lock and checks; on refusal nothing changed.
        outcome = promotion.promote(settings, ref=current.candidate.image.digest, env=env)
    with promotion.locked(settings, env):
        state = _state(settings, env)
        latest = state.experiment
        if latest is None or latest.id != current.id:
            raise ExperimentRefused(f"experiment {current.id} left {env} while concluding")
        experiment = Experiment.model_validate(
            latest.model_copy(
                update={
                    "status": "concluded",
                    "share": 0,
                    "winner": winner,
                    "history": [
                        _event("conclude", 0, settings, note or f"winner {winner}"),
                        *latest.history,
                    ],
                }
            ).model_dump()
        )
        _write(settings, state, experiment)
    return experiment, outcome


def _state(settings: Settings, env: Environment) -> State:
    state = read_state(settings.deploy_dir, env)
    if state is None:
        raise ExperimentRefused(
            f"{state_path(settings.deploy_dir, env)} does not exist: an experiment tests a "
            f"candidate against a champion, so promote one to {env} first"
        )
    return state


def _running(state: State, env: Environment) -> Experiment:
    current = state.experiment
    if current is None or not current.running:
        what = (
            "no experiment" if current is None else f"experiment {current.id} is {current.status}"
        )
        raise ExperimentRefused(f"{env} has {what}: `pipeline ab start` one first")
    return current


def _held_by_staging(settings: Settings, digest: str) -> None:
    staging = read_state(settings.deploy_dir, "staging")
    held = (
        []
        if staging is None
        else [staging.image.digest, *(r.image.digest for r in staging.history)]
    )
    if digest not in held:
        raise ExperimentRefused(
            f"production experiments take only a digest staging holds or held, and "
            f"deploy/staging.yaml never named {digest}: `pipeline promote --image {digest} "
            "--to staging` first"
        )


def _write(settings: Settings, state: State, experiment: Experiment) -> None:
    write_state(settings.deploy_dir, state.model_copy(update={"experiment": experiment}))


def _event(action: str, share: int, settings: Settings, note: str) -> Event:
    return Event.model_validate(
        {"action": action, "share": share, "at": _now(), "by": _who(settings), "note": note}
    )


def _now(fmt: str = "%Y-%m-%dT%H:%M:%SZ") -> str:
    return datetime.now(UTC).strftime(fmt)


def _who(settings: Settings) -> str:
    """The same actor a promotion records: PROMOTED_BY/GITHUB_ACTOR, the git user, the login."""
    if settings.promoted_by:
        return settings.promoted_by
    try:
        done = subprocess.run(
            ["git", "config", "user.email"], capture_output=True, text=True, check=False
        )
    except OSError:
        return getpass.getuser()
    return done.stdout.strip() or getpass.getuser()
