"""Docker Swarm: the only module that talks to it, through the docker CLI.

Why the CLI and not the docker SDK (which :mod:`pipeline.image` owns for builds and pushes):
``docker stack deploy`` exists only in the CLI (the SDK has no Compose or stack support), and its
raw exit code is itself something we record, as a canary for docker/cli#6752 (it exits 0 even
after Swarm rolled a failed update back). Reading services and tasks through the same client
keeps one owner for Swarm and reads exactly what the CLI applied; ``--format json`` answers are
parsed into the typed records below and nothing else leaves this module. ``DOCKER_HOST`` selects
the manager, as for every docker command.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import SwarmError

__all__ = ["Deployed", "LiveService", "Swarm", "SwarmError", "Task"]

log = logging.getLogger("pipeline.deploy")
STACK_LABEL = "com.docker.stack.namespace"
MAKE_SWARM = "run `make swarm` (a one-node Swarm on this machine) or point DOCKER_HOST at a manager"


@dataclass(frozen=True)
class Task:
    id: str
    service: str
    image: str
    state: str  # running, starting, failed, shutdown, rejected, ...
    desired: str  # running, shutdown, ...
    error: str
    created: str


@dataclass(frozen=True)
class LiveService:
    """One service as Swarm holds it: its spec (what it should run) and its update state."""

    id: str
    name: str
    spec: dict[str, Any]
    update_state: str | None
    update_started: str | None
    update_message: str

    @property
    def image(self) -> str:
        return str(self.spec["TaskTemplate"]["ContainerSpec"]["Image"])

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.spec.get("Labels") or {})

    @property
    def replicas(self) -> int:
        return int(((self.spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas", 0))


@dataclass(frozen=True)
class Deployed:
    exit_code: int  # docker stack deploy's own, recorded as is
    output: str
    seconds: float


class Swarm:
    """The docker CLI against ``DOCKER_HOST`` (or the default socket)."""

    def __init__(self, *, docker: str = "docker", timeout: float = 120) -> None:
        found = shutil.which(docker)
        if found is None:
            raise SwarmError(f"the docker CLI ({docker}) is not on PATH: install it")
        self.docker, self.timeout = found, timeout

    def _run(
        self, *args: str, check: bool = True, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        try:
            done = subprocess.run(
                [self.docker, *args],
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise SwarmError(f"docker {args[0]} did not answer in {self.timeout:g} s") from None
        if check and done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or ["no message"])[-1][:300]
            raise SwarmError(f"docker {' '.join(args[:2])} failed: {reason}")
        return done

    def _json(self, *args: str) -> list[dict[str, Any]]:
        text = self._run(*args).stdout.strip()
        data = json.loads(text) if text else []
        return data if isinstance(data, list) else [data]

    def ensure_manager(self) -> None:
        done = self._run("info", "--format", "{{json .Swarm}}", check=False)
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or ["no answer"])[-1][:200]
            raise SwarmError(f"no Docker engine answers ({reason}): {MAKE_SWARM}")
        info = json.loads(done.stdout or "{}")
        if info.get("LocalNodeState") != "active" or not info.get("ControlAvailable"):
            state = info.get("LocalNodeState") or "unknown"
            raise SwarmError(f"this engine is not a Swarm manager (state {state}): {MAKE_SWARM}")

    def services(self, stack: str) -> dict[str, LiveService]:
        """The stack's services by their short name (``model``, not ``stack_model``)."""
        ids = self._run(
            "service", "ls", "-q", "--filter", f"label={STACK_LABEL}={stack}"
        ).stdout.split()
        found: dict[str, LiveService] = {}
        for raw in self._json("service", "inspect", *ids) if ids else []:
            spec, status = raw["Spec"], raw.get("UpdateStatus") or {}
            name = str(spec["Name"]).removeprefix(f"{stack}_")
            found[name] = LiveService(
                id=str(raw["ID"]),
                name=str(spec["Name"]),
                spec=spec,
                update_state=status.get("State"),
                update_started=status.get("StartedAt"),
                update_message=str(status.get("Message") or ""),
            )
        return found

    def tasks(self, service: str) -> list[Task]:
        """Every task Swarm still remembers for ``service`` (running and recent history)."""
        ids = self._run("service", "ps", "-q", "--no-trunc", service).stdout.split()
        tasks = []
        for raw in self._json("inspect", "--type", "task", *ids) if ids else []:
            status = raw.get("Status") or {}
            error = str(status.get("Err") or "")
            code = (status.get("ContainerStatus") or {}).get("ExitCode")
            if not error and status.get("State") in ("complete", "failed") and code is not None:
                error = f"exited {code}"  # a server that gives up exits; Swarm says no more
            tasks.append(
                Task(
                    id=str(raw["ID"]),
                    service=service,
                    image=str(raw["Spec"]["ContainerSpec"]["Image"]),
                    state=str(status.get("State", "")),
                    desired=str(raw.get("DesiredState", "")),
                    error=error,
                    created=str(raw.get("CreatedAt", "")),
                )
            )
        return sorted(tasks, key=lambda t: t.created, reverse=True)

    def deploy(self, stack_file: Path, *, stack: str) -> Deployed:
        """``docker stack deploy``; its exit code is returned as is, never trusted alone."""
        started = time.monotonic()
        done = self._run(
            "stack",
            "deploy",
            "--compose-file",
            str(stack_file.resolve()),
            "--resolve-image",
            "never",
            "--prune",
            "--detach=true",
            stack,
            check=False,
            cwd=stack_file.resolve().parent,  # it names its haproxy.cfg relative to itself
        )
        output = (done.stdout + done.stderr).strip()
        log.debug("docker stack deploy: %s", output)
        return Deployed(done.returncode, output, time.monotonic() - started)

    def scale(self, service: str, replicas: int) -> None:
        """Set the replicas of ``service`` (``docker service scale``, detached: the caller
        reads the outcome from the tasks, not from the command)."""
        self._run("service", "scale", "--detach", f"{service}={replicas}")

    def unused_configs(self, stack: str, *, keep: set[str]) -> list[str]:
        """Config objects of the stack not named in ``keep`` (old entry configs)."""
        names = self._run(
            "config", "ls", "--filter", f"label={STACK_LABEL}={stack}", "--format", "{{.Name}}"
        ).stdout.split()
        return sorted(set(names) - keep)

    def remove_config(self, name: str) -> bool:
        """Remove a config; False when a task still uses it (it goes next time)."""
        return self._run("config", "rm", name, check=False).returncode == 0

    def remove_stack(self, stack: str) -> None:
        self._run("stack", "rm", stack, check=False)

    def service_logs(self, service: str, *, since: str, into: Path) -> Path:
        """The logs since ``since`` of every container of ``service`` on this node that the
        engine still keeps (running or exited), oldest first, written to ``into`` (the A/B
        analysis reads exposure and feedback lines from it). ``docker logs`` per container,
        not ``docker service logs``: the latter hung here (Docker 20.10) when a task's
        container had been removed."""
        ids = self._run(
            "ps", "-aq", "--filter", f"label=com.docker.swarm.service.name={service}",
        ).stdout.split()  # fmt: skip
        into.parent.mkdir(parents=True, exist_ok=True)
        with into.open("w") as handle:
            for container in reversed(ids):  # `docker ps` lists the newest first
                try:
                    done = subprocess.run(
                        [self.docker, "logs", "--since", since, container],
                        stdout=handle,
                        stderr=subprocess.STDOUT,
                        text=True,
                        timeout=self.timeout,
                        check=False,
                    )
                except subprocess.TimeoutExpired:
                    raise SwarmError(f"docker logs {container} ({service}) took too long") from None
                if done.returncode != 0:
                    raise SwarmError(f"docker logs {container} ({service}) failed: see {into}")
        return into

    def run_in_tasks(self, service: str, argv: list[str], *, stdin: str = "") -> list[str]:
        """Run ``argv`` (with ``stdin``) in each running container of ``service`` on this node
        (``docker exec``); their outputs. The A/B split talks to the entry's HAProxy runtime API
        this way (:mod:`pipeline.deploy.haproxy_runtime`): its socket never leaves the container."""
        ids = self._run(
            "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service}",
            "--filter", "status=running",
        ).stdout.split()  # fmt: skip
        outputs = []
        for container in ids:
            try:
                done = subprocess.run(
                    [self.docker, "exec", "-i", container, *argv],
                    input=stdin,
                    capture_output=True,
                    text=True,
                    timeout=self.timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise SwarmError(
                    f"docker exec in {service} did not answer in {self.timeout:g} s"
                ) from None
            if done.returncode != 0:
                reason = (done.stderr.strip().splitlines() or ["no message"])[-1][:300]
                raise SwarmError(f"docker exec in {service} ({container}) failed: {reason}")
            outputs.append(done.stdout)
        return outputs
