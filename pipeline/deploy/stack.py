"""The Compose-spec stack file of an environment, rendered from git's desired state.

Inputs: ``deploy/<env>.yaml`` (the digest a promotion recorded, and its model version) and the
environment's :class:`~pipeline.deploy.topology.EnvTopology`. Output: ``deploy/<env>.stack.yaml``
and the entry's ``deploy/<env>.haproxy.cfg``, deterministic text a reviewer reads in the same
commit as the promotion, plus each service's :class:`Shape`: the fields of a Swarm service spec
that reconcile compares with the live service to tell "nothing to do", "git changed" and "someone
changed the service by hand" apart.

Two services: ``model`` (the image by digest, ``endpoint_mode: dnsrr``, health check on
``/v2/health/ready``, start-first updates that roll back on failure) and ``entry`` (HAProxy, the
one published port in host mode). Only ``model`` changes when a promotion moves the digest.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any

import yaml

from pipeline.deploy import haproxy
from pipeline.deploy.topology import EnvTopology
from pipeline.release.state import State

__all__ = ["Desired", "Shape", "render"]

HEADER = (
    "# The {env} stack, rendered by `pipeline reconcile --env {env}` from deploy/{env}.yaml\n"
    "# and deploy/topology.yaml. Do not edit: change those files and re-render.\n"
)
SPEC_LABEL = "ml.deploy.spec"  # hash of the desired Shape at the last apply: drift vs. git
READY_CHECK = (
    "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/v2/health/ready'"
    " % os.environ.get('SERVING_PORT', '8080'), timeout=2)"
)
ENTRY_CHECK = (
    f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{haproxy.ADMIN_PORT}"
    "/healthz', timeout=2)"
)
MB = 1024 * 1024


@dataclass(frozen=True)
class Shape:
    """What reconcile compares: the parts of a service a stack file sets."""

    image: str
    replicas: int
    env: tuple[str, ...]
    nano_cpus: int
    memory_bytes: int
    labels: tuple[tuple[str, str], ...]
    configs: tuple[str, ...]
    ports: tuple[tuple[int, int, str], ...]  # (published, target, mode)
    health: tuple[int, int, int, int]  # interval, timeout, start period (ns), retries
    update: tuple[str, str, int, int]  # order, failure action, monitor (ns), parallelism
    endpoint_mode: str
    # The replicas are the autoscaler's (deploy/topology.yaml `autoscale:`): they are rendered
    # from the live count (clamped to the bounds) and left out of the spec hash, so a count the
    # autoscaler chose is neither "git moved" nor drift. Not a Swarm field: never compared.
    autoscaled: bool = False

    def digest(self) -> str:
        shown: dict[str, Any] = asdict(self)
        if shown.pop("autoscaled"):
            shown["replicas"] = "autoscaled"
        return hashlib.sha256(json.dumps(shown, sort_keys=True).encode()).hexdigest()[:16]

    def differences(self, live: Shape) -> list[str]:
        """Names of the fields where ``live`` is not this shape (labels: only ours)."""
        changed = []
        for f in fields(self):
            if f.name == "autoscaled":
                continue
            if getattr(self, f.name) != getattr(live, f.name):
                changed.append(f.name)
        return changed

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Shape:
        """The shape of a live Swarm service spec (as `docker service inspect` gives it)."""
        template = spec.get("TaskTemplate") or {}
        container = template.get("ContainerSpec") or {}
        limits = (template.get("Resources") or {}).get("Limits") or {}
        health = container.get("Healthcheck") or {}
        update = spec.get("UpdateConfig") or {}
        ports = ((spec.get("EndpointSpec") or {}).get("Ports")) or []
        labels = {k: v for k, v in (spec.get("Labels") or {}).items() if k.startswith("ml.")}
        return cls(
            image=str(container.get("Image", "")),
            replicas=int(((spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas", 0)),
            env=tuple(sorted(container.get("Env") or [])),
            nano_cpus=int(limits.get("NanoCPUs", 0)),
            memory_bytes=int(limits.get("MemoryBytes", 0)),
            labels=tuple(sorted(labels.items())),
            configs=tuple(sorted(str(c.get("ConfigName")) for c in container.get("Configs") or [])),
            ports=tuple(
                sorted(
                    (
                        int(p.get("PublishedPort", 0)),
                        int(p["TargetPort"]),
                        str(p.get("PublishMode")),
                    )
                    for p in ports
                )
            ),
            health=(
                int(health.get("Interval", 0)),
                int(health.get("Timeout", 0)),
                int(health.get("StartPeriod", 0)),
                int(health.get("Retries", 0)),
            ),
            update=(
                str(update.get("Order", "")),
                str(update.get("FailureAction", "")),
                int(update.get("Monitor", 0)),
                int(update.get("Parallelism", 0)),
            ),
            endpoint_mode=str((spec.get("EndpointSpec") or {}).get("Mode", "vip")),
        )


@dataclass(frozen=True)
class Desired:
    """An environment's rendered desired state."""

    env: str
    stack: str
    stack_yaml: str
    haproxy_cfg: str
    config_name: str
    shapes: dict[str, Shape]  # by service short name: model, entry
    model_digest: str
    model_version: str
    experiment_share: int | None = (
        None  # an A/B split runs: the entry's live map (pipeline/deploy/split.py)
    )

    def service(self, name: str) -> str:
        return f"{self.stack}_{name}"

    def key(self) -> str:
        """Identifies this desired state: what --watch backs off from after a failure."""
        return hashlib.sha256(self.stack_yaml.encode() + self.haproxy_cfg.encode()).hexdigest()


