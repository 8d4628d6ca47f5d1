"""The container engine: the only module that imports `docker`.

It speaks the Docker Engine API: finds or pulls a base image, builds with the classic builder
while streaming its progress to the log, inspects images, and runs one container on a loopback
port. Every failure a user can fix is an :class:`~pipeline.errors.ImageError` that says what to do.

Which engine is decided here, once (:meth:`Engine.connect`): ``CONTAINER_ENGINE=docker`` (the
default) is ``DOCKER_HOST`` or the default socket; ``CONTAINER_ENGINE=podman`` is the Podman
socket (rootful ``/run/podman/podman.sock``, rootless ``$XDG_RUNTIME_DIR/podman/podman.sock``),
whose API service is started when none answers, with the limits of :data:`PODMAN_CONTAINERS_CONF`.
``DOCKER_HOST=unix:///run/podman/podman.sock`` reaches a running Podman service the same way.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import docker
import requests
from docker.errors import DockerException, ImageNotFound, NotFound
from docker.utils import parse_repository_tag

from pipeline.errors import ConfigError, ImageError

__all__ = ["Base", "BuildReport", "Condition", "Container", "Engine", "ImageInfo", "MemoryGauge"]

log = logging.getLogger("pipeline.image.engine")
START_ENGINE = (
    "run `make docker` (on a root Debian machine it installs and starts dockerd; elsewhere it "
    "says how to start Docker or Podman), or point DOCKER_HOST at a running engine"
)
ENGINES = ("docker", "podman")
#: The Podman API service's settings when this module starts it. Debian's Podman 4.3 on these
#: hosts: crun fails on the hybrid cgroup layout (runc works), and a container created through
#: the API fails with "error setting rlimit" unless both limits are set for every container.
PODMAN_CONTAINERS_CONF = """\
# Written by pipeline/image/engine.py for the Podman API service it starts.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
runtime = "runc"
"""
INSTALL_PODMAN = (
    "install it (Debian, as root: `apt-get install podman catatonit runc`), or unset "
    "CONTAINER_ENGINE to use Docker"
)
# Docker's classic builder says "Step 9/21 : " (counted over all stages), Podman's (Buildah)
# "[2/2] STEP 3/15: " (counted per stage, the stage in front when there are several).
_STEP = re.compile(r"^(?:\[(\d+)/\d+\] )?Step (\d+)/(\d+) ?: ", re.IGNORECASE)
_NOISE = re.compile(
    r"^( ---> Running in | ---> [0-9a-f]{12}$|Removing intermediate container |--> [0-9a-f]{11,}$)"
)


@dataclass(frozen=True)
class Base:
    """The base image the build uses; ``fallback`` when it is the air-gapped one."""

    ref: str
    id: str
    fallback: bool


@dataclass(frozen=True)
class ImageInfo:
    id: str
    tags: list[str]
    labels: dict[str, str]
    size: int
    layers: list[str]  # RootFS diff ids, bottom first
    user: str
    digests: list[str] = field(default_factory=list)  # registry@sha256:..., once pushed/pulled


@dataclass
class BuildReport:
    """What the builder said: steps, which of them came from the cache, how long it took."""

    image_id: str = ""
    steps: int = 0
    cached: list[int] = field(default_factory=list)
    seconds: float = 0.0


class Engine:
    """A connected engine. :meth:`connect` fails with what to do when none answers."""

    def __init__(self, client: docker.DockerClient, *, where: str = "the default socket") -> None:
        self.client = client
        self.where = where
        version: dict[str, Any] = client.version()
        names = [str(c.get("Name", "")) for c in version.get("Components") or []]
        self.podman = any("podman" in n.lower() for n in names)
        self._version = version

    @classmethod
    def connect(cls, *, timeout: int = 900) -> Engine:
        """The engine ``CONTAINER_ENGINE`` names (docker, the default, or podman)."""
        choice = os.environ.get("CONTAINER_ENGINE") or "docker"
        if choice not in ENGINES:
            raise ConfigError(
                f"CONTAINER_ENGINE={choice!r} is not an engine this pipeline drives: set it to "
                f"{' or '.join(ENGINES)} (unset: docker)"
            )
        if choice == "podman":
            return cls._connect_podman(timeout=timeout)
        where = os.environ.get("DOCKER_HOST") or "the default socket"
        try:
            client = docker.from_env(timeout=timeout)
            client.ping()
        except DockerException as exc:
            reason = str(exc).splitlines()[0][:200]
            raise ImageError(
                f"no container engine answers at {where} ({reason}): {START_ENGINE}"
            ) from None
        return cls(client, where=where)

    @classmethod
    def _connect_podman(cls, *, timeout: int) -> Engine:
        socket = podman_socket()
        url = f"unix://{socket}"
        if os.environ.get("DOCKER_HOST"):
            log.warning(
                "CONTAINER_ENGINE=podman: DOCKER_HOST=%s is not used; the Podman socket %s is",
                os.environ["DOCKER_HOST"],
                socket,
            )
        client = _answering(url, timeout=timeout)
        if client is None:
            _start_podman_service(socket)
            client = _answering(url, timeout=timeout)
            if client is None:
                raise ImageError(f"the Podman service started at {socket} does not answer")
        return cls(client, where=str(socket))

    def describe(self) -> str:
        kind = "Podman" if self.podman else "Docker Engine"
        api = self._version.get("ApiVersion", "?")
        return f"{kind} {self._version.get('Version', '?')} (API {api}) at {self.where}"

    def image(self, ref: str) -> ImageInfo | None:
        try:
            attrs: dict[str, Any] = self.client.api.inspect_image(ref)
        except (ImageNotFound, NotFound):
            return None
        config = attrs.get("Config") or {}
        return ImageInfo(
            id=str(attrs["Id"]),
            tags=list(attrs.get("RepoTags") or []),
            labels=dict(config.get("Labels") or {}),
            size=int(attrs.get("Size") or 0),
            layers=list((attrs.get("RootFS") or {}).get("Layers") or []),
            user=str(config.get("User") or ""),
            digests=list(attrs.get("RepoDigests") or []),
        )

    def _named(self, ref: str) -> ImageInfo | None:
        """:meth:`image`, but only an image that carries the name ``ref``: Podman resolves a
        short name by suffix (`python:3.11` finds `localhost/local/python:3.11`)."""
        found = self.image(ref)
        if found is not None and self.podman and not _names(found.tags, ref):
            log.info("Podman matched %s to %s: not that image", ref, ", ".join(found.tags))
            return None
        return found

    def resolve_base(self, *, base: str, fallback: str) -> Base:
        """``base`` if present or pullable, else the air-gapped ``fallback`` (said so loudly)."""
        found = self._named(base)
        if found is not None:
            return Base(base, found.id, fallback=False)
        log.info("base image %s is not present: trying to pull it", base)
        repository, tag = parse_repository_tag(base)
        try:
            self.client.images.pull(repository, tag=tag or "latest")
            pulled = self._named(base)
            if pulled is not None:
                return Base(base, pulled.id, fallback=False)
            reason = "pulled, yet not found under that name"
        except DockerException as exc:
            reason = str(exc).splitlines()[0][:160]
        found = self.image(fallback)
        if found is None:
            what = (
                f"`make base-image` to build it from Debian packages for Docker, then "
                f"`docker save {fallback} | podman load` (Podman keeps its own images)"
                if self.podman
                else "`make base-image` to build it from Debian packages"
            )
            raise ImageError(
                f"base image {base} is neither present nor pullable ({reason}), and the "
                f"air-gapped fallback {fallback} (image.fallback_base) does not exist in "
                f"{self.describe()}: run {what}, then re-run"
            )
        log.warning(
            "base image %s is neither present nor pullable; using the air-gapped fallback %s "
            "(Python 3.11 from Debian packages, built by `make base-image`)",
            base,
            fallback,
        )
        return Base(fallback, found.id, fallback=True)

    def build(
        self,
        context: IO[bytes],
        *,
        tag: str,
        buildargs: Mapping[str, str],
        dockerfile: str = "Dockerfile",
        nocache: bool = False,
    ) -> BuildReport:
        """Build the tar ``context`` (``dockerfile`` at its root) with no network, logging what
        the builder prints (container bookkeeping at debug level); ``nocache``: every step
        again, none from the builder's cache."""
        report, started, step = BuildReport(), time.monotonic(), 0
        stages: dict[int, int] = {}  # Podman: steps per build stage
        tail: list[str] = []
        stream = self.client.api.build(
            fileobj=context,
            custom_context=True,
            dockerfile=dockerfile,
            tag=tag,
            buildargs=dict(buildargs),
            rm=True,
            forcerm=True,
            nocache=nocache,
            pull=False,
            network_mode="none",
            use_config_proxy=False,
            decode=True,
        )
        try:
            for chunk in stream:
                if "error" in chunk or "errorDetail" in chunk:
                    message = chunk.get("error") or chunk["errorDetail"].get("message", "")
                    lines = "\n".join(tail[-25:])
                    raise ImageError(f"docker build failed: {message.strip()}\n{lines}")
                if "aux" in chunk and "ID" in chunk["aux"]:
                    report.image_id = str(chunk["aux"]["ID"])
                for line in str(chunk.get("stream", "")).splitlines():
                    line = line.rstrip()
                    if not line:
                        continue
                    tail.append(line)
                    match = _STEP.match(line)
                    if match:
                        stage = int(match.group(1) or 1)
                        stages[stage] = int(match.group(3))
                        step = sum(n for s, n in stages.items() if s < stage) + int(match.group(2))
                        report.steps = sum(stages.values())
                    elif "Using cache" in line and step:
                        report.cached.append(step)
                    level = logging.DEBUG if _NOISE.match(line) else logging.INFO
                    log.log(level, "build: %s", line if len(line) < 160 else line[:150] + " ...")
        except DockerException as exc:
            raise ImageError(f"docker build failed: {exc}") from None
        report.seconds = time.monotonic() - started
        return report

    def container(self, ref: str) -> Container | None:
        """An existing container by id or name (None if there is none), e.g. to watch one that
        another process started."""
        try:
            found = self.client.containers.get(ref)
        except (NotFound, DockerException):
            return None
        bindings = next(iter((found.attrs["NetworkSettings"].get("Ports") or {}).values()), None)
        return Container(found, host_port=int(bindings[0]["HostPort"]) if bindings else 0)

    def tag(self, image_id: str, ref: str) -> None:
        repository, tag = parse_repository_tag(ref)
        self.client.api.tag(image_id, repository, tag=tag)

    def untag(self, ref: str) -> None:
        """Remove the name ``ref`` and the layers no other image uses. The dependency stage's
        layers (the venv) are another image's, so a rebuild still finds them in the cache."""
        try:
            self.client.api.remove_image(ref)
        except (ImageNotFound, NotFound):
            pass
        except DockerException as exc:  # e.g. a container still uses it
            log.warning("could not remove %s: %s", ref, str(exc).splitlines()[0])

    @contextmanager
    def run(
        self,
        ref: str,
        *,
        port: int,
        environment: Mapping[str, str] | None = None,
        memory: str | None = None,
        cpus: float | None = None,
    ) -> Iterator[Container]:
        """Run ``ref`` with container ``port`` published on a free 127.0.0.1 port, optionally
        limited to ``memory`` (e.g. "512m") and ``cpus``; always stopped and removed after."""
        limits: dict[str, Any] = {"mem_limit": memory} if memory else {}
        if cpus:
            limits["nano_cpus"] = int(cpus * 1e9)
        try:
            container = self.client.containers.run(
                ref,
                detach=True,
                ports={f"{port}/tcp": ("127.0.0.1", None)},
                environment=dict(environment or {}),
                **limits,
            )
        except DockerException as exc:
            raise ImageError(f"could not start a container from {ref}: {exc}") from None
        try:
            container.reload()
            bindings = container.attrs["NetworkSettings"]["Ports"][f"{port}/tcp"]
            yield Container(container, host_port=int(bindings[0]["HostPort"]))
        finally:
            try:
                container.stop(timeout=10)
            finally:
                container.remove(force=True)

    def output(self, ref: str, *, command: list[str], timeout: float = 120) -> str:
        """What ``command`` prints when run in a throwaway container of ``ref`` (its entrypoint
        replaced, no network, removed after): facts read from the image as it is."""
        try:
            container = self.client.containers.run(
                ref, entrypoint=command[:1], command=command[1:], detach=True, network_mode="none"
            )
        except DockerException as exc:
            raise ImageError(f"could not start a container from {ref}: {exc}") from None
        try:
            status = container.wait(timeout=timeout)
            out: bytes = container.logs(stdout=True, stderr=False)
            if int(status.get("StatusCode", 1)) != 0:
                err = container.logs(stdout=False, stderr=True).decode(errors="replace")
                raise ImageError(f"{command[0]} in {ref} failed: {err.strip()[-300:]}")
            return out.decode("utf-8", errors="replace")
        except (DockerException, requests.RequestException) as exc:
            raise ImageError(f"reading {ref} failed: {exc}") from None
        finally:
            container.remove(force=True)

    def push(
        self,
        image_id: str,
        *,
        repository: str,
        tags: list[str],
        auth: Mapping[str, str] | None = None,
    ) -> str:
        """Name ``image_id`` ``repository:tag`` for each tag and push it; return the registry's
        manifest digest (one image: every tag must get the same digest). ``auth`` is the
        engine's auth config (username/password or registrytoken); None: the engine's own
        (`docker login`). Layers the registry already has are not sent again."""
        digests: set[str] = set()
        for tag in tags:
            self.client.api.tag(image_id, repository, tag=tag)
            log.info("pushing %s:%s", repository, tag)
            last: dict[str, Any] = {}
            try:
                for chunk in self.client.api.push(
                    repository,
                    tag=tag,
                    stream=True,
                    decode=True,
                    auth_config=dict(auth) if auth else None,
                ):
                    if "error" in chunk or "errorDetail" in chunk:
                        detail = chunk.get("error") or chunk["errorDetail"].get("message", "")
                        raise ImageError(f"push of {repository}:{tag} failed: {detail.strip()}")
                    if "Digest" in (chunk.get("aux") or {}):
                        last = chunk["aux"]
                    elif chunk.get("status") in ("Pushed", "Layer already exists"):
                        log.debug("push: %s %s", chunk.get("id"), chunk["status"])
            except DockerException as exc:
                raise ImageError(f"push of {repository}:{tag} failed: {exc}") from None
            if not last:
                raise ImageError(f"the engine pushed {repository}:{tag} but reported no digest")
            digests.add(str(last["Digest"]))
        if len(digests) != 1:
            raise ImageError(f"the tags of {image_id} got different digests: {sorted(digests)}")
        return digests.pop()


