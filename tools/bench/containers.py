"""The bench's only door to the container engine: the docker CLI, as a user would type it.

The package's own engine module (pipeline/image.py) builds with no network and runs containers
with its own limits; the bench needs other things (a build with host networking for MLflow's
generated Dockerfile, CPU pinning, the container's host pids), so it speaks to the CLI here.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from tools.bench.load import SERVER_CORE


class EngineError(RuntimeError):
    """A docker command failed; the message holds its stderr."""


def docker(*args: str, timeout: float = 600) -> str:
    done = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise EngineError(f"docker {' '.join(args[:3])} ...: {done.stderr.strip()[-600:]}")
    return done.stdout.strip()


def run(
    image: str,
    *,
    port: int,
    env: Mapping[str, str] | None = None,
    volumes: Sequence[str] = (),
    entrypoint: str | None = None,
    args: Sequence[str] = (),
    pinned: bool = True,
) -> str:
    """Start ``image`` detached, on the server core when ``pinned`` (else see :func:`pin`),
    with ``port`` published on 127.0.0.1 (readiness probes use it; load goes through the
    container's own loopback)."""
    command = ["run", "-d", "-p", f"127.0.0.1::{port}"]
    command += ["--cpuset-cpus", str(SERVER_CORE)] if pinned else []
    command += ["--label", "gitops-ml-pipeline.bench=1"]
    for key, value in (env or {}).items():
        command += ["-e", f"{key}={value}"]
    for volume in volumes:
        command += ["-v", volume]
    if entrypoint is not None:
        command += ["--entrypoint", entrypoint]
    return docker(*command, image, *args)


def run_joined(
    image: str, *, network_of: str, volumes: Sequence[str] = (), pinned: bool = True
) -> str:
    """Start ``image`` detached in ``network_of``'s network namespace (``--network
    container:``): the two share one loopback, as a sidecar would; nothing is published."""
    command = ["run", "-d", "--network", f"container:{network_of}"]
    command += ["--cpuset-cpus", str(SERVER_CORE)] if pinned else []
    command += ["--label", "gitops-ml-pipeline.bench=1"]
    for volume in volumes:
        command += ["-v", volume]
    return docker(*command, image)


def pin(container: str) -> None:
    """Move a running container onto the server core (its cgroup's cpuset)."""
    docker("update", "--cpuset-cpus", str(SERVER_CORE), container)


def host_port(container: str, port: int) -> int:
    for _ in range(50):
        mapped = docker("port", container, f"{port}/tcp")
        if mapped:
            return int(mapped.splitlines()[0].rsplit(":", 1)[1])
        time.sleep(0.02)
    raise EngineError(f"{container[:12]} publishes no port for {port}")


def main_pid(container: str) -> int:
    return int(docker("inspect", "-f", "{{.State.Pid}}", container))


def pids(container: str) -> list[int]:
    """Host pids of every process in the container."""
    table = docker("top", container, "-eo", "pid")
    return [int(line) for line in table.splitlines()[1:] if line.strip().isdigit()]


def logs(container: str, *, tail: int = 30) -> str:
    done = subprocess.run(
        ["docker", "logs", "--tail", str(tail), container],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return (done.stdout + done.stderr).strip()


def remove(container: str) -> None:
    """Kill and remove the container we started (by id)."""
    subprocess.run(["docker", "rm", "-f", container], capture_output=True, timeout=60, check=False)


def image_size(ref: str) -> int:
    return int(docker("image", "inspect", "-f", "{{.Size}}", ref))


def image_id(ref: str) -> str | None:
    try:
        return docker("image", "inspect", "-f", "{{.Id}}", ref)
    except EngineError:
        return None


def labels(ref: str) -> dict[str, str]:
    raw = docker("image", "inspect", "-f", "{{json .Config.Labels}}", ref)
    return dict(json.loads(raw) or {})


def build(
    context: Path,
    *,
    tag: str,
    log: Path,
    build_args: Mapping[str, str] | None = None,
    network: str | None = None,
    timeout: float = 1200,
) -> float:
    """``docker build`` (the classic builder); returns seconds; its output goes to ``log``."""
    command = ["docker", "build", "-t", tag]
    for key, value in (build_args or {}).items():
        command += ["--build-arg", f"{key}={value}"]
    if network:
        command += ["--network", network]
    started = time.monotonic()
    with log.open("w") as out:
        done = subprocess.run(
            [*command, str(context)], stdout=out, stderr=subprocess.STDOUT, timeout=timeout
        )
    if done.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise EngineError(f"docker build of {tag} failed (log {log}):\n{tail}")
    return time.monotonic() - started


def build_tar(
    context: IO[bytes],
    *,
    tag: str,
    log: Path,
    build_args: Mapping[str, str] | None = None,
    timeout: float = 1200,
) -> None:
    """``docker build -`` of a tar context (the classic builder, no network); output to ``log``."""
    command = ["docker", "build", "--network", "none", "-t", tag]
    for key, value in (build_args or {}).items():
        command += ["--build-arg", f"{key}={value}"]
    with log.open("w") as out:
        done = subprocess.run(
            [*command, "-"], stdin=context, stdout=out, stderr=subprocess.STDOUT, timeout=timeout
        )
    if done.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise EngineError(f"docker build of {tag} failed (log {log}):\n{tail}")


def remove_image(ref: str) -> None:
    """Untag ``ref`` (layers another image uses stay); absent is fine."""
    subprocess.run(["docker", "rmi", ref], capture_output=True, timeout=120, check=False)


def tags_of(repository: str) -> list[str]:
    """Every ``repository:tag`` the engine holds for ``repository``."""
    listed = docker("images", "--format", "{{.Repository}}:{{.Tag}}", repository)
    return [line for line in listed.splitlines() if line and not line.endswith(":<none>")]