def _seconds(value: float) -> str:
    return f"{int(value * 1000)}ms" if value != int(value) else f"{int(value)}s"


def _ns(value: float) -> int:
    return round(value * 1e9)


def _cpus(value: float) -> str:
    return f"{value:g}"


def render(state: State, shape: EnvTopology, *, entry_image: str, cfg_file: str = "") -> Desired:
    """The stack for ``state`` shaped by ``shape``; ``cfg_file``: the haproxy.cfg path as the
    stack file names it (default ``./<env>.haproxy.cfg``, beside the stack file)."""
    env, stack = state.environment, shape.stack
    model_ref = f"{state.image.repository}@{state.image.digest}"
    cfg = haproxy.render_config(shape, model_service=f"{stack}_model")
    config_name = f"{stack}_haproxy_{hashlib.sha256(cfg.encode()).hexdigest()[:12]}"
    labels = {
        "ml.environment": env,
        "ml.model.name": state.model.name,
        "ml.model.version": state.model.version,
        "ml.image.digest": state.image.digest,
    }
    if shape.autoscale is not None:  # for a reader of the stack file: who owns `replicas`
        labels["ml.autoscale"] = f"{shape.autoscale.min_replicas}-{shape.autoscale.max_replicas}"
    health, update = shape.health, shape.update
    model_env = {"SERVING_WORKERS": str(shape.serving_workers)}
    update_config = {
        "parallelism": update.parallelism,
        "delay": _seconds(update.delay_s),
        "order": "start-first",
        "failure_action": "rollback",
        "monitor": _seconds(update.monitor_s),
        "max_failure_ratio": update.max_failure_ratio,
    }
    rollback_config = {
        "parallelism": update.parallelism,
        "order": "start-first",
        "failure_action": "pause",
        "monitor": _seconds(update.monitor_s),
    }
    shapes = {
        "model": Shape(
            image=model_ref,
            replicas=shape.replicas,
            env=tuple(sorted(f"{k}={v}" for k, v in model_env.items())),
            nano_cpus=_ns(shape.resources.cpus),
            memory_bytes=shape.resources.memory_mb * MB,
            labels=(),
            configs=(),
            ports=(),
            health=(
                _ns(health.interval_s),
                _ns(health.timeout_s),
                _ns(health.start_period_s),
                health.retries,
            ),
            update=("start-first", "rollback", _ns(update.monitor_s), update.parallelism),
            endpoint_mode="dnsrr",
            autoscaled=shape.autoscale is not None,
        ),
        "entry": Shape(
            image=entry_image,
            replicas=1,
            env=(),
            nano_cpus=_ns(shape.entry.resources.cpus),
            memory_bytes=shape.entry.resources.memory_mb * MB,
            labels=(),
            configs=(config_name,),
            ports=tuple(
                sorted(
                    [(shape.entry.port, shape.entry.port, "host")]
                    + (
                        [(shape.entry.stats_port, haproxy.ADMIN_PORT, "host")]
                        if shape.entry.stats_port
                        else []
                    )
                )
            ),
            # The entry's own check uses the environment's timings too: a check that times out
            # on a loaded machine must not restart the one task holding the port.
            health=(_ns(health.interval_s), _ns(health.timeout_s), _ns(5), health.retries),
            update=("stop-first", "rollback", _ns(5), 1),
            endpoint_mode="vip",
        ),
    }
    # Our labels, with the hash of the shape they describe, go on each service.
    service_labels: dict[str, dict[str, str]] = {}
    for name, s in list(shapes.items()):
        # The entry does not carry the model's labels: a new digest must not touch it.
        mine = {**(labels if name == "model" else {"ml.environment": env}), "ml.service": name}
        mine[SPEC_LABEL] = s.digest()
        service_labels[name] = mine
        shapes[name] = Shape(**{**asdict(s), "labels": tuple(sorted(mine.items()))})
    entry_ports = [
        {"target": target, "published": published, "protocol": "tcp", "mode": "host"}
        for published, target, _ in shapes["entry"].ports
    ]
    document: dict[str, Any] = {
        "version": "3.8",
        "services": {
            "model": {
                "image": model_ref,
                "environment": model_env,
                "healthcheck": {
                    "test": ["CMD", "/opt/venv/bin/python", "-c", READY_CHECK],
                    "interval": _seconds(health.interval_s),
                    "timeout": _seconds(health.timeout_s),
                    "retries": health.retries,
                    "start_period": _seconds(health.start_period_s),
                },
                "stop_grace_period": _seconds(shape.stop_grace_period_s),
                "networks": ["serving"],
                "deploy": {
                    "mode": "replicated",
                    "replicas": shape.replicas,
                    "endpoint_mode": "dnsrr",
                    "labels": service_labels["model"],
                    "resources": {
                        "limits": {
                            "cpus": _cpus(shape.resources.cpus),
                            "memory": f"{shape.resources.memory_mb}M",
                        }
                    },
                    "restart_policy": {"condition": "any", "delay": "2s"},
                    "update_config": update_config,
                    "rollback_config": rollback_config,
                },
            },
            "entry": {
                "image": entry_image,
                "configs": [{"source": "haproxy", "target": haproxy.CONFIG_PATH, "mode": 0o444}],
                "ports": entry_ports,
                "healthcheck": {
                    "test": ["CMD", "python3", "-c", ENTRY_CHECK],
                    "interval": _seconds(health.interval_s),
                    "timeout": _seconds(health.timeout_s),
                    "retries": health.retries,
                    "start_period": "5s",
                },
                "stop_grace_period": _seconds(shape.stop_grace_period_s),
                "networks": ["serving"],
                "deploy": {
                    "mode": "replicated",
                    "replicas": 1,
                    "labels": service_labels["entry"],
                    "resources": {
                        "limits": {
                            "cpus": _cpus(shape.entry.resources.cpus),
                            "memory": f"{shape.entry.resources.memory_mb}M",
                        }
                    },
                    "restart_policy": {"condition": "any", "delay": "2s"},
                    # One host port cannot be held by two tasks: the entry stops, then starts.
                    "update_config": {
                        "parallelism": 1,
                        "order": "stop-first",
                        "failure_action": "rollback",
                        "monitor": "5s",
                    },
                },
            },
        },
        "networks": {"serving": {"driver": "overlay"}},
        "configs": {"haproxy": {"name": config_name, "file": cfg_file or f"./{env}.haproxy.cfg"}},
    }
    text = HEADER.format(env=env) + yaml.safe_dump(document, sort_keys=False, width=100)
    return Desired(
        env=env,
        stack=stack,
        stack_yaml=text,
        haproxy_cfg=cfg,
        config_name=config_name,
        shapes=shapes,
        model_digest=state.image.digest,
        model_version=state.model.version,
    )
