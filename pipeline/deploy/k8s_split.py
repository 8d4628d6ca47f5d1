"""The same split for Kubernetes: what `pipeline render k8s` adds to an overlay while an
experiment runs. Generated and validated offline (``kubernetes-validate --strict``), not run:
no API server can run on the machines this toolkit is built on.

``overlays/<env>/experiment.yaml`` holds

- the candidate: Deployment ``model-candidate`` (the model Deployment as the overlay builds it,
  with the candidate's digest and ``SERVING_VARIANT=b``) and its Service;
- the entry: a ConfigMap with HAProxy's configuration (the Swarm entry's split rules, line for
  line, with the two arms behind their Services and A as the backup of B), a Deployment of two
  HAProxy pods (the same Debian-built image as on Swarm) and the Service ``entry`` that an
  Ingress points at. The share is the entry's ``AB_SHARE`` variable, from which each pod writes
  its map at start: on Kubernetes a ramp is a rolling update of the entry pods (two replicas, no
  unavailable one, the bucket of every user unchanged), not a runtime API call;

and ``overlays/<env>/experiment-patch.yaml`` tells the champion it is arm A.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from pipeline.ab.record import Experiment
from pipeline.deploy import haproxy
from pipeline.deploy.split import frontend_rules, map_script
from pipeline.release.state import State

__all__ = [
    "ENTRY_IMAGE",
    "arm_env",
    "entry_image_of",
    "experiment_objects",
    "files",
    "model_patch",
]

ENTRY_IMAGE = "entry"  # the placeholder the overlay's `images:` names
ENTRY_PORT = 8080


def arm_env(experiment: Experiment, variant: str) -> list[dict[str, str]]:
    return [
        {"name": "SERVING_VARIANT", "value": variant},
        {"name": "SERVING_EXPERIMENT", "value": experiment.id},
        {"name": "SERVING_USER_HEADER", "value": experiment.split.user_header},
    ]


def model_patch(experiment: Experiment) -> dict[str, Any]:
    """A strategic-merge patch: the champion's container gets arm A's variables."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "model"},
        "spec": {
            "template": {
                "spec": {"containers": [{"name": "model", "env": arm_env(experiment, "a")}]}
            }
        },
    }


def entry_config(experiment: Experiment, state: State) -> str:
    """haproxy.cfg of the Kubernetes entry: Services by cluster DNS, A as the backup of B."""
    version_a, version_b = state.model.version, experiment.candidate.model.version
    check = (
        "check inter 2s fall 2 rise 1 resolvers cluster resolve-prefer ipv4 "
        "init-addr last,libc,none"
    )
    return f"""\
# The entry of an A/B experiment on Kubernetes, rendered by `pipeline render k8s`.
global
    log stdout format raw local0 notice
    maxconn 4096
    stats socket /tmp/haproxy.sock mode 600 level admin

defaults
    mode http
    log global
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response junk-response 503

resolvers cluster
    parse-resolv-conf
    hold valid 5s

frontend entry
    bind :{ENTRY_PORT}
{frontend_rules(experiment)}    default_backend model

frontend admin
    bind :{haproxy.ADMIN_PORT}
    monitor-uri /healthz
    http-request use-service prometheus-exporter if {{ path /metrics }}

backend model
    option httpchk
    http-check send meth GET uri /v2/health/ready
    server model model:80 {check}
    http-response set-header X-Model-Variant a
    http-response set-header X-Model-Version {version_a}

backend candidate
    option httpchk
    http-check send meth GET uri /v2/health/ready
    server b model-candidate:80 {check} observe layer4 error-limit 1 on-error mark-down
    server a model:80 {check} backup
    http-response set-header X-Model-Variant b if {{ srv_name -m beg b }}
    http-response set-header X-Model-Version {version_b} if {{ srv_name -m beg b }}
    http-response set-header X-Model-Variant a if {{ srv_name -m beg a }}
    http-response set-header X-Model-Version {version_a} if {{ srv_name -m beg a }}
    http-response set-header X-Experiment-Fallback 1 if {{ srv_name -m beg a }}
"""


