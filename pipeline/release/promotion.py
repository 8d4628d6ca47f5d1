"""`pipeline promote` and `pipeline rollback`: move an environment to a verified digest.

An environment (``staging``, ``production``) is three things that must agree: a tag in the image
repository, the MLflow alias of the model version inside that image, and the file
``deploy/<environment>.yaml`` that the promote workflow commits (GitOps). A promotion never
builds or pushes layers. In order:

1. resolve the reference to a digest; verify its signed evidence (:mod:`.evidence`: contract,
   SBOM, provenance, each signed by a key in RELEASE_SIGNERS_DIR); for production, staging must
   hold the digest in the registry and in ``deploy/staging.yaml``; the model version must exist;
2. compare-and-swap: re-read the environment's tag (and, for production, staging) right before
   the write and refuse if it moved since step 1;
3. copy the manifest to the tag and read it back; move the alias; write the file; read the tag
   once more (another writer since step 2 is caught here).

A failure before step 3 changes nothing. A failure during step 3 puts back what moved (the tag
on its previous digest, the alias on its previous version or removed); what cannot be put back
(a registry that cannot delete a tag, a registry or store that is down) is named in ONE line with
the command that finishes the job, and running that command converges: tag, alias and file then
agree. Locks: ``deploy/.<env>.lock`` (``fcntl``) serialises promotions on one host only; a
production promotion holds staging's lock too. Across machines the promote workflow's
``concurrency:`` group is what serialises runners (docs/release.md).
"""

from __future__ import annotations

import fcntl
import getpass
import itertools
import logging
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, NoReturn

from pipeline.config import Settings
from pipeline.errors import PipelineError, PromotionRefused, RegistryError, ServiceError
from pipeline.ml import tracking
from pipeline.release import signing
from pipeline.release.evidence import CONTRACT, find_evidence, image_labels, image_manifest
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
    skipped: list[str] = field(default_factory=list)  # history entries a rollback passed over


class HalfDone(ServiceError):
    """A step failed after something moved, and not all of it could be put back: the message
    names what moved and the command that finishes the promotion."""


@contextmanager
def locked(settings: Settings, env: str) -> Iterator[None]:
    """Hold deploy/.<env>.lock; wait for a running promotion up to PROMOTE_LOCK_TIMEOUT_S.
    Host-local: another machine's promotion does not see it (see the module docstring)."""
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
    keys = signing.trusted_keys(settings)
    before = ORDER.get(env)
    with ExitStack() as stack:
        if before is not None:  # staging's lock first: a staging promotion never waits on ours
            stack.enter_context(locked(settings, before))
        stack.enter_context(locked(settings, env))
        manifest = image_manifest(registry, registry.reference(ref))
        recheck = None
        if before is not None:
            _staged(settings, registry, manifest.digest, env=env, before=before)
            recheck = lambda: _staged(  # noqa: E731
                settings, registry, manifest.digest, env=env, before=before
            )
        return _move(
            settings, registry, manifest, env=env, action="promote", keys=keys, recheck=recheck
        )


def _staged(settings: Settings, registry: Registry, digest: str, *, env: str, before: str) -> None:
    held = read_state(settings.deploy_dir, before)
    in_git = held.image.digest if held else None
    in_registry = registry.digest_of(before)
    if in_git != digest or in_registry != digest:
        raise PromotionRefused(
            f"{env} takes only the digest {before} holds now, and {before} holds "
            f"{in_registry or 'nothing'} in the registry, {in_git or 'nothing'} in "
            f"deploy/{before}.yaml: first `pipeline promote --image {digest} --to {before}`"
        )


