"""The entry service: HAProxy from Debian's package, its config, its offline image.

One HAProxy task publishes the environment's stable port (Swarm's ``mode: host``: the ingress
routing mesh does not answer on these machines) and spreads requests over the model tasks it
finds through Swarm DNS (``tasks.<stack>_model``, resolver 127.0.0.11, the model service in
``endpoint_mode: dnsrr``). A task enters rotation only once ``GET /v2/health/ready`` answers
200, and leaves it when the check fails or its DNS record goes; a request that meets a closing
task (connection refused, reset, empty answer, 503) is retried on another one. That is what makes
a start-first rolling update lose no request.

The image is built with no network: ``apt-get download`` on the host fetches the ``.deb`` files
(cached under ``build/entry``), ``dpkg -x`` unpacks them into the build context and the
Dockerfile copies them onto the project's local Python base (which has python3 for the health
check). The image is tagged by a hash of everything that goes into it, so an unchanged entry is
never rebuilt or redeployed; it is pushed to the model's registry (``<IMAGE_REPOSITORY>-entry``)
and referenced by digest like the model.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import ImageParams, Settings
from pipeline.deploy.topology import EnvTopology
from pipeline.errors import ImageError
from pipeline.image.engine import Engine
from pipeline.release.registry import Registry

__all__ = ["PACKAGES", "EntryContext", "entry_context", "render_config"]

log = logging.getLogger("pipeline.deploy")
# haproxy and the libraries it links that the minimal Python base lacks (checked at build time
# by running `haproxy -vv` inside the image).
PACKAGES = ("haproxy", "liblua5.3-0", "libopentracing-c-wrapper0", "libopentracing1")
MODEL_PORT = 8080
ADMIN_PORT = 8404  # health, stats and the Prometheus exporter; published only if asked
CONFIG_PATH = "/usr/local/etc/haproxy/haproxy.cfg"
DOCKERFILE = f"""\
# The entry: Debian's haproxy, unpacked on the host (dpkg -x), on the project's Python base.
ARG BASE_IMAGE
FROM ${{BASE_IMAGE}}
COPY rootfs/ /
RUN ["/usr/sbin/haproxy", "-vv"]
USER 65534:65534
EXPOSE {ADMIN_PORT}
STOPSIGNAL SIGUSR1
ENTRYPOINT ["/usr/sbin/haproxy", "-W", "-db", "-f", "{CONFIG_PATH}"]
"""


def server_slots(shape: EnvTopology) -> int:
    """Server slots for the model tasks: a start-first update briefly runs old and new. An
    autoscaled service is sized for its maximum, so that the config (and the entry) does not
    change when the replicas do."""
    most = shape.autoscale.max_replicas if shape.autoscale else shape.replicas
    return max(4, 2 * most + 2)


def render_config(shape: EnvTopology, *, model_service: str) -> str:
    """haproxy.cfg for one environment: deterministic text (golden-file tested)."""
    health = shape.health
    inter = max(int(health.interval_s * 1000 / 2), 250)  # HAProxy checks twice as often
    timeout = int(health.timeout_s * 1000)
    return f"""\
# The {shape.stack} entry, rendered by `pipeline reconcile` from deploy/topology.yaml.
global
    log stdout format raw local0 notice
    maxconn 4096
    stats socket /tmp/haproxy.sock mode 600 level admin
    hard-stop-after {int(shape.stop_grace_period_s)}s

defaults
    mode http
    log global
    option dontlognull
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 10s
    timeout check {timeout}ms
    # A request that meets a task going away is sent again, to another task.
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response junk-response 503
    http-reuse never

resolvers swarm
    nameserver docker 127.0.0.11:53
    accepted_payload_size 8192
    resolve_retries 3
    timeout resolve 1s
    timeout retry 1s
    hold valid 1s
    hold other 1s
    hold refused 1s
    hold nx 1s
    hold timeout 1s
    hold obsolete 1s

frontend entry
    bind :{shape.entry.port}
    default_backend model

frontend admin
    bind :{ADMIN_PORT}
    monitor-uri /healthz
    # Healthy only once the model backend has a server to send to (its tasks' DNS resolved):
    # Swarm reports the entry running only then, so reconcile returns when the entry serves.
    monitor fail if {{ nbsrv(model) lt 1 }}
    http-request use-service prometheus-exporter if {{ path /metrics }}
    stats enable
    stats uri /stats
    stats refresh 5s

backend model
    balance leastconn
    option httpchk
    http-check send meth GET uri /v2/health/ready
    http-check expect status 200
    option allbackups
    default-server check inter {inter}ms fastinter 250ms downinter {inter}ms fall 3 rise 1 \
resolvers swarm resolve-prefer ipv4 init-addr none
    server-template task 1-{server_slots(shape)} tasks.{model_service}:{MODEL_PORT}
    # Fail open: when every task fails its check at once (a starved machine, not a bad image:
    # the old tasks of a rollout stay in rotation), send to all of them anyway rather than 503.
    server-template spare 1-{server_slots(shape)} tasks.{model_service}:{MODEL_PORT} backup no-check
"""


@dataclass(frozen=True)
class EntryContext:
    """The entry image's build context (a tar with the Dockerfile at its root) and its tag."""

    tar: bytes
    tag: str  # haproxy-<debian version>-<hash of everything in the context and the base>
    version: str