@dataclass(frozen=True)
class Condition:
    """What `docker inspect` says about a container's life so far."""

    status: str
    running: bool
    oom_killed: bool
    restarts: int
    started_at: str
    exit_code: int


class Container:
    """A running container: where it listens, its state, its memory and its log."""

    def __init__(self, container: Any, *, host_port: int) -> None:
        self._container = container
        self.host_port = host_port
        self.id = str(container.id)

    def state(self) -> dict[str, Any]:
        self._container.reload()
        return dict(self._container.attrs.get("State") or {})

    def condition(self) -> Condition:
        state = self.state()
        return Condition(
            status=str(state.get("Status", "")),
            running=bool(state.get("Running")),
            oom_killed=bool(state.get("OOMKilled")),
            restarts=int(self._container.attrs.get("RestartCount") or 0),
            started_at=str(state.get("StartedAt", "")),
            exit_code=int(state.get("ExitCode") or 0),
        )

    def memory_limit(self) -> int | None:
        """The memory limit it runs with, in bytes (None: unlimited)."""
        self._container.reload()
        return int((self._container.attrs.get("HostConfig") or {}).get("Memory") or 0) or None

    def memory(self) -> MemoryGauge:
        """The container's memory, read from its cgroup when this host can (a local engine,
        run as root: exact, and the peak can be reset between measurements), else from the
        engine's stats API (about one read a second, and the peak only since start)."""
        pid = int(self.state().get("Pid") or 0)
        return MemoryGauge(self._container, _cgroup_memory_dir(pid) if pid else None)

    def logs(self, *, tail: int | None = 60) -> str:
        """The last ``tail`` lines of the container's output (None: all of it)."""
        raw: bytes = self._container.logs(tail="all" if tail is None else tail)
        return raw.decode("utf-8", errors="replace").rstrip()

    def execute(self, command: list[str]) -> tuple[int, str]:
        """Run ``command`` inside the running container: (exit code, output)."""
        try:
            done = self._container.exec_run(command)
        except DockerException as exc:
            raise ImageError(
                f"could not run {command[0]} in container {self.id[:12]}: {exc}"
            ) from None
        output: bytes = done.output or b""
        return int(done.exit_code), output.decode("utf-8", errors="replace").strip()


