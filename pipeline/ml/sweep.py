"""`pipeline sweep`: a grid or random search over params.yaml keys, as queued DVC experiments.

The only module that drives DVC's experiment queue (the `dvc` command, as a subprocess). What it
promises (docs/sweep.md):

- each trial is ``dvc exp run --queue --force validate -S key=value ...``: it runs prepare, train
  and validate afresh and stops there, so no trial builds an image; the queue runs them in
  temporary copies (``.dvc/tmp/exps``) with ``dvc queue start -j N``;
- every trial logs to the workspace's MLflow store (a relative SQLite URI is made absolute and
  passed through the environment, or it would land in the temporary copy) as a child of one
  parent run this module creates; a trial registers its version but leaves ``@candidate`` alone;
- a trial that fails with an empty log (a worker that died, a race in the queue) or on SQLite's
  "database is locked" is queued once more; any other failure's log is returned to be shown;
- the trials are ranked by a holdout metric, gate results beside it, read back from each child
  run's ``validation/holdout.json`` and ``validation/gates.json`` through :mod:`pipeline.artifacts`.
"""

from __future__ import annotations

import ast
import itertools
import json
import logging
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pipeline import artifacts, config
from pipeline.config import LOWER_IS_BETTER, Params, Settings
from pipeline.errors import ConfigError, PipelineError, ServiceError
from pipeline.ml import tracking

log = logging.getLogger("pipeline")

#: the last stage a trial runs: never containerize
TARGET = "validate"
MAX_TRIALS = 200
MAX_JOBS = 32
#: how often the queue is read (a read costs about 1 s of CPU on a busy 2-core machine)
POLL_S = 5.0
MAX_MISSES = 12
#: polls with trials queued and none running before the workers are started again
STALLED_POLLS = 4
#: how much of a failed trial's log is shown
LOG_TAIL_LINES = 40
#: failures worth one more try: an empty log, or SQLite refusing a concurrent writer
RETRYABLE = re.compile(r"database is locked")
_QUEUED = re.compile(r"Queued experiment '([^']+)'")
_OVERRIDES = re.compile(r"Queueing with overrides '(\{.*\})'")


class SweepFailed(ServiceError):
    """One or more trials failed for a reason other than a quality gate; logs are shown."""


def default_jobs() -> int:
    """One worker per core, at most 4: each trial is a process that trains on one core."""
    return max(1, min(os.cpu_count() or 1, 4))


def check_jobs(jobs: int) -> None:
    if not 1 <= jobs <= MAX_JOBS:
        raise ConfigError(f"--jobs {jobs}: use 1..{MAX_JOBS} (default here: {default_jobs()})")


@dataclass(frozen=True)
class Axis:
    key: str
    values: tuple[str, ...]


@dataclass
class Trial:
    name: str
    overrides: tuple[str, ...]
    state: str = "queued"  # queued | running | success | failed
    attempts: int = 1
    log: str = ""
    run_id: str | None = None
    version: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    gates: artifacts.GateReport | None = None

    @property
    def outcome(self) -> str:
        """pass | gates failed | failed (anything else: the log says)"""
        if self.gates is not None and not self.gates.passed:
            return "gates failed"
        if self.gates is not None and self.metrics and self.state == "success":
            return "pass"
        return "failed"


@dataclass(frozen=True)
class SweepResult:
    parent_run_id: str
    metric: str
    trials: list[Trial]  # ranked: passing best first, then gate failures, then failures
    seconds: float
    applied: str | None

    @property
    def best(self) -> Trial | None:
        return next((t for t in self.trials if t.outcome == "pass"), None)

    def as_json(self) -> dict[str, Any]:
        return {
            "parent_run_id": self.parent_run_id,
            "metric": self.metric,
            "seconds": round(self.seconds, 1),
            "applied": self.applied,
            "trials": [
                {
                    "rank": i + 1,
                    "name": t.name,
                    "params": dict(o.split("=", 1) for o in t.overrides),
                    "outcome": t.outcome,
                    "metric": t.metrics.get(self.metric),
                    "metrics": t.metrics,
                    "gates": None
                    if t.gates is None
                    else {f"{r.metric} {r.gate}": r.passed for r in t.gates.rows},
                    "run_id": t.run_id,
                    "model_version": t.version,
                    "attempts": t.attempts,
                }
                for i, t in enumerate(self.trials)
            ],
        }


