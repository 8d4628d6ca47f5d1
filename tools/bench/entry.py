"""Our image behind the deploy's HAProxy entry: the entry image and config the deploy makes.

The image is built exactly as `pipeline reconcile` builds it (pipeline.deploy.haproxy: Debian's
haproxy 2.6 unpacked from ``apt-get download``, on the project's Python base, no network in the
build); the config is ``haproxy.render_config`` of the repository's ``deploy/topology.yaml``
(staging), with one change, because there is no Swarm here: the backend's two
``server-template`` lines, which find the model tasks through Swarm DNS (``tasks.<service>``,
resolver 127.0.0.11), become one server each at the model container's address
(``127.0.0.1:8080``: the entry runs in the model container's network namespace, as a sidecar),
and the ``resolvers swarm`` options leave the ``default-server`` line. Everything else (timeouts,
retries and redispatch, ``http-reuse never``, ``leastconn``, the health check on
``/v2/health/ready``, logging, the admin frontend) is the rendered text, unchanged.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from tools.bench import containers
from tools.bench.load import Target
from tools.bench.projects import ROOT
from tools.bench.servers import Server, StartError

MODEL = "127.0.0.1:8080"
STAGE = "staging"  # its entry port (8081) differs from the model's 8080 in the shared namespace


def image(*, base: str, work: Path) -> str:
    """The entry image (built once, then found by its content tag)."""
    from pipeline.deploy import haproxy

    work.mkdir(parents=True, exist_ok=True)
    debs = haproxy.download_packages(work / "debs")
    base_id = containers.image_id(base)
    if base_id is None:
        raise containers.EngineError(f"the base image {base} is not in the engine")
    context = haproxy.entry_context(debs, base_id=base_id, workdir=work)
    tag = f"bench/entry:{context.tag}"
    if containers.image_id(tag) is None:
        tar = work / "context.tar"
        tar.write_bytes(context.tar)
        with tar.open("rb") as handle:
            containers.build_tar(
                handle, tag=tag, log=work / "entry-image.log", build_args={"BASE_IMAGE": base}
            )
    return tag


def config(work: Path) -> tuple[Path, int, int]:
    """haproxy.cfg as the deploy renders it for staging, pointed at one model server (module
    docstring); its path, the entry port and the admin port."""
    from pipeline.deploy import haproxy
    from pipeline.deploy.topology import load_topology

    shape = load_topology(ROOT / "deploy/topology.yaml").get(STAGE)
    text = haproxy.render_config(shape, model_service="bench_model")
    swaps = [
        (r" resolvers swarm resolve-prefer ipv4 init-addr none", ""),
        (r"server-template task 1-\d+ tasks\.bench_model:\d+", f"server task1 {MODEL}"),
        (r"server-template spare 1-\d+ tasks\.bench_model:\d+", f"server spare1 {MODEL}"),
    ]
    for pattern, replacement in swaps:
        text, count = re.subn(pattern, replacement, text)
        if count != 1:
            raise StartError(f"the rendered haproxy.cfg changed: no single {pattern!r} in it")
    work.mkdir(parents=True, exist_ok=True)
    path = work / "haproxy.cfg"
    path.write_text(text)
    path.chmod(0o644)
    return path, shape.entry.port, haproxy.ADMIN_PORT


def start(model: Server, *, entry_image: str, cfg: Path, port: int, admin: int) -> Server:
    """HAProxy on the server core, in ``model``'s namespace; ready once its admin frontend's
    /healthz answers 200, which it does only when the backend has a server up (the model
    passed HAProxy's own health check). ``model`` is stopped along with it."""
    from pipeline.deploy import haproxy

    assert model.container is not None and model.target.netns_pid is not None
    pid = model.target.netns_pid
    started = time.monotonic()
    entry = containers.run_joined(
        entry_image, network_of=model.container, volumes=[f"{cfg}:{haproxy.CONFIG_PATH}:ro"]
    )
    probe = ["nsenter", "-t", str(pid), "-n", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}"]
    probe += ["-m", "1", f"http://127.0.0.1:{admin}/healthz"]
    while True:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=10, check=False)
        if done.stdout.strip() == "200":
            break
        if time.monotonic() - started > 60:
            tail = containers.logs(entry)
            containers.remove(entry)
            model.stop()
            raise StartError(f"HAProxy's /healthz did not answer 200 within 60 s:\n{tail}")
        time.sleep(0.05)

    def stop() -> None:
        containers.remove(entry)
        model.stop()

    def pin() -> None:
        model.pin()
        containers.pin(entry)

    return Server(
        name="ours-haproxy",
        title="ours behind HAProxy (entry)",
        target=Target(f"http://127.0.0.1:{port}/invocations", netns_pid=pid),
        ready_seconds=model.ready_seconds + time.monotonic() - started,
        workers="1 (ours) + HAProxy 2.6 (its own container, 1 thread on the server core)",
        _pids=lambda: model.pids() + containers.pids(entry),
        _stop=stop,
        _pin=pin,
        container=entry,
    )