class MemoryGauge:
    """Usage and peak of one container's memory cgroup, in bytes.

    cgroup v1 (``memory.usage_in_bytes``, ``memory.max_usage_in_bytes``, which root may reset)
    or v2 (``memory.current``, ``memory.peak``, resettable on recent kernels); the peak is the
    kernel's own high-water mark, so no spike between two reads is missed. Without access to
    the cgroup: the engine's stats API (``docker stats``), where the peak cannot be reset.
    """

    def __init__(self, container: Any, directory: Path | None) -> None:
        self._container = container
        self._dir = directory
        v1 = directory is not None and (directory / "memory.max_usage_in_bytes").is_file()
        self._usage = "memory.usage_in_bytes" if v1 else "memory.current"
        self._peak = "memory.max_usage_in_bytes" if v1 else "memory.peak"
        self.source = (
            f"cgroup {'v1' if v1 else 'v2'} {self._peak}"
            if directory is not None and (directory / self._usage).is_file()
            else "docker stats (engine API)"
        )
        if self.source.startswith("docker"):
            self._dir = None

    def usage(self) -> int:
        if self._dir is not None:
            return int((self._dir / self._usage).read_text())
        return int(self._stats().get("usage") or 0)

    def peak(self) -> int | None:
        """The high-water mark since start or the last :meth:`reset_peak`."""
        if self._dir is not None:
            path = self._dir / self._peak
            return int(path.read_text()) if path.is_file() else None
        peak = self._stats().get("max_usage")
        return int(peak) if peak else None

    def reset_peak(self) -> bool:
        """Start a new high-water mark at the current usage; False if this host cannot."""
        if self._dir is None or not (self._dir / self._peak).is_file():
            return False
        try:
            (self._dir / self._peak).write_text("0\n")
        except OSError:
            return False
        return True

    def oom_kills(self) -> int | None:
        """Processes the kernel's OOM killer ended in this cgroup (None: not readable)."""
        if self._dir is None:
            return None
        for name in ("memory.oom_control", "memory.events"):
            path = self._dir / name
            if path.is_file():
                for line in path.read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        return None

    def _stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self._container.stats(stream=False)
        return dict(stats.get("memory_stats") or {})


