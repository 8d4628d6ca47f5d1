"""`pipeline reconcile --watch`: reconcile again and again, one at a time, backing off.

A desired state whose rollout failed is recorded (``build/deploy/<env>.failed.json``, by a
one-shot reconcile too) and not applied again until git changes it: its render, and so its key,
differs. Drift found on the way is reverted and reported by the pass itself.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.deploy.reconcile import Outcome, plan, reconcile
from pipeline.deploy.stack import Desired
from pipeline.deploy.swarm import Swarm
from pipeline.errors import PipelineError, ReleaseRefused, RolloutFailed

__all__ = ["exclusive", "read_failed", "record_failed", "watch"]

log = logging.getLogger("pipeline.deploy")


@contextmanager
def exclusive(env: str, *, folder: Path = Path("build/deploy")) -> Iterator[None]:
    """One reconcile of ``env`` at a time on this machine (a --watch and a workflow step)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".{env}.reconcile.lock"
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise ReleaseRefused(
                f"another reconcile of {env} (pid {holder}) is running ({path}): let it finish"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_failed(path: Path) -> dict[str, str]:
    """Desired states (by :meth:`Desired.key`) that already failed, with the reason."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def record_failed(path: Path, desired: Desired, reason: str) -> None:
    failed = read_failed(path)
    failed[desired.key()] = f"{desired.model_digest}: {reason}"[:500]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(failed, indent=2, sort_keys=True) + "\n")


def watch(
    render_desired: Callable[[], Desired],
    swarm: Swarm,
    *,
    deploy_dir: Path,
    timeout: float,
    interval: float,
    report: Callable[[Outcome | RolloutFailed], None],
    failed_file: Path,
    passes: int | None = None,
) -> None:
    """Reconcile every ``interval`` seconds (``passes`` times, or until interrupted).

    A desired state that failed (here, or in a one-shot reconcile: ``failed_file``) is not
    applied again until git changes it, so its render differs; a pass that cannot render or
    reach Swarm is logged and retried next time."""
    done = 0
    while passes is None or done < passes:
        done += 1
        try:
            desired = render_desired()
            failed = read_failed(failed_file)
            if desired.key() in failed:
                if not plan(swarm, desired).in_sync:
                    log.warning(
                        "backing off: this desired state of %s already failed (%s); "
                        "waiting for git to change it",
                        desired.env,
                        failed[desired.key()],
                    )
            else:
                try:
                    with exclusive(desired.env):
                        outcome = reconcile(swarm, desired, deploy_dir=deploy_dir, timeout=timeout)
                except RolloutFailed as exc:
                    record_failed(failed_file, desired, exc.outcome.reason() or str(exc))
                    report(exc)
                else:
                    if outcome.applied:
                        report(outcome)
        except PipelineError as exc:
            log.error("reconcile pass failed: %s (retrying in %g s)", exc, interval)
        if passes is None or done < passes:
            time.sleep(interval)
