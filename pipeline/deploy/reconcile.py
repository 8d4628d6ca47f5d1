"""`pipeline reconcile` and `pipeline status`: make Swarm run what git says, and prove it.

One pass: render the desired stack (:mod:`pipeline.deploy.stack`) from ``deploy/<env>.yaml``
and the topology, write it under ``deploy/``, compare each service's
:class:`~pipeline.deploy.stack.Shape` with the live one, and when they differ apply the file
with ``docker stack deploy``. Its exit code is recorded and never trusted alone
(docker/cli#6752: it exits 0 after Swarm rolled a failed update back): each changed service's
``UpdateStatus`` is polled until the update completed or rolled back, and the images of its
running tasks are compared with the desired digest. Any difference is a
:class:`~pipeline.errors.RolloutFailed` carrying a table (service, desired, running, state,
task error); :class:`~pipeline.errors.RolledBack` (exit 10) when Swarm rolled back, and the
deploy workflow then runs `pipeline rollback`.
An unchanged desired state applies nothing, so nothing restarts.

A live service differs from git in one of two ways, told apart by the ``ml.deploy.spec`` label
(the hash of the shape it was last deployed with): git moved (the label is an older hash), or
someone changed the service by hand (the label matches, the shape does not): *drift*, reverted
and reported. ``--watch`` repeats the pass; it backs off from a desired state that already failed
until git changes it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pipeline.config import ImageParams, Settings
from pipeline.deploy import haproxy
from pipeline.deploy import haproxy_runtime as ab_runtime
from pipeline.deploy import monitor as ab_monitor
from pipeline.deploy.split import render
from pipeline.deploy.stack import SPEC_LABEL, Desired, Shape
from pipeline.deploy.swarm import Deployed, LiveService, Swarm, Task
from pipeline.deploy.topology import EnvTopology
from pipeline.errors import ConfigError, MissingInputError, RolledBack, RolloutFailed
from pipeline.release.state import read_state

__all__ = [
    "Change",
    "Outcome",
    "Plan",
    "RolloutFailed",
    "Row",
    "desired_state",
    "plan",
    "reconcile",
]

log = logging.getLogger("pipeline.deploy")
TERMINAL = ("completed", "rollback_completed", "paused", "rollback_paused")
ROLLED_BACK = ("rollback_completed", "rollback_paused", "rollback_started")


@dataclass(frozen=True)
class Change:
    service: str
    action: Literal["create", "update", "revert-drift", "none"]
    fields: tuple[str, ...]
    desired_image: str
    live_image: str | None


@dataclass(frozen=True)
class Plan:
    desired: Desired
    changes: tuple[Change, ...]
    live: dict[str, LiveService]
    extra: tuple[str, ...]  # live services of the stack that the file no longer has

    @property
    def in_sync(self) -> bool:
        return not self.extra and all(c.action == "none" for c in self.changes)

    @property
    def drift(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.action == "revert-drift")


@dataclass(frozen=True)
class Row:
    service: str
    desired: str
    running: str
    state: str
    error: str
    ok: bool


@dataclass
class Outcome:
    env: str
    stack: str
    desired_digest: str
    model_version: str
    changes: list[Change]
    applied: bool
    deploy_exit_code: int | None  # docker stack deploy's own exit code, as it came
    rows: list[Row] = field(default_factory=list)
    rolled_back: bool = False
    ok: bool = True
    seconds: float = 0.0
    stack_file: str = ""
    finished_at: str = ""

    def reason(self) -> str:
        bad = [r for r in self.rows if not r.ok]
        return "; ".join(
            f"{r.service}: {r.state}" + (f" ({r.error})" if r.error else "") for r in bad
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def desired_state(
    settings: Settings,
    shape: EnvTopology,
    *,
    env: str,
    image: ImageParams | None,
    build_entry: bool = True,
    entry_image: str | None = None,
    swarm: Swarm | None = None,
) -> Desired:
    """Render ``env`` from git: deploy/<env>.yaml, the topology, the entry image (``entry_image``
    if given, else found in the registry or built: see :func:`haproxy.ensure_entry_image`).

    An autoscaled model service (``autoscale:`` in the topology) is rendered with its live
    replica count from ``swarm``, clamped to the bounds: a `docker stack deploy` of the file
    would otherwise reset what the autoscaler chose (the pattern of Argo CD's
    ``ignoreDifferences`` on ``/spec/replicas``)."""
    if shape.autoscale is not None and swarm is not None:
        live = swarm.services(shape.stack).get("model")
        if live is not None:
            shape = shape.with_replicas(live.replicas)
    state = read_state(settings.deploy_dir, env)
    if state is None:
        raise MissingInputError(
            f"{settings.deploy_dir / env}.yaml does not exist: promote a digest to {env} first "
            f"(`pipeline promote --image REF --to {env}`)"
        )
    if entry_image is None:
        if image is None:
            raise ConfigError("the entry image is unknown: pass params.yaml's image section")
        cache = Path("build/entry")
        entry_image = haproxy.ensure_entry_image(settings, image, cache=cache, build=build_entry)
    monitor_image = ""  # an A/B experiment's Prometheus (pipeline/deploy/monitor.py)
    if state.experiment is not None and state.experiment.running:
        if image is not None:
            monitor_image = ab_monitor.ensure_image(settings, image, build=build_entry)
        else:
            rendered = settings.deploy_dir / f"{env}.stack.yaml"
            monitor_image = ab_monitor.rendered_image(rendered) or ""
    return render(state, shape, entry_image=entry_image, monitor_image=monitor_image)


def write_desired(desired: Desired, deploy_dir: Path) -> Path:
    """deploy/<env>.stack.yaml and deploy/<env>.haproxy.cfg (rewritten only when different)."""
    deploy_dir.mkdir(parents=True, exist_ok=True)
    stack_file = deploy_dir / f"{desired.env}.stack.yaml"
    for path, text in (
        (stack_file, desired.stack_yaml),
        (deploy_dir / f"{desired.env}.haproxy.cfg", desired.haproxy_cfg),
    ):
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
    return stack_file


def plan(swarm: Swarm, desired: Desired) -> Plan:
    """Compare each desired service with the live one."""
    live = swarm.services(desired.stack)
    changes = []
    for name, want in sorted(desired.shapes.items()):
        service = live.get(name)
        if service is None:
            changes.append(Change(name, "create", (), want.image, None))
            continue
        have = Shape.from_spec(service.spec)
        differs = tuple(want.differences(have))
        if not differs:
            action: Literal["create", "update", "revert-drift", "none"] = "none"
        elif service.labels.get(SPEC_LABEL) == dict(want.labels).get(SPEC_LABEL):
            action = "revert-drift"  # deployed from this very desired state, changed since
        else:
            action = "update"
        changes.append(Change(name, action, differs, want.image, have.image))
    extra = tuple(sorted(set(live) - set(desired.shapes)))
    return Plan(desired=desired, changes=tuple(changes), live=live, extra=extra)


def reconcile(
    swarm: Swarm,
    desired: Desired,
    *,
    deploy_dir: Path,
    timeout: float,
    dry_run: bool = False,
) -> Outcome:
    """One pass: plan, and unless in sync (or ``dry_run``) apply and verify. Raises
    :class:`~pipeline.errors.RolloutFailed` (:class:`~pipeline.errors.RolledBack`) when the
    services do not end up running the desired digests."""
    started = time.monotonic()
    swarm.ensure_manager()
    stack_file = deploy_dir / f"{desired.env}.stack.yaml"
    if not dry_run:
        stack_file = write_desired(desired, deploy_dir)
    current = plan(swarm, desired)
    outcome = Outcome(
        env=desired.env,
        stack=desired.stack,
        desired_digest=desired.model_digest,
        model_version=desired.model_version,
        changes=list(current.changes),
        applied=False,
        deploy_exit_code=None,
        stack_file=str(stack_file),
    )
    for change in current.drift:
        log.warning(
            "drift: %s was changed by hand (%s); reverting it to git's desired state",
            desired.service(change.service),
            ", ".join(change.fields),
        )
    if current.in_sync or dry_run:
        if not dry_run:
            _live_split(swarm, desired)
        outcome.rows = _rows(swarm, desired, {}, set())
        outcome.seconds = time.monotonic() - started
        outcome.finished_at = _now()
        return outcome
    deployed = swarm.deploy(stack_file, stack=desired.stack)
    outcome.applied, outcome.deploy_exit_code = True, deployed.exit_code
    log.info(
        "docker stack deploy exited %d in %.1f s (its exit code alone proves nothing: "
        "docker/cli#6752)",
        deployed.exit_code,
        deployed.seconds,
    )
    changed = {c.service for c in current.changes if c.action != "none"}
    if deployed.exit_code != 0:
        outcome.rows = _rows(swarm, desired, {}, changed)
        _failed(
            outcome,
            started,
            f"docker stack deploy exited {deployed.exit_code}: " + _last_line(deployed),
        )
    outcome.rows = verify(swarm, desired, current.live, changed, timeout=timeout)
    outcome.rolled_back = any(r.state in ROLLED_BACK for r in outcome.rows)
    outcome.ok = all(r.ok for r in outcome.rows)
    if not outcome.ok:
        what = "rolled back by Swarm" if outcome.rolled_back else "did not converge"
        _failed(outcome, started, f"the rollout of {desired.model_digest} to {desired.env} {what}")
    _live_split(swarm, desired)
    _prune_configs(swarm, desired)
    outcome.seconds = time.monotonic() - started
    outcome.finished_at = _now()
    return outcome


def _live_split(swarm: Swarm, desired: Desired) -> None:
    """An A/B split's share, applied to the running entry through HAProxy's runtime API (a
    ramp: no reload); a no-op when the entry's map already has it or no experiment runs."""
    share = desired.experiment_share
    if share is not None and ab_runtime.apply_share(swarm, desired.service("entry"), share):
        log.info("the entry now splits %d %% of users to the candidate", share)