def download_packages(cache: Path, packages: tuple[str, ...] = PACKAGES) -> list[Path]:
    """The .deb files of ``packages`` in ``cache``, fetched with ``apt-get download`` when
    missing (an ``apt-get update`` first if the package lists are empty and we are root)."""
    cache.mkdir(parents=True, exist_ok=True)

    def present() -> list[Path]:
        found = [sorted(cache.glob(f"{name}_*.deb")) for name in packages]
        return [files[-1] for files in found if files]

    if len(present()) == len(packages):
        return present()
    if shutil.which("apt-get") is None:
        raise ImageError(
            f"apt-get is not available: the image needs Debian's {' '.join(packages)} "
            f"as .deb files in {cache} (put them there by hand, then re-run)"
        )
    command = ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", *packages]
    done = subprocess.run(command, cwd=cache, capture_output=True, text=True, check=False)
    if done.returncode != 0 and os.geteuid() == 0:
        log.info("apt-get download failed; refreshing the package lists (apt-get update)")
        subprocess.run(["apt-get", "-qq", "update"], capture_output=True, check=False)
        done = subprocess.run(command, cwd=cache, capture_output=True, text=True, check=False)
    if done.returncode != 0 or len(present()) != len(packages):
        reason = (done.stderr.strip().splitlines() or ["no .deb written"])[-1]
        raise ImageError(
            f"apt-get download {' '.join(packages)} failed ({reason}): run `apt-get update` "
            "(as root), or put the .deb files in " + str(cache)
        )
    return present()


def entry_context(
    debs: list[Path],
    *,
    base_id: str,
    workdir: Path,
    dockerfile: str = DOCKERFILE,
    name: str = "haproxy",
) -> EntryContext:
    """``dpkg -x`` each package into a rootfs and tar it with the Dockerfile (the entry's, or
    another image built the same way: the A/B experiments' Prometheus)."""
    rootfs = workdir / "rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    rootfs.mkdir(parents=True)
    digest = hashlib.sha256(dockerfile.encode() + base_id.encode())
    version = "unknown"
    for deb in sorted(debs):
        digest.update(deb.name.encode() + hashlib.sha256(deb.read_bytes()).digest())
        if deb.name.startswith(f"{name}_"):  # 2.6.12-1+deb12u4 -> 2.6.12; 2.42.0+ds-5 -> 2.42.0
            version = re.split(r"[-+~]", deb.name.split("_")[1])[0]
        done = subprocess.run(
            ["dpkg", "-x", str(deb), str(rootfs)], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise ImageError(f"dpkg -x {deb.name} failed: {done.stderr.strip()[:200]}")
    for top in ("bin", "sbin", "lib", "lib64"):  # the base is merged-/usr: /lib -> usr/lib
        if (rootfs / top).is_dir():
            shutil.copytree(rootfs / top, rootfs / "usr" / top, symlinks=True, dirs_exist_ok=True)
            shutil.rmtree(rootfs / top)
    keep = {"usr", "etc"}
    for child in rootfs.iterdir():
        if child.name not in keep:
            shutil.rmtree(child)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile.encode())
        tar.addfile(info, io.BytesIO(dockerfile.encode()))
        tar.add(rootfs, arcname="rootfs")
    return EntryContext(
        tar=buffer.getvalue(), tag=f"{name}-{version}-{digest.hexdigest()[:12]}", version=version
    )


def entry_repository(settings: Settings, suffix: str = "-entry") -> Settings:
    """The settings of the entry image's repository: ``<IMAGE_REPOSITORY>-entry``, same registry."""
    return settings.model_copy(update={"image_repository": f"{settings.image_repository}{suffix}"})


def ensure_entry_image(
    settings: Settings,
    image: ImageParams,
    *,
    cache: Path,
    build: bool = True,
    packages: tuple[str, ...] = PACKAGES,
    dockerfile: str = DOCKERFILE,
    name: str = "haproxy",
    suffix: str = "-entry",
) -> str:
    """``REGISTRY/<IMAGE_REPOSITORY>-entry@sha256:...``: found in the registry by its content
    tag, else built here (no network in the build) and pushed. With ``build=False`` (a dry run)
    an absent image is named by its tag instead: ``REPO:haproxy-...``."""
    debs = download_packages(cache / "debs", packages)
    engine = Engine.connect()
    present = engine.image(image.base) or engine.image(image.fallback_base)
    if present is not None:  # the one the model image was built on: no pull attempt
        ref = image.base if engine.image(image.base) else image.fallback_base
        base_ref, base_id = ref, present.id
    else:
        base = engine.resolve_base(base=image.base, fallback=image.fallback_base)
        base_ref, base_id = base.ref, base.id
    context = entry_context(debs, base_id=base_id, workdir=cache, dockerfile=dockerfile, name=name)
    entry = entry_repository(settings, suffix)
    registry = Registry(entry)
    digest = registry.digest_of(context.tag)
    if digest is not None:
        log.info("image %s:%s is in the registry already", registry.repository, context.tag)
        return f"{registry.repository}@{digest}"
    if not build:
        return f"{registry.repository}:{context.tag}"
    log.info("building %s %s on %s, no network", name, context.version, base_ref)
    local = f"{registry.repository}:{context.tag}"
    report = engine.build(io.BytesIO(context.tar), tag=local, buildargs={"BASE_IMAGE": base_ref})
    auth: dict[str, str] = {}
    if settings.registry_token is not None:
        auth = {"registrytoken": settings.registry_token.get_secret_value()}
    elif settings.registry_username and settings.registry_password is not None:
        auth = {
            "username": settings.registry_username,
            "password": settings.registry_password.get_secret_value(),
        }
    digest = engine.push(
        report.image_id or local,
        repository=registry.repository,
        tags=[context.tag],
        auth=auth or None,
    )
    log.info("pushed %s@%s", registry.repository, digest)
    return f"{registry.repository}@{digest}"
