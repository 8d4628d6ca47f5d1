"""`pipeline render k8s`: Kustomize base + overlays and Argo CD Applications, from git.

For teams that outgrow one machine. Nothing here talks to a cluster (none can run on these
machines): it writes files that an existing Argo CD or Flux installation syncs.

- ``base/``: a Deployment (readiness ``/v2/health/ready``, liveness ``/v2/health/live``, rolling
  update with no unavailable pod, non-root), a Service and a PodDisruptionBudget. The image is
  the placeholder ``model``, replaced by each overlay.
- ``overlays/<env>/``: the namespace, the image **by digest** from ``deploy/<env>.yaml``
  (Kustomize ``images:``), and a patch with the topology's replicas, resources and probe timings;
  for an environment with ``autoscale:``, KEDA's ``ScaledObject`` (:func:`scaled_object`).
- ``argocd/<env>.yaml``: an ``Application`` syncing that overlay (automated, prune, self-heal;
  with ``ignoreDifferences`` on the Deployment's ``/spec/replicas`` when it is autoscaled).

Output is deterministic (sorted keys where order carries no meaning, fixed order otherwise) and
golden-file tested; :func:`built` is what ``kustomize build overlays/<env>`` yields, used to
validate the final objects with ``kubernetes-validate``.
"""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import Settings
from pipeline.deploy import k8s_split
from pipeline.deploy.topology import EnvTopology, Topology
from pipeline.errors import ConfigError, MissingInputError
from pipeline.release.state import State, read_state

__all__ = ["built", "files", "podman_manifest", "scaled_object", "write", "write_podman"]

APP = "model-server"
PORT = 8080
HEADER = "# Rendered by `pipeline render k8s` from deploy/topology.yaml{more}. Do not edit.\n"
# Where KEDA asks for the request rate: kube-prometheus' service; patch the overlay for another.
PROMETHEUS = "http://prometheus-operated.monitoring.svc:9090"
LABELS = {"app.kubernetes.io/name": APP, "app.kubernetes.io/part-of": "gitops-ml-pipeline"}


def _dump(document: dict[str, Any], *, more: str = "") -> str:
    return HEADER.format(more=more) + yaml.safe_dump(document, sort_keys=False, width=100)


def _probe(path: str, shape: EnvTopology, *, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": max(1, round(shape.health.interval_s)),
        "timeoutSeconds": max(1, round(shape.health.timeout_s)),
        "failureThreshold": failures,
    }


def _base() -> dict[str, dict[str, Any]]:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "model"},
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 5,
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "selector": {"matchLabels": {"app.kubernetes.io/component": "model"}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/component": "model"}},
                "spec": {
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
                    "terminationGracePeriodSeconds": 15,
                    "containers": [
                        {
                            "name": "model",
                            "image": "model",
                            "ports": [{"name": "http", "containerPort": PORT}],
                            "readinessProbe": {
                                "httpGet": {"path": "/v2/health/ready", "port": "http"}
                            },
                            "livenessProbe": {
                                "httpGet": {"path": "/v2/health/live", "port": "http"}
                            },
                            "resources": {
                                "requests": {"cpu": "250m", "memory": "256Mi"},
                                "limits": {"cpu": "1", "memory": "512Mi"},
                            },
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                            },
                        }
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "model"},
        "spec": {
            "selector": {"app.kubernetes.io/component": "model"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }
    pdb = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "model"},
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/component": "model"}},
        },
    }
    return {"deployment.yaml": deployment, "service.yaml": service, "pdb.yaml": pdb}


def _patch(shape: EnvTopology) -> dict[str, Any]:
    cpu_request = f"{max(1, int(shape.resources.cpus * 500))}m"
    memory = f"{shape.resources.memory_mb}Mi"
    start_failures = max(1, int(shape.health.start_period_s / max(shape.health.interval_s, 1)))
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "model"},
        "spec": {
            "replicas": shape.replicas,
            "template": {
                "spec": {
                    "terminationGracePeriodSeconds": int(shape.stop_grace_period_s),
                    "containers": [
                        {
                            "name": "model",
                            "env": [
                                {"name": "SERVING_WORKERS", "value": str(shape.serving_workers)}
                            ],
                            "startupProbe": _probe(
                                "/v2/health/ready", shape, failures=start_failures + 1
                            ),
                            "readinessProbe": _probe(
                                "/v2/health/ready", shape, failures=shape.health.retries
                            ),
                            "livenessProbe": _probe(
                                "/v2/health/live", shape, failures=shape.health.retries
                            ),
                            "resources": {
                                "requests": {"cpu": cpu_request, "memory": memory},
                                "limits": {"cpu": f"{shape.resources.cpus:g}", "memory": memory},
                            },
                        }
                    ],
                }
            },
        },
    }


