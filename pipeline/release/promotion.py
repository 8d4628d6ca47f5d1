"""`pipeline promote` and `pipeline rollback`: move an environment to a tested digest.

An environment (``staging``, ``production``) is a tag in the image repository plus a file,
``deploy/<environment>.yaml``: the desired state that the promote workflow commits (GitOps).
A promotion never builds or pushes layers: it resolves the reference to a digest, demands
passing contract evidence for exactly that digest, demands (for production) that staging holds
that digest now, copies the manifest to the environment tag inside the registry, reads the tag
back, moves the MLflow alias of the model version the image's labels name, and only then writes
the file, with the entry it replaces first in its history. A failure before the tag moves
changes nothing; a failing alias puts the tag back. One promotion per environment at a time:
an ``fcntl`` lock next to the file serialises them.
"""

from __future__ import annotations

import fcntl
import getpass
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pipeline.config import Settings
from pipeline.errors import PromotionRefused, RegistryError, TrackingError
from pipeline.ml import tracking
from pipeline.release.evidence import evidence_tag, find_evidence, image_manifest
from pipeline.release.registry import Manifest, Registry
from pipeline.release.state import (
    Environment,
    EvidenceRef,
    Image,
    Model,
    Release,
    State,
    read_state,
    state_path,
    write_state,
)

log = logging.getLogger("pipeline.release.promotion")
ORDER: dict[str, str] = {"production": "staging"}  # an environment and the one before it


@dataclass(frozen=True)
class Outcome:
    state: State
    changed: bool
    seconds: float  # the tag move: manifest copy and read-back


@contextmanager
def locked(settings: Settings, env: str) -> Iterator[None]:
    """Hold deploy/.<env>.lock; wait for a running promotion up to PROMOTE_LOCK_TIMEOUT_S."""
    path = settings.deploy_dir / f".{env}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        deadline, said = time.monotonic() + settings.promote_lock_timeout_s, False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "?"
                if time.monotonic() >= deadline:
                    raise PromotionRefused(
                        f"another promotion of {env} (pid {holder}) holds {path} and did not "
                        f"finish within {settings.promote_lock_timeout_s:g} s: retry when it is "
                        "done (PROMOTE_LOCK_TIMEOUT_S sets the wait)"
                    ) from None
                if not said:
                    log.info("waiting for another promotion of %s (pid %s)", env, holder)
                    said = True
                time.sleep(0.1)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def promote(settings: Settings, *, ref: str, env: Environment) -> Outcome:
    """Move ``env`` to the digest ``ref`` names; see the module docstring for the checks."""
    registry = Registry(settings)
    with locked(settings, env):
        manifest = image_manifest(registry, registry.reference(ref))
        before = ORDER.get(env)
        if before is not None:
            held = read_state(settings.deploy_dir, before)
            in_git = held.image.digest if held else None
            in_registry = registry.digest_of(before)
            if in_git != manifest.digest or in_registry != manifest.digest:
                raise PromotionRefused(
                    f"{env} takes only the digest {before} holds now, and {before} holds "
                    f"{in_registry or 'nothing'} in the registry, {in_git or 'nothing'} in "
                    f"deploy/{before}.yaml: first `pipeline promote --image {manifest.digest} "
                    f"--to {before}`"
                )
        return _move(settings, registry, manifest, env=env, action="promote")


def rollback(settings: Settings, *, env: Environment, reason: str | None = None) -> Outcome:
    """Promote the newest earlier digest in the history (evidence checked again). As with
    `kubectl rollout undo`, a second rollback returns to the digest the first one left."""
    registry = Registry(settings)
    with locked(settings, env):
        state = read_state(settings.deploy_dir, env)
        if state is None:
            raise PromotionRefused(
                f"{state_path(settings.deploy_dir, env)} does not exist: nothing to undo"
            )
        earlier = [r for r in state.history if r.image.digest != state.image.digest]
        if not earlier:
            raise PromotionRefused(
                f"{env} has no earlier digest in its history: nothing to roll back to"
            )
        manifest = image_manifest(registry, earlier[0].image.digest)
        return _move(settings, registry, manifest, env=env, action="rollback", reason=reason)


def _move(
    settings: Settings,
    registry: Registry,
    manifest: Manifest,
    *,
    env: Environment,
    action: Literal["promote", "rollback"],
    reason: str | None = None,
) -> Outcome:
    evidence = find_evidence(registry, manifest)
    labels = (registry.image_config(manifest).get("config") or {}).get("Labels") or {}
    name, version = labels.get("ml.model.name"), labels.get("ml.model.version")
    if not name or not version:
        raise PromotionRefused(f"{registry.ref(manifest.digest)} has no ml.model.* labels")
    model = tracking.version_state(settings, name=name, version=version)
    state, held = read_state(settings.deploy_dir, env), registry.digest_of(env)
    holds = held == manifest.digest and env in model.aliases
    if state is not None and state.image.digest == manifest.digest and holds:
        return Outcome(state=state, changed=False, seconds=0.0)
    started = time.monotonic()
    registry.put_manifest(manifest, env)
    seconds = time.monotonic() - started
    try:
        tracking.move_alias(settings, name=name, version=version, alias=env)
    except TrackingError:
        if held is not None and held != manifest.digest:
            _put_back(registry, held, env)
        raise
    release = Release(
        action=action,
        image=Image(repository=registry.repository, digest=manifest.digest),
        model=Model(name=name, version=version, mlflow_run_id=model.run_id),
        evidence=EvidenceRef(digest=evidence.digest, tag=evidence_tag(manifest.digest)),
        promoted_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        promoted_by=_who(settings),
        reason=reason[:500] if reason else None,
    )
    history = [] if state is None else [_entry(state), *state.history]
    experiment = None if state is None else state.experiment  # `pipeline ab` owns it
    new = State(environment=env, experiment=experiment, history=history, **dict(release))
    write_state(settings.deploy_dir, new)
    return Outcome(state=new, changed=True, seconds=seconds)


def _entry(state: State) -> Release:
    return Release.model_validate(state.model_dump(include=set(Release.model_fields)))


def _put_back(registry: Registry, digest: str, env: str) -> None:
    try:
        previous = registry.manifest(digest)
        if previous is not None:
            registry.put_manifest(previous, env)
    except RegistryError as exc:
        log.error("could not put %s back on %s: %s", env, digest, exc)


def _who(settings: Settings) -> str:
    if settings.promoted_by:
        return settings.promoted_by
    try:
        done = subprocess.run(
            ["git", "config", "user.email"], capture_output=True, text=True, check=False
        )
    except OSError:
        done = None
    return (done.stdout.strip() if done else "") or getpass.getuser()