def parse_axes(specs: list[str], raw: dict[str, Any]) -> list[Axis]:
    """``-S key=v1,v2`` (DVC's grid syntax, plain lists only) against params.yaml's keys."""
    if not specs:
        raise ConfigError("nothing to sweep: give at least one -S key=value1,value2")
    axes = []
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise ConfigError(f"-S {spec!r}: write key=value1,value2 (e.g. train.x.C=0.1,1)")
        if any(c in spec for c in "()[]{}'\""):
            raise ConfigError(f"-S {spec!r}: only plain comma lists are supported")
        node: Any = raw
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"-S {spec!r}: params.yaml has no key {key!r}")
            node = node[part]
        if isinstance(node, dict | list):
            raise ConfigError(f"-S {spec!r}: {key!r} is a section; name one of its values")
        choices = tuple(dict.fromkeys(v.strip() for v in values.split(",")))
        if any(not v for v in choices):
            raise ConfigError(f"-S {spec!r}: an empty value")
        axes.append(Axis(key, choices))
    keys = [a.key for a in axes]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"-S names a key twice: {keys}")
    return axes


def combinations(axes: list[Axis], *, sample: int | None, seed: int) -> list[tuple[str, ...]]:
    """Every combination (grid), or ``sample`` distinct ones drawn with ``seed`` (random)."""
    size = 1
    for axis in axes:
        size *= len(axis.values)
    if sample is not None:
        if not 1 <= sample <= size:
            raise ConfigError(f"--random {sample}: the grid has {size} combinations (1..{size})")
        picked = sorted(random.Random(seed).sample(range(size), sample))
        size = sample
    if size > MAX_TRIALS:
        raise ConfigError(f"{size} trials is more than {MAX_TRIALS}: narrow the grid or --random")
    grid = [
        tuple(f"{a.key}={v}" for a, v in zip(axes, values, strict=True))
        for values in itertools.product(*(a.values for a in axes))
    ]
    return grid if sample is None else [grid[i] for i in picked]


def check_trial_params(raw: dict[str, Any], trial: tuple[str, ...]) -> None:
    """Each trial's params.yaml must validate, so a typo stops the sweep before anything runs."""
    changed = json.loads(json.dumps(raw))
    for override in trial:
        key, _, value = override.partition("=")
        *path, last = key.split(".")
        node = changed
        for part in path:
            node = node[part]
        node[last] = yaml.safe_load(value)
    try:
        Params.model_validate(changed)
    except ValidationError as exc:
        raise ConfigError(f"trial {' '.join(trial)}: {config._describe(exc, changed)}") from None


def sweep(
    *,
    params: Params,
    settings: Settings,
    raw_params: dict[str, Any],
    specs: list[str],
    jobs: int,
    metric: str | None,
    sample: int | None = None,
    seed: int = 0,
    apply_best: bool = False,
    timeout_s: float = 3600,
    root: Path = Path("."),
) -> SweepResult:
    started = time.monotonic()
    check_jobs(jobs)
    gates = [str(m) for m in params.validate_.gates]
    metric = metric or (gates[0] if gates else None)
    if metric is None or metric not in gates:
        raise ConfigError(
            f"--metric {metric!r}: rank by one of the metrics validate.gates names: {gates}"
        )
    axes = parse_axes(specs, raw_params)
    trials = combinations(axes, sample=sample, seed=seed)
    for trial in trials:
        check_trial_params(raw_params, trial)
    root = root.resolve()
    busy = _unfinished(_queue_states(root))
    if busy:
        raise ConfigError(
            f"the DVC queue already holds unfinished experiments {sorted(busy)}: wait for them "
            "(`dvc queue status`) or remove them (`dvc queue remove --queued`)"
        )
    trial_settings = _absolute(settings, root)
    parent = tracking.start_parent(
        trial_settings,
        experiment=params.train.experiment,
        name=f"sweep-{time.strftime('%Y%m%d-%H%M%S')}",
        tags={"sweep.grid": " ".join(specs), "sweep.metric": metric},
    )
    log.info("sweep: parent run %s, %d trial(s), %d job(s)", parent, len(trials), jobs)
    env = _trial_env(trial_settings, parent)
    ok, best = False, None
    try:
        queued = _queue(root, env, axes if sample is None else None, trials)
        _run_queue(root, env, queued, jobs=jobs, timeout_s=timeout_s)
        retry = [t for t in queued.values() if t.state == "failed" and _retryable(t)]
        if retry:
            log.warning("re-queueing %s once (failed without a log)", [t.name for t in retry])
            again = _queue(root, env, None, [t.overrides for t in retry])
            for new in again.values():
                new.attempts = 2
            for old in retry:
                del queued[old.name]
            queued.update(again)
            _run_queue(root, env, again, jobs=min(jobs, len(again)), timeout_s=timeout_s)
        ranked = _rank(_collect(trial_settings, parent, queued), metric)
        best = next((t for t in ranked if t.outcome == "pass"), None)
        applied = None
        if apply_best and best is not None:
            _dvc(root, env, "exp", "apply", best.name)
            applied = best.name
        ok = all(t.outcome != "failed" for t in ranked)
    finally:
        tracking.end_parent(
            trial_settings,
            run_id=parent,
            ok=ok,
            params={"sweep.trials": str(len(trials)), "sweep.jobs": str(jobs)},
            tags={"sweep.best": best.name} if best is not None else {},
        )
    return SweepResult(parent, metric, ranked, time.monotonic() - started, applied)