def scaled_object(shape: EnvTopology) -> dict[str, Any] | None:
    """KEDA's ``ScaledObject`` for an autoscaled environment (None otherwise): the Swarm
    autoscaler's rule (:mod:`pipeline.deploy.autoscale`) on the same quantity, the request rate
    the model receives, read from Prometheus (the servers' ``serving_requests_total``, probes
    and scrapes left out). ``AverageValue`` makes the HPA that KEDA creates compute
    ``ceil(rate / threshold)`` within the bounds; its behaviour is ours: up at once, down one
    pod per stabilisation window."""
    scale = shape.autoscale
    if scale is None:
        return None
    window = max(1, round(scale.window_s))
    quiet = round(scale.scale_down_stabilisation_s)
    query = (
        f'sum(rate(serving_requests_total{{namespace="{shape.stack}",'
        f'route!~"/v2/health/.*|/metrics"}}[{window}s]))'
    )
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "model"},
        "spec": {
            "scaleTargetRef": {"name": "model"},
            "pollingInterval": max(1, round(scale.interval_s)),
            "minReplicaCount": scale.min_replicas,
            "maxReplicaCount": scale.max_replicas,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        "scaleUp": {
                            "stabilizationWindowSeconds": 0,
                            "policies": [
                                {"type": "Pods", "value": scale.max_replicas, "periodSeconds": 15}
                            ],
                        },
                        "scaleDown": {
                            "stabilizationWindowSeconds": quiet,
                            "policies": [
                                {"type": "Pods", "value": 1, "periodSeconds": max(1, quiet)}
                            ],
                        },
                    }
                }
            },
            "triggers": [
                {
                    "type": "prometheus",
                    "metricType": "AverageValue",
                    "metadata": {
                        "serverAddress": PROMETHEUS,
                        "query": query,
                        "threshold": f"{scale.target_rps_per_replica:g}",
                    },
                }
            ],
        },
    }


def _overlay(state: State, shape: EnvTopology) -> dict[str, Any]:
    resources = ["../../base"] + (["scaledobject.yaml"] if shape.autoscale else [])
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": shape.stack,
        "resources": resources,
        "labels": [
            {"pairs": {"app.kubernetes.io/instance": shape.stack}, "includeSelectors": True}
        ],
        "commonAnnotations": {
            "ml.environment": state.environment,
            "ml.model.name": state.model.name,
            "ml.model.version": state.model.version,
            "ml.image.digest": state.image.digest,
        },
        "images": [
            {"name": "model", "newName": state.image.repository, "digest": state.image.digest}
        ],
        "patches": [{"path": "deployment-patch.yaml"}],
    }


def _application(env: str, shape: EnvTopology, *, repo_url: str) -> dict[str, Any]:
    application: dict[str, Any] = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": shape.stack, "namespace": "argocd"},
        "spec": {
            "project": "default",
            "source": {
                "repoURL": repo_url,
                "targetRevision": "HEAD",
                "path": f"deploy/k8s/overlays/{env}",
            },
            "destination": {"server": "https://kubernetes.default.svc", "namespace": shape.stack},
            "syncPolicy": {
                "automated": {"prune": True, "selfHeal": True},
                "syncOptions": ["CreateNamespace=true"],
            },
        },
    }
    if shape.autoscale is not None:  # KEDA's HPA owns the replicas: Argo CD leaves them alone
        spec = application["spec"]
        spec["ignoreDifferences"] = [
            {
                "group": "apps",
                "kind": "Deployment",
                "name": "model",
                "jsonPointers": ["/spec/replicas"],
            }
        ]
        spec["syncPolicy"]["syncOptions"].append("RespectIgnoreDifferences=true")
    return application


def files(
    states: dict[str, State],
    topology: Topology,
    *,
    repo_url: str,
    entry_images: dict[str, str] | None = None,
) -> dict[str, str]:
    """Relative path -> text, for the base and each environment in ``states`` (with an A/B
    experiment's objects where one runs: :mod:`pipeline.deploy.k8s_split`)."""
    out = {f"base/{name}": _dump(doc) for name, doc in _base().items()}
    out["base/kustomization.yaml"] = _dump(
        {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "labels": [{"pairs": LABELS, "includeSelectors": False}],
            "resources": ["deployment.yaml", "service.yaml", "pdb.yaml"],
        }
    )
    for env, state in sorted(states.items()):
        shape = topology.get(env)
        more = f" and deploy/{env}.yaml"
        overlay = _overlay(state, shape)
        experiment = state.experiment
        if experiment is not None and experiment.running:
            model = next(o for o in built(state, topology) if o["kind"] == "Deployment")
            extra = k8s_split.files(
                experiment,
                state,
                overlay,
                model_deployment=model,
                entry_image=(entry_images or {}).get(env),
            )
            out.update({f"overlays/{env}/{name}": text for name, text in extra.items()})
        out[f"overlays/{env}/kustomization.yaml"] = _dump(overlay, more=more)
        out[f"overlays/{env}/deployment-patch.yaml"] = _dump(_patch(shape))
        scaler = scaled_object(shape)
        if scaler is not None:
            out[f"overlays/{env}/scaledobject.yaml"] = _dump(scaler)
        out[f"argocd/{env}.yaml"] = _dump(_application(env, shape, repo_url=repo_url))
    return out