def podman_socket() -> Path:
    """Where Podman's API service listens: rootful or this user's (rootless)."""
    if os.geteuid() == 0:
        return Path("/run/podman/podman.sock")
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.geteuid()}"
    return Path(runtime) / "podman" / "podman.sock"


def _answering(url: str, *, timeout: int) -> docker.DockerClient | None:
    try:
        client = docker.DockerClient(base_url=url, timeout=timeout)
        client.ping()
    except DockerException:
        return None
    return client


def _start_podman_service(socket: Path, *, wait: float = 30) -> None:
    """Start `podman system service` on ``socket`` in its own session (it outlives this
    process, as dockerd does), with :data:`PODMAN_CONTAINERS_CONF`, and wait until it answers.
    Its pid goes to ``service.pid`` next to its ``containers.conf`` and ``service.log``."""
    binary = shutil.which("podman")
    if binary is None:
        raise ImageError(f"CONTAINER_ENGINE=podman, but podman is not installed: {INSTALL_PODMAN}")
    home = socket.parent.parent / "pipeline-podman"  # /run or $XDG_RUNTIME_DIR
    home.mkdir(parents=True, exist_ok=True)
    socket.parent.mkdir(parents=True, exist_ok=True)
    socket.unlink(missing_ok=True)  # stale: nothing answered there
    conf, logfile = home / "containers.conf", home / "service.log"
    conf.write_text(PODMAN_CONTAINERS_CONF)
    log.info(
        "no Podman service answers at %s: starting `podman system service --time=0` there "
        "(CONTAINERS_CONF=%s: runc, nofile/nproc limits; log %s)",
        socket,
        conf,
        logfile,
    )
    with logfile.open("ab") as out:
        service = subprocess.Popen(
            [binary, "system", "service", "--time=0", f"unix://{socket}"],
            env={**os.environ, "CONTAINERS_CONF": str(conf)},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (home / "service.pid").write_text(f"{service.pid}\n")
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if service.poll() is not None:
            tail = logfile.read_text(errors="replace").strip().splitlines()[-5:]
            raise ImageError(
                f"`podman system service` on {socket} exited with {service.returncode}: "
                + " | ".join(tail)
            )
        if socket.exists() and _answering(f"unix://{socket}", timeout=5) is not None:
            log.info("Podman service pid %d answers at %s", service.pid, socket)
            return
        time.sleep(0.2)
    raise ImageError(f"`podman system service` did not answer at {socket} within {wait:g} s")


def _names(tags: list[str], ref: str) -> bool:
    """Whether one of ``tags`` is ``ref`` as Docker would expand it (Podman reports full names:
    ``docker.io/library/python:3.11``, ``localhost/local/python:3.11``)."""
    prefixes = ["", "docker.io/", "localhost/"] + (["docker.io/library/"] if "/" not in ref else [])
    return any(tag in {p + ref for p in prefixes} for tag in tags)


def _cgroup_memory_dir(pid: int) -> Path | None:
    """The memory cgroup directory of process ``pid``, as this host mounts it (None if this
    host cannot read it: a remote or rootless engine, another namespace)."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            found = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            return found if found.is_dir() else None
        if controllers == "" and (Path("/sys/fs/cgroup") / "cgroup.controllers").is_file():
            found = Path("/sys/fs/cgroup") / path.lstrip("/")
            return found if (found / "memory.current").is_file() else None
    return None
