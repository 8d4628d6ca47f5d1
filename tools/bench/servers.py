"""The servers under test, each started the way its users start it, pinned to the server core.

A :class:`Server` knows where wrk should send load (a container is loaded on its own loopback,
through its network namespace), how long it took from start to ready, and its memory: the sum
of VmRSS over every process of the container, or of the host process tree.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tools.bench import containers, processes
from tools.bench.load import Target

log = logging.getLogger("bench")


class StartError(RuntimeError):
    """A server did not become ready; the message has the end of its log."""


@dataclass
class Server:
    name: str  # key in results.json: ours, mlflow-container, mlflow-host, bentoml, hello
    title: str  # how the tables name it
    target: Target
    ready_seconds: float
    workers: str
    _pids: Callable[[], list[int]] = field(repr=False)
    _stop: Callable[[], None] = field(repr=False)
    _pin: Callable[[], None] = field(repr=False)
    container: str | None = None  # the container's id, for a container

    def pids(self) -> list[int]:
        return self._pids()

    def rss_bytes(self) -> int:
        return processes.rss_bytes(self._pids())

    def stop(self) -> None:
        self._stop()

    def pin(self) -> None:
        """Onto the server core, for a server started unpinned (``pinned=False``)."""
        self._pin()


def wait_ready(url: str, *, timeout: float, alive: Callable[[], bool], started: float) -> float:
    """Poll ``url`` every 10 ms until it answers 200; seconds since ``started``."""
    deadline = started + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if not alive():
            raise StartError(f"the server behind {url} exited before it was ready")
        time.sleep(0.01)
    raise StartError(f"{url} did not answer 200 within {timeout:g} s")


def start_container(
    *,
    name: str,
    title: str,
    image: str,
    ready_path: str,
    workers: str,
    port: int = 8080,
    route: str = "/invocations",
    env: Mapping[str, str] | None = None,
    volumes: Sequence[str] = (),
    entrypoint: str | None = None,
    args: Sequence[str] = (),
    timeout: float = 120,
    pinned: bool = True,
) -> Server:
    """``pinned``: started on the server core, as its start-up time is measured; unpinned
    start-ups (side by side, on both cores) must call :meth:`Server.pin` before any load."""
    started = time.monotonic()
    container = containers.run(
        image,
        port=port,
        env=env,
        volumes=volumes,
        entrypoint=entrypoint,
        args=args,
        pinned=pinned,
    )
    try:
        mapped = containers.host_port(container, port)

        def alive() -> bool:
            state = containers.docker("inspect", "-f", "{{.State.Running}}", container)
            return state == "true"

        ready = wait_ready(
            f"http://127.0.0.1:{mapped}{ready_path}", timeout=timeout, alive=alive, started=started
        )
        pid = containers.main_pid(container)
    except (StartError, containers.EngineError) as exc:
        tail = containers.logs(container)
        containers.remove(container)
        raise StartError(f"{title} ({image}): {exc}\n{tail}") from None
    return Server(
        name=name,
        title=title,
        target=Target(f"http://127.0.0.1:{port}{route}", netns_pid=pid),
        ready_seconds=ready,
        workers=workers,
        _pids=lambda: containers.pids(container),
        _stop=lambda: containers.remove(container),
        _pin=lambda: containers.pin(container),
        container=container,
    )


def start_host(
    *,
    name: str,
    title: str,
    command: Sequence[str],
    cwd: Path,
    env: Mapping[str, str],
    port: int,
    ready_path: str,
    workers: str,
    log_file: Path,
    route: str = "/invocations",
    timeout: float = 120,
    pinned: bool = True,
) -> Server:
    started = time.monotonic()
    process = processes.start(command, cwd=cwd, env=env, log=log_file, pinned=pinned)
    try:
        ready = wait_ready(
            f"http://127.0.0.1:{port}{ready_path}",
            timeout=timeout,
            alive=lambda: process.poll() is None,
            started=started,
        )
    except StartError as exc:
        processes.stop(process)
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-20:])
        raise StartError(f"{title}: {exc}\n{tail}") from None
    return Server(
        name=name,
        title=title,
        target=Target(f"http://127.0.0.1:{port}{route}"),
        ready_seconds=ready,
        workers=workers,
        _pids=lambda: processes.tree(process.pid),
        _stop=lambda: processes.stop(process),
        _pin=lambda: processes.pin(process.pid),
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def netns_post(target: Target, body: Path) -> str:
    """POST ``body`` once, from inside the target's namespace when it has one: the check that
    a server answers the benchmark's body before it is loaded."""
    command = [
        "curl",
        "-sS",
        "--fail-with-body",
        "-m",
        "30",
        "-H",
        "Content-Type: application/json",
    ]
    command += ["--data-binary", f"@{body}", target.url]
    if target.netns_pid is not None:
        command = ["nsenter", "-t", str(target.netns_pid), "-n", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise StartError(f"POST {target.url} failed: {done.stdout[:300]} {done.stderr[:300]}")
    return done.stdout