def rollback(
    settings: Settings, *, env: Environment, to: str | None = None, reason: str | None = None
) -> Outcome:
    """Go back to an earlier digest of ``env``'s history: ``to`` (any digest in it), or the
    newest one that is neither current nor one a run of rollbacks just left, so a second plain
    rollback goes further back instead of returning to the bad digest. Entries whose image is
    gone from the registry (garbage-collected) are skipped, and the outcome says which."""
    registry = Registry(settings)
    keys = signing.trusted_keys(settings)
    with locked(settings, env):
        state = read_state(settings.deploy_dir, env)
        if state is None:
            raise PromotionRefused(
                f"{state_path(settings.deploy_dir, env)} does not exist: nothing to undo"
            )
        entries: list[Release] = [state, *state.history]
        if to is not None:
            digest = registry.reference(to)
            if not any(entry.image.digest == digest for entry in entries):
                raise PromotionRefused(
                    f"{digest} is not in {env}'s history (deploy/{env}.yaml): `--to` takes a "
                    "digest the environment ran before; any other goes through `pipeline promote`"
                )
            manifest = registry.manifest(digest)
            if manifest is None:
                raise PromotionRefused(
                    f"{registry.ref(digest)} is gone from the registry (garbage-collected?): "
                    f"choose another digest of {env}'s history"
                )
            chosen: Manifest = image_manifest(registry, digest)
            skipped: list[str] = []
        else:
            previous, skipped = _previous(registry, entries)
            if previous is None:
                gone = f" ({'; '.join(skipped)})" if skipped else ""
                raise PromotionRefused(
                    f"{env} has no earlier digest in its history{gone}: nothing to roll back to"
                )
            chosen = previous
        outcome = _move(
            settings, registry, chosen, env=env, action="rollback", keys=keys, reason=reason
        )
        return Outcome(
            state=outcome.state, changed=outcome.changed, seconds=outcome.seconds, skipped=skipped
        )


def _previous(registry: Registry, entries: list[Release]) -> tuple[Manifest | None, list[str]]:
    """The newest earlier digest that is not current and not left by the rollbacks at the head
    of the history; plus a message for each entry skipped because its image is gone."""
    left = set()
    for newer, older in itertools.pairwise(entries):
        if newer.action != "rollback":
            break
        left.add(older.image.digest)  # a rollback left it: do not go back there
    current, skipped, seen = entries[0].image.digest, list[str](), set[str]()
    for entry in entries[1:]:
        digest = entry.image.digest
        if digest == current or digest in left or digest in seen:
            continue
        seen.add(digest)
        manifest = registry.manifest(digest)
        if manifest is None:
            message = (
                f"skipped {digest} ({entry.action} of {entry.promoted_at}): no longer in the "
                "registry (garbage-collected?)"
            )
            log.warning(message)
            skipped.append(message)
            continue
        return image_manifest(registry, digest), skipped
    return None, skipped


def _move(
    settings: Settings,
    registry: Registry,
    manifest: Manifest,
    *,
    env: Environment,
    action: Literal["promote", "rollback"],
    keys: list[signing.TrustedKey],
    recheck: Callable[[], None] | None = None,
    reason: str | None = None,
) -> Outcome:
    evidence = find_evidence(registry, manifest, keys=keys)
    labels = image_labels(registry, manifest)
    name, version = labels.get("ml.model.name"), labels.get("ml.model.version")
    if not name or not version:
        raise PromotionRefused(f"{registry.ref(manifest.digest)} has no ml.model.* labels")
    model = tracking.version_state(settings, name=name, version=version)
    state, held = read_state(settings.deploy_dir, env), registry.digest_of(env)
    holds = held == manifest.digest and env in model.aliases
    if state is not None and state.image.digest == manifest.digest and holds:
        return Outcome(state=state, changed=False, seconds=0.0)
    alias_before = tracking.alias_version(settings, name=name, alias=env)
    release = Release(
        action=action,
        image=Image(repository=registry.repository, digest=manifest.digest),
        model=Model(name=name, version=version, mlflow_run_id=model.run_id),
        evidence=EvidenceRef(
            digest=evidence.digest,
            tag=CONTRACT.tag(manifest.digest),
            signer=evidence.signer,
            sbom=evidence.artifacts.get("sbom"),
            provenance=evidence.artifacts.get("provenance"),
        ),
        promoted_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        promoted_by=_who(settings),
        reason=reason[:500] if reason else None,
    )
    history = [] if state is None else [_entry(state), *state.history]
    experiment = None if state is None else state.experiment  # `pipeline ab` owns it
    new = State(environment=env, experiment=experiment, history=history, **dict(release))

    # compare-and-swap: nothing may have moved since the checks above
    if recheck is not None:
        recheck()
    now = registry.digest_of(env)
    if now != held:
        raise PromotionRefused(
            f"the {env} tag moved from {held or 'nothing'} to {now or 'nothing'} while this "
            "promotion checked it (another promotion?): nothing changed; run it again"
        )
    undo = _Undo(settings, registry, env=env, held=held, target=manifest.digest)
    started = time.monotonic()
    try:
        registry.put_manifest(manifest, env, verify=False)
        after = registry.digest_of(env)
    except RegistryError as exc:
        undo.fail(f"moving the {env} tag failed ({exc})")
    seconds = time.monotonic() - started
    if after != manifest.digest:
        raise PromotionRefused(
            f"the {env} tag reads back as {after or 'nothing'}, not {manifest.digest}: another "
            "promotion wrote it at the same time; nothing else changed here; check "
            f"deploy/{env}.yaml on the default branch and run again if needed"
        )
    try:
        tracking.move_alias(settings, name=name, version=version, alias=env)
    except PipelineError as exc:
        try:  # did it move anyway? then it is put back too
            moved = tracking.alias_version(settings, name=name, alias=env) != alias_before
        except PipelineError:
            moved = True
        undo.alias = (name, alias_before) if moved else None
        undo.fail(f"moving MLflow alias @{env} to {name} version {version} failed ({exc})")
    undo.alias = (name, alias_before)
    try:
        write_state(settings.deploy_dir, new)
    except OSError as exc:
        undo.fail(f"writing {state_path(settings.deploy_dir, env)} failed ({exc})")
    try:
        last = registry.digest_of(env)
    except RegistryError as exc:  # everything moved; only the last look failed
        log.warning("could not re-read the %s tag after the promotion: %s", env, exc)
        last = manifest.digest
    if last != manifest.digest:
        _restore_file(settings, env, state)
        raise PromotionRefused(
            f"another promotion moved the {env} tag to {last} while this one ran: "
            f"deploy/{env}.yaml left as it was; the MLflow alias follows the last writer: run "
            f"`pipeline promote --image {last} --to {env}` to make the three agree"
        )
    return Outcome(state=new, changed=True, seconds=seconds)