def _failed(outcome: Outcome, started: float, message: str) -> None:
    outcome.ok = False
    outcome.seconds = time.monotonic() - started
    outcome.finished_at = _now()
    kind = RolledBack if outcome.rolled_back else RolloutFailed
    text = f"{message}: {outcome.reason() or 'see the table'}"
    raise kind(text, rows=outcome.rows, outcome=outcome)


def _last_line(deployed: Deployed) -> str:
    return (deployed.output.splitlines() or ["no output"])[-1][:300]


def verify(
    swarm: Swarm,
    desired: Desired,
    before: dict[str, LiveService],
    changed: set[str],
    *,
    timeout: float,
    poll: float = 0.5,
) -> list[Row]:
    """Wait until every changed service's update finished (or rolled back), then compare."""
    deadline = time.monotonic() + timeout
    pending = set(changed)
    states: dict[str, str] = {}
    while pending and time.monotonic() < deadline:
        live = swarm.services(desired.stack)
        for name in sorted(pending):
            service = live.get(name)
            if service is None:
                continue
            state = _settled(swarm, desired, service, before.get(name))
            if state is not None:
                states[name] = state
                pending.discard(name)
        if pending:
            time.sleep(poll)
    for name in pending:
        service = swarm.services(desired.stack).get(name)
        states[name] = f"timeout ({service.update_state or 'no update'})" if service else "timeout"
    return _rows(swarm, desired, states, changed)


