"""The experiment's Prometheus: Debian's package in a locally built image, in the stack.

While an experiment runs, the stack has a ``prometheus`` service. It finds the model tasks of
both arms through Docker Swarm service discovery (``dockerswarm_sd_configs``, role ``tasks``,
through the engine's socket, mounted read-only: Prometheus runs as root for that, so treat the
service as privileged) and scrapes their ``/metrics`` (``serving_*`` with ``variant`` and
``experiment`` labels) and the entry's HAProxy exporter (``haproxy_backend_*`` per backend
``model``/``candidate`` and per server). Its HTTP API answers behind the entry's stats port
(``http://HOST:<stats_port>/api/v1/...``), which is where ``pipeline ab decide --prometheus``
reads the guardrails. Its data lives in the task (an experiment's weeks, not a year): when the
task restarts the guardrails start counting again.

The image is built like the entry's (:func:`pipeline.deploy.haproxy.ensure_entry_image`): the
``.deb`` downloaded on the host, unpacked into the build context, copied onto the project's
Python base with no network in the build, pushed as ``<IMAGE_REPOSITORY>-prometheus`` and
referenced by digest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipeline.config import ImageParams, Settings
from pipeline.deploy import haproxy
from pipeline.deploy.stack import Shape

__all__ = ["PORT", "ensure_image", "prometheus_config", "service"]

PACKAGES = ("prometheus",)
PORT = 9090
SCRAPE_INTERVAL_S = 5
DOCKERFILE = f"""\
# The A/B experiments' Prometheus: Debian's package, unpacked on the host (dpkg -x).
ARG BASE_IMAGE
FROM ${{BASE_IMAGE}}
COPY rootfs/ /
RUN ["/usr/bin/prometheus", "--version"]
EXPOSE {PORT}
ENTRYPOINT ["/usr/bin/prometheus"]
"""
START = (
    'printf "%s" "$$PROMETHEUS_CONFIG" > /tmp/prometheus.yml && exec /usr/bin/prometheus '
    f"--config.file=/tmp/prometheus.yml --storage.tsdb.path=/tmp/prometheus "
    f"--web.listen-address=:{PORT} --storage.tsdb.retention.time=30d"
)
MB = 1024 * 1024


def prometheus_config(stack: str, *, interval_s: int = SCRAPE_INTERVAL_S) -> str:
    """prometheus.yml: the model tasks of both arms (Swarm discovery) and the entry."""
    keep = [
        {
            "source_labels": ["__meta_dockerswarm_service_name"],
            "regex": f"{stack}_(model|candidate)",
            "action": "keep",
        },
        {
            "source_labels": ["__meta_dockerswarm_network_name"],
            "regex": f"{stack}_serving",
            "action": "keep",
        },
        {
            "source_labels": ["__meta_dockerswarm_task_desired_state"],
            "regex": "running",
            "action": "keep",
        },
        {"source_labels": ["__meta_dockerswarm_service_name"], "target_label": "service"},
        {"source_labels": ["__meta_dockerswarm_task_slot"], "target_label": "slot"},
    ]
    document = {
        "global": {"scrape_interval": f"{interval_s}s", "evaluation_interval": f"{interval_s}s"},
        "scrape_configs": [
            {
                "job_name": "model",
                "dockerswarm_sd_configs": [
                    {
                        "host": "unix:///var/run/docker.sock",
                        "role": "tasks",
                        "port": haproxy.MODEL_PORT,
                        "refresh_interval": f"{interval_s}s",
                    }
                ],
                "relabel_configs": keep,
            },
            {
                "job_name": "entry",  # the tasks' addresses: a service VIP did not answer here
                "dns_sd_configs": [
                    {
                        "names": [f"tasks.{stack}_entry"],
                        "type": "A",
                        "port": haproxy.ADMIN_PORT,
                        "refresh_interval": f"{interval_s}s",
                    }
                ],
            },
        ],
    }
    return yaml.safe_dump(document, sort_keys=False)


def service(stack: str, *, image: str, labels: dict[str, str]) -> tuple[dict[str, Any], Shape]:
    """The Compose service and the Shape reconcile compares (``labels`` without the hash)."""
    config = prometheus_config(stack)
    env = {"PROMETHEUS_CONFIG": config}
    update = {
        "parallelism": 1,
        "order": "stop-first",
        "failure_action": "rollback",
        "monitor": "5s",
    }
    document = {
        "image": image,
        "user": "0:0",  # the engine's socket, for Swarm discovery
        "entrypoint": ["/bin/sh", "-c", START],
        "environment": env,
        "volumes": [
            {
                "type": "bind",
                "source": "/var/run/docker.sock",
                "target": "/var/run/docker.sock",
                "read_only": True,
            }
        ],
        "networks": ["serving"],
        "deploy": {
            "mode": "replicated",
            "replicas": 1,
            "endpoint_mode": "dnsrr",  # as the model services: the entry reaches its task
            "labels": labels,
            "resources": {"limits": {"cpus": "0.25", "memory": "256M"}},
            "restart_policy": {"condition": "any", "delay": "2s"},
            "update_config": update,
        },
    }
    shape = Shape(
        image=image,
        replicas=1,
        env=tuple(sorted(f"{k}={v}" for k, v in env.items())),
        nano_cpus=round(0.25 * 1e9),
        memory_bytes=256 * MB,
        labels=(),
        configs=(),
        ports=(),
        health=(0, 0, 0, 0),
        update=("stop-first", "rollback", 5 * 10**9, 1),
        endpoint_mode="dnsrr",
    )
    return document, shape


def ensure_image(settings: Settings, image: ImageParams, *, build: bool = True) -> str:
    """``REGISTRY/<IMAGE_REPOSITORY>-prometheus@sha256:...`` (found, or built and pushed)."""
    return haproxy.ensure_entry_image(
        settings,
        image,
        cache=Path("build/prometheus"),
        build=build,
        packages=PACKAGES,
        dockerfile=DOCKERFILE,
        name="prometheus",
        suffix="-prometheus",
    )


def rendered_image(stack_file: Path) -> str | None:
    """The Prometheus image of the last render (``pipeline status`` builds nothing)."""
    if not stack_file.is_file():
        return None
    document = yaml.safe_load(stack_file.read_text()) or {}
    found = ((document.get("services") or {}).get("prometheus") or {}).get("image")
    return str(found) if found else None