def built(state: State, topology: Topology) -> list[dict[str, Any]]:
    """The objects `kustomize build overlays/<env>` yields (what a cluster would receive)."""
    shape = topology.get(state.environment)
    overlay, patch = _overlay(state, shape), _patch(shape)
    objects = []
    for name in ("service.yaml", "deployment.yaml", "pdb.yaml"):
        doc = copy.deepcopy(_base()[name])
        meta = doc["metadata"]
        meta["namespace"] = overlay["namespace"]
        meta["labels"] = {**LABELS, "app.kubernetes.io/instance": shape.stack}
        meta["annotations"] = dict(overlay["commonAnnotations"])
        selector_owner = doc["spec"] if doc["kind"] == "Service" else doc["spec"]["selector"]
        key = "selector" if doc["kind"] == "Service" else "matchLabels"
        selector_owner[key] = {**selector_owner[key], "app.kubernetes.io/instance": shape.stack}
        if doc["kind"] == "Deployment":
            spec, template = doc["spec"], doc["spec"]["template"]
            spec["replicas"] = patch["spec"]["replicas"]
            template["metadata"]["labels"]["app.kubernetes.io/instance"] = shape.stack
            template["metadata"]["annotations"] = dict(overlay["commonAnnotations"])
            pod, pod_patch = template["spec"], patch["spec"]["template"]["spec"]
            pod["terminationGracePeriodSeconds"] = pod_patch["terminationGracePeriodSeconds"]
            container = pod["containers"][0]
            container.update(pod_patch["containers"][0])
            container["image"] = f"{state.image.repository}@{state.image.digest}"
        objects.append(doc)
    return objects


def origin_url() -> str:
    done = subprocess.run(
        ["git", "remote", "get-url", "origin"], capture_output=True, text=True, check=False
    )
    url = done.stdout.strip()
    if done.returncode != 0 or not url:
        raise ConfigError(
            "no git remote `origin` to name in the Argo CD Applications: pass --repo-url URL"
        )
    return url


def write(
    settings: Settings,
    topology: Topology,
    *,
    out_dir: Path,
    envs: list[str] | None,
    repo_url: str = "",
) -> list[Path]:
    """Write the manifests for ``envs`` (default: every environment with a deploy/<env>.yaml);
    files of other environments already there are kept."""
    wanted = envs or sorted(topology.environments)
    states = {}
    for env in wanted:
        state = read_state(settings.deploy_dir, env)
        if state is None:
            if envs:
                raise MissingInputError(
                    f"{settings.deploy_dir / env}.yaml does not exist: promote to {env} first"
                )
            continue
        states[env] = state
    if not states:
        raise MissingInputError("no environment has a deploy/<env>.yaml yet: promote first")
    written = []
    entry_images = {}
    for env in states:
        found = k8s_split.entry_image_of(settings.deploy_dir / f"{env}.stack.yaml")
        if found:
            entry_images[env] = found
    rendered = files(states, topology, repo_url=repo_url or origin_url(), entry_images=entry_images)
    for relative, text in rendered.items():
        path = out_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
        written.append(path)
    return written


def podman_manifest(state: State, topology: Topology) -> str:
    """One host, no orchestrator: the environment's Deployment as `podman kube play` runs it.

    The overlay's objects (:func:`built`) with one replica (Podman 4.4+ caps a Deployment at
    one; replicas would share the host port anyway) and the container port published on the
    environment's entry port (``hostPort``). No rolling update, no rollback: those need Swarm
    or Kubernetes."""
    shape = topology.get(state.environment)
    deployment = next(o for o in built(state, topology) if o["kind"] == "Deployment")
    deployment["spec"]["replicas"] = 1
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["ports"][0]["hostPort"] = shape.entry.port
    header = (
        f"# Rendered by `pipeline render podman --env {state.environment}` from "
        f"deploy/topology.yaml and deploy/{state.environment}.yaml. Do not edit.\n"
        f"# Run it on one host: podman kube play {state.environment}.yaml\n"
    )
    return header + yaml.safe_dump(deployment, sort_keys=False, width=100)


def write_podman(settings: Settings, topology: Topology, *, env: str, out_dir: Path) -> Path:
    """``<out_dir>/<env>.yaml``: :func:`podman_manifest` for the environment git holds."""
    state = read_state(settings.deploy_dir, env)
    if state is None:
        raise MissingInputError(
            f"{settings.deploy_dir / env}.yaml does not exist: promote to {env} first"
        )
    path = out_dir / f"{env}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(podman_manifest(state, topology))
    return path