def experiment_objects(
    experiment: Experiment, state: State, *, model_deployment: dict[str, Any]
) -> list[dict[str, Any]]:
    """The objects of ``experiment.yaml``; ``model_deployment``: the champion's Deployment as
    the overlay builds it (:func:`pipeline.deploy.k8s.built`), the candidate's template."""
    candidate = copy.deepcopy(model_deployment)
    for key in ("namespace", "annotations"):
        candidate["metadata"].pop(key, None)
    candidate["metadata"]["name"] = "model-candidate"
    component = {"app.kubernetes.io/component": "model-candidate"}
    candidate["spec"]["selector"]["matchLabels"].update(component)
    template = candidate["spec"]["template"]
    template["metadata"]["labels"].update(component)
    template["metadata"]["annotations"] = {  # not ml.model.*: the overlay sets A's on all
        "ml.experiment.id": experiment.id,
        "ml.experiment.arm": "b",
        "ml.experiment.model.name": experiment.candidate.model.name,
        "ml.experiment.model.version": experiment.candidate.model.version,
        "ml.experiment.image.digest": experiment.candidate.image.digest,
    }
    container = template["spec"]["containers"][0]
    image = experiment.candidate.image
    container["image"] = f"{image.repository}@{image.digest}"
    container["env"] = [
        e for e in container.get("env", []) if not e["name"].startswith("SERVING_VARIANT")
    ] + arm_env(experiment, "b")
    candidate_service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "model-candidate"},
        "spec": {
            "selector": {**component},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "entry"},
        "data": {"haproxy.cfg": entry_config(experiment, state)},
    }
    probe = {"httpGet": {"path": "/healthz", "port": "admin"}, "periodSeconds": 2}
    entry_labels = {"app.kubernetes.io/component": "entry"}
    entry = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "entry"},
        "spec": {
            "replicas": 2,
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "selector": {"matchLabels": dict(entry_labels)},
            "template": {
                "metadata": {"labels": dict(entry_labels)},
                "spec": {
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 65534},
                    "containers": [
                        {
                            "name": "haproxy",
                            "image": ENTRY_IMAGE,
                            "command": ["/bin/sh", "-c", map_script().replace("$$", "$")],
                            "env": [{"name": "AB_SHARE", "value": str(experiment.share)}],
                            "ports": [
                                {"name": "http", "containerPort": ENTRY_PORT},
                                {"name": "admin", "containerPort": haproxy.ADMIN_PORT},
                            ],
                            "readinessProbe": probe,
                            "livenessProbe": probe,
                            "volumeMounts": [
                                {
                                    "name": "config",
                                    "mountPath": haproxy.CONFIG_PATH.rsplit("/", 1)[0],
                                    "readOnly": True,
                                }
                            ],
                            "resources": {
                                "requests": {"cpu": "100m", "memory": "64Mi"},
                                "limits": {"cpu": "500m", "memory": "128Mi"},
                            },
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                            },
                        }
                    ],
                    "volumes": [{"name": "config", "configMap": {"name": "entry"}}],
                },
            },
        },
    }
    entry_service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "entry"},
        "spec": {
            "selector": dict(entry_labels),
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }
    return [candidate, candidate_service, config, entry, entry_service]


def files(
    experiment: Experiment,
    state: State,
    overlay: dict[str, Any],
    *,
    model_deployment: dict[str, Any],
    entry_image: str | None,
) -> dict[str, str]:
    """``experiment.yaml`` and ``experiment-patch.yaml`` of the overlay (names -> text), and
    the overlay (``overlay``, changed in place) told to use them and the entry image."""
    objects = experiment_objects(experiment, state, model_deployment=model_deployment)
    header = (
        f"# Rendered by `pipeline render k8s` from deploy/{state.environment}.yaml: A/B "
        f"experiment {experiment.id}. Do not edit.\n"
    )
    overlay["resources"] = [*overlay["resources"], "experiment.yaml"]
    overlay["patches"] = [*overlay["patches"], {"path": "experiment-patch.yaml"}]
    entry: dict[str, str] = {"name": ENTRY_IMAGE, "newName": f"{state.image.repository}-entry"}
    if entry_image and "@" in entry_image:
        entry["newName"], entry["digest"] = entry_image.split("@", 1)
    overlay["images"] = [*overlay["images"], entry]
    dump = yaml.safe_dump
    return {
        "experiment.yaml": header
        + "---\n".join(dump(o, sort_keys=False, width=100) for o in objects),
        "experiment-patch.yaml": header + dump(model_patch(experiment), sort_keys=False),
    }


def entry_image_of(stack_file: Path) -> str | None:
    """The entry image a Swarm render pinned (the same image serves on Kubernetes)."""
    if not stack_file.is_file():
        return None
    document = yaml.safe_load(stack_file.read_text()) or {}
    found = ((document.get("services") or {}).get("entry") or {}).get("image")
    return str(found) if found else None