def _absolute(settings: Settings, root: Path) -> Settings:
    """The workspace's store, whatever directory a trial runs in."""
    uri = settings.mlflow_tracking_uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{(root / uri.removeprefix('sqlite:///')).resolve()}"
    elif "://" not in uri:  # a plain path: MLflow's file store
        uri = str((root / uri).resolve())
    artifacts_dir = (root / settings.mlflow_artifacts_dir).resolve()
    return settings.model_copy(
        update={"mlflow_tracking_uri": uri, "mlflow_artifacts_dir": artifacts_dir}
    )


def _trial_env(settings: Settings, parent: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_TRACKING_URI"] = settings.mlflow_tracking_uri
    env["MLFLOW_ARTIFACTS_DIR"] = str(settings.mlflow_artifacts_dir)
    env["PIPELINE_SWEEP_PARENT_RUN_ID"] = parent
    return env


def _dvc_bin() -> str:
    beside = Path(sys.executable).parent / "dvc"
    found = str(beside) if beside.is_file() else shutil.which("dvc")
    if found is None:
        raise ConfigError("the `dvc` command is not installed in this environment")
    return found


def _dvc(root: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [_dvc_bin(), *args], cwd=root, env=env, capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        raise SweepFailed(
            f"`dvc {' '.join(args[:3])} ...` exited {done.returncode}: "
            f"{(done.stderr or done.stdout).strip()[-600:]}"
        )
    return done.stdout + done.stderr


def _queue(
    root: Path, env: dict[str, str], axes: list[Axis] | None, trials: list[tuple[str, ...]]
) -> dict[str, Trial]:
    """Queue the trials: a whole grid in one DVC call (its grid syntax), else one per trial."""
    calls: list[list[str]] = []
    if axes is not None:
        calls.append([f for a in axes for f in ("-S", f"{a.key}={','.join(a.values)}")])
    else:
        calls.extend([f for o in trial for f in ("-S", o)] for trial in trials)
    queued: dict[str, Trial] = {}
    for flags in calls:
        # --force: every trial trains and validates afresh. Without it DVC's run cache restores
        # a train stage an earlier sweep ran with the same params (no new run under this
        # parent), and a trial equal to the workspace's dvc.lock skips train altogether.
        output = _dvc(root, env, "exp", "run", "--queue", "--force", TARGET, *flags)
        overrides = [
            tuple(ast.literal_eval(m).get("params.yaml", [])) for m in _OVERRIDES.findall(output)
        ]
        names = _QUEUED.findall(output)
        if len(names) != len(overrides):  # DVC did not print overrides: a single trial
            overrides = [tuple(flags[1::2])] * len(names)
        for name, trial in zip(names, overrides, strict=True):
            queued[name] = Trial(name=name, overrides=trial)
    expected = len(trials)
    if len(queued) != expected:
        raise SweepFailed(f"asked DVC to queue {expected} trial(s), it queued {len(queued)}")
    log.info("queued %d trial(s): %s", len(queued), ", ".join(queued))
    return queued


#: what one poll runs: DVC's own `dvc queue status` query (the task queue's records, no
#: executor directories, no experiments lock), printed as JSON lines instead of a table
_STATUS = (
    "import json, sys\n"
    "from dvc.repo import Repo\n"
    "with Repo(sys.argv[1]) as repo:\n"
    "    for e in repo.experiments.celery_queue.status():\n"
    "        print(json.dumps({'name': e.get('name'), 'status': e.get('status')}))\n"
)
#: a poll that takes longer than this is killed and counts as a miss
STATUS_TIMEOUT_S = 60


def _queue_states(root: Path) -> dict[str, str]:
    """name -> state (queued, running, failed, success) of every task in the DVC queue.

    Not `dvc exp show`: it reads the executors' temporary repositories and takes the experiments
    lock, so it races the workers setting one up and has been seen to block for minutes under
    load (iterative/dvc#8762); `dvc queue status` reads only the queue's records.
    """
    try:
        done = subprocess.run(
            [sys.executable, "-c", _STATUS, str(root)],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=STATUS_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise SweepFailed(f"reading the DVC queue took over {STATUS_TIMEOUT_S} s") from None
    if done.returncode != 0:
        raise SweepFailed(f"reading the DVC queue failed: {done.stderr.strip()[-600:]}")
    states: dict[str, str] = {}
    for line in done.stdout.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a warning DVC printed
        if isinstance(entry, dict) and entry.get("name"):
            states[str(entry["name"])] = str(entry.get("status") or "unknown").lower()
    return states


def _unfinished(states: dict[str, str]) -> set[str]:
    return {n for n, s in states.items() if s in ("queued", "running")}


def _run_queue(
    root: Path, env: dict[str, str], trials: dict[str, Trial], *, jobs: int, timeout_s: float
) -> None:
    """Start the workers and wait until every trial succeeded or failed."""
    _start_workers(root, env, jobs)
    deadline = time.monotonic() + timeout_s
    done, misses, stalled, seen = 0, 0, 0, ""
    while True:
        if time.monotonic() > deadline:
            raise SweepFailed(
                f"trials still unfinished after {timeout_s:.0f} s: "
                f"{[t.name for t in trials.values() if t.state not in ('success', 'failed')]}; "
                "see `dvc queue status`"
            )
        try:
            states = _queue_states(root)
            misses = 0
        except SweepFailed as exc:
            # a slow or failed read (a busy machine, a worker holding the queue's files):
            # read again, give up only if it persists
            misses += 1
            if misses > MAX_MISSES:
                raise
            log.warning("reading the queue failed (%s); again", exc)
            time.sleep(POLL_S)
            continue
        for trial in trials.values():
            trial.state = states.get(trial.name, "queued")
        finished = [t for t in trials.values() if t.state in ("success", "failed")]
        counts = ", ".join(
            f"{n} {state}"
            for state in ("queued", "running", "success", "failed")
            if (n := sum(t.state == state for t in trials.values()))
        )
        if counts != seen:  # a line whenever the picture changes, so a stall shows
            seen = counts
            log.info("sweep: %s", counts)
        done = len(finished)
        if done == len(trials):
            break
        waiting = [t for t in trials.values() if t.state == "queued"]
        stalled = (
            stalled + 1 if waiting and all(t.state != "running" for t in trials.values()) else 0
        )
        if stalled >= STALLED_POLLS:
            # the workers can exit with trials still queued (iterative/dvc#10562); `queue
            # start` spawns only the workers that are missing
            log.warning("%d trial(s) queued and none running: starting workers again", len(waiting))
            _start_workers(root, env, min(jobs, len(waiting)))
            stalled = 0
        time.sleep(POLL_S)
    for trial in trials.values():
        if trial.state == "failed":
            trial.log = _logs(root, trial.name)


def _start_workers(root: Path, env: dict[str, str], jobs: int) -> None:
    subprocess.run(
        [_dvc_bin(), "queue", "start", "-j", str(jobs)],
        cwd=root,
        env=env,
        # the workers inherit the environment (the store, the parent run); not our pipes, or
        # this call would wait for them
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
        timeout=120,
    )


def _logs(root: Path, name: str) -> str:
    done = subprocess.run(
        [_dvc_bin(), "queue", "logs", name], cwd=root, capture_output=True, text=True, timeout=60
    )
    lines = done.stdout.strip().splitlines()
    return "\n".join(lines[-LOG_TAIL_LINES:])


def _retryable(trial: Trial) -> bool:
    return trial.attempts == 1 and (not trial.log.strip() or bool(RETRYABLE.search(trial.log)))


def _collect(settings: Settings, parent: str, trials: dict[str, Trial]) -> list[Trial]:
    """Each trial's metrics and gates from its child run (joined by the DVC experiment name)."""
    with tempfile.TemporaryDirectory(prefix="sweep-") as scratch:
        runs = tracking.trial_runs(settings, parent_run_id=parent, download_to=Path(scratch))
        by_name = {r.exp_name: r for r in runs if r.exp_name}
        for trial in trials.values():
            run = by_name.get(trial.name)
            if run is None:
                trial.log = f"{trial.log}\n(no MLflow run under parent {parent} names it)".strip()
                continue
            trial.run_id = run.run_id
            try:
                if run.metrics is not None:
                    trial.metrics = artifacts.read_metrics(run.metrics)
                if run.gates is not None:
                    trial.gates = artifacts.read_gates(run.gates)
                    trial.version = trial.gates.model.version
            except PipelineError as exc:  # a record that is not one (ArtifactError)
                trial.log = f"{trial.log}\n{exc}".strip()
    return list(trials.values())


def _rank(trials: list[Trial], metric: str) -> list[Trial]:
    sign = 1.0 if metric in LOWER_IS_BETTER else -1.0
    order = {"pass": 0, "gates failed": 1, "failed": 2}

    def key(t: Trial) -> tuple[int, float, str]:
        value = t.metrics.get(metric)
        return order[t.outcome], sign * value if value is not None else 0.0, t.name

    return sorted(trials, key=key)