class _Undo:
    """Puts back what a failed promotion moved; raises the one line that says how it ended."""

    def __init__(
        self, settings: Settings, registry: Registry, *, env: str, held: str | None, target: str
    ) -> None:
        self.settings, self.registry, self.env = settings, registry, env
        self.held, self.target = held, target  # a PUT that raised may have landed: undo it
        self.alias: tuple[str, str | None] | None = None  # (model, version before) once moved

    def fail(self, what: str) -> NoReturn:
        left: list[str] = []
        if self.held != self.target:
            left += self._tag()
        if self.alias is not None:
            left += self._alias(*self.alias)
        finish = f"`pipeline promote --image {self.target} --to {self.env}`"
        if not left:
            raise ServiceError(
                f"{what}; put back as it was, nothing changed: fix it, then {finish}"
            )
        raise HalfDone(
            f"{what}; still moved: {', '.join(left)}; to finish, fix it and run {finish}"
        )

    def _tag(self) -> list[str]:
        if self.held is None:
            return [f"the {self.env} tag now names {self.target} (it had none; this registry "
                    "API cannot delete a tag)"]  # fmt: skip
        try:
            previous = self.registry.manifest(self.held)
            if previous is None:
                raise RegistryError(f"{self.held} is gone")
            self.registry.put_manifest(previous, self.env)
            return []
        except RegistryError as exc:
            log.error("could not put the %s tag back on %s: %s", self.env, self.held, exc)
            return [f"the {self.env} tag may name {self.target} (putting {self.held} back failed)"]

    def _alias(self, name: str, version: str | None) -> list[str]:
        try:
            if version is None:
                tracking.delete_alias(self.settings, name=name, alias=self.env)
            else:
                tracking.move_alias(self.settings, name=name, version=version, alias=self.env)
            return []
        except PipelineError as exc:
            log.error("could not put MLflow alias @%s back: %s", self.env, exc)
            return [f"MLflow alias @{self.env} may name the new version"]


def _restore_file(settings: Settings, env: str, state: State | None) -> None:
    try:
        if state is None:
            state_path(settings.deploy_dir, env).unlink(missing_ok=True)
        else:
            write_state(settings.deploy_dir, state)
    except OSError as exc:
        log.error("could not restore deploy/%s.yaml: %s", env, exc)


def _entry(state: State) -> Release:
    return Release.model_validate(state.model_dump(include=set(Release.model_fields)))


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