def _settled(
    swarm: Swarm, desired: Desired, service: LiveService, before: LiveService | None
) -> str | None:
    """The service's final state once its update is over, else None (still going)."""
    fresh = service.update_state is not None and (
        before is None or service.update_started != before.update_started
    )
    if fresh:
        if service.update_state not in TERMINAL:
            return None
        if service.update_state != "completed":
            return str(service.update_state)
    elif before is not None and service.spec["TaskTemplate"] != before.spec["TaskTemplate"]:
        return None  # the update is about to start
    want = desired.shapes[service.name.removeprefix(f"{desired.stack}_")]
    running = [t for t in swarm.tasks(service.name) if t.desired == "running"]
    converged = len(running) == want.replicas and all(
        t.state == "running" and t.image == want.image for t in running
    )
    if not converged:
        return None
    return str(service.update_state) if fresh else ("created" if before is None else "updated")


def short_image(image: str) -> str:
    """``sha256:<12 hex>`` of a digest reference, else the last path part."""
    if "@sha256:" in image:
        return "sha256:" + image.split("@sha256:")[1][:12]
    return image.rsplit("/", 1)[-1]


def _rows(swarm: Swarm, desired: Desired, states: dict[str, str], changed: set[str]) -> list[Row]:
    rows = []
    live = swarm.services(desired.stack)
    for name, want in sorted(desired.shapes.items()):
        service = live.get(name)
        tasks: list[Task] = swarm.tasks(service.name) if service else []
        running = [t for t in tasks if t.desired == "running" and t.state == "running"]
        images = sorted({t.image for t in running})
        failed = [t for t in tasks if t.error and t.image == want.image]
        if name in states:
            state = states[name]
        elif service is None:
            state = "missing"
        elif name not in changed:
            state = "unchanged"
        else:
            state = service.update_state or "running"
        ok = (
            service is not None
            and images == [want.image]
            and len(running) == want.replicas
            and state not in ROLLED_BACK
            and not state.startswith(("paused", "timeout"))
        )
        rows.append(
            Row(
                service=desired.service(name),
                desired=short_image(want.image),
                running=", ".join(short_image(i) for i in images)
                + f" ({len(running)}/{want.replicas})",
                state=state,
                error=failed[0].error if failed and not ok else "",
                ok=ok,
            )
        )
    return rows


def _prune_configs(swarm: Swarm, desired: Desired) -> None:
    for name in swarm.unused_configs(desired.stack, keep={desired.config_name}):
        if swarm.remove_config(name):
            log.info("removed the old entry config %s", name)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_report(outcome: Outcome, path: Path) -> Path:
    """The outcome as JSON (the deploy workflow reads the reason of a rollback from it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    verdict = "in sync" if not outcome.applied else ("ok" if outcome.ok else "failed")
    message = f"{outcome.env}: {outcome.desired_digest} {verdict}"
    if not outcome.ok:
        what = "rolled back by Swarm" if outcome.rolled_back else "did not converge"
        message = f"rollout of {outcome.desired_digest} to {outcome.env} {what}: {outcome.reason()}"
    path.write_text(json.dumps({"message": message, **outcome.to_json()}, indent=2) + "\n")
    return path
