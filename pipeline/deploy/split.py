"""A running experiment, rendered: a second model service and the entry's sticky split.

:func:`render` wraps :func:`pipeline.deploy.stack.render`: without a running experiment it
returns exactly what that renders; with one, it adds to the same deterministic files

- a ``candidate`` service: the model service's shape with the candidate's digest and labels,
  ``SERVING_VARIANT=b`` (the model service gets ``SERVING_VARIANT=a``; both get the
  experiment id and the user header, so their metrics and exposure lines name their arm);
- in the entry's ``haproxy.cfg``: the user key (the header, else the cookie, else a new UUID
  set as the cookie), its bucket ``crc32("<id>:<key>") mod 100``
  (:mod:`pipeline.ab.assignment`), the variant from a 100-line map, request headers telling
  serving the assignment, response headers telling the caller the variant and model version;
  a ``candidate`` backend whose servers are B's tasks, with A's tasks as backup servers, so
  that when B has no healthy task (or a B task refuses a connection) the request is served by
  A and tagged as a fallback, never answered with a 503;
- on the entry service: the share as a service label (``ml.experiment.share``). A label change
  does not restart a Swarm task, and a task started later reads it through a Swarm template
  into ``AB_SHARE``, from which the entry's start-up writes the map. A ramp therefore changes
  the running map live through HAProxy's runtime API (:mod:`.haproxy_runtime`, no reload)
  and the label for any entry task started afterwards.

Starting or ending an experiment changes the entry's configuration, and the entry (one task
holding the host port) restarts: a few seconds without the entry. Ramps do not.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import asdict, replace
from typing import Any

import yaml

from pipeline.ab.assignment import BUCKETS
from pipeline.ab.record import Experiment
from pipeline.deploy import haproxy, monitor
from pipeline.deploy.stack import HEADER, SPEC_LABEL, Desired, Shape
from pipeline.deploy.stack import render as render_stack
from pipeline.deploy.topology import EnvTopology
from pipeline.release.state import State

__all__ = [
    "MAP_PATH",
    "SHARE_LABEL",
    "entry_config",
    "map_script",
    "render",
    "running",
]

MAP_PATH = "/tmp/ab.map"  # written by the entry's start-up, changed live by the runtime API
SHARE_LABEL = "ml.experiment.share"
ID_LABEL = "ml.experiment.id"
SHARE_ENV = "AB_SHARE"
MAX_KEY = 256  # longer user keys are ignored (the caller gets a cookie instead)


def running(state: State) -> Experiment | None:
    experiment = state.experiment
    return experiment if experiment is not None and experiment.running else None


def map_script() -> str:
    """The entry's start-up: the map for ``$AB_SHARE`` (what :func:`.assignment.bucket_map`
    writes), then HAProxy. ``$$`` is a literal ``$`` in a Compose file."""
    return (
        'case "$$AB_SHARE" in ""|*[!0-9]*) echo "AB_SHARE=$$AB_SHARE is not a share" >&2; '
        "exit 64;; esac; i=0; while [ $$i -lt "
        f"{BUCKETS} ]; do if [ $$i -lt $$AB_SHARE ]; then v=b; else v=a; fi; "
        f'echo "$$i $${{v}}_$$AB_SHARE"; i=$$((i + 1)); done > {MAP_PATH} && exec '
        f"/usr/sbin/haproxy -W -db -f {haproxy.CONFIG_PATH}"
    )


def frontend_rules(experiment: Experiment) -> str:
    """The entry frontend's split: user key, bucket, arm, the headers both ways, the cookie
    (the same lines on Swarm and in the Kubernetes entry: :mod:`.k8s_split`)."""
    split = experiment.split
    header, cookie = split.user_header, split.cookie
    max_age = split.cookie_max_age_days * 86400
    return f"""\
    # A/B experiment {experiment.id}. The share is not here but in the map: a ramp is no reload.
    # The user key: the {header} header, else the {cookie} cookie, else a new one (set below).
    http-request set-var(txn.uid) req.fhdr({header}) if {{ req.fhdr({header}) -m len 1:{MAX_KEY} }}
    http-request set-var(txn.uid) req.cook({cookie}) if !{{ var(txn.uid) -m found }} \
{{ req.cook({cookie}) -m len 1:{MAX_KEY} }}
    http-request set-var(txn.newuid) uuid if !{{ var(txn.uid) -m found }}
    http-request set-var(txn.uid) var(txn.newuid) if {{ var(txn.newuid) -m found }}
    http-request set-header {header} %[var(txn.uid)]
    # bucket = crc32("<experiment id>:<user key>") mod {BUCKETS}; the map says the arm and share
    http-request set-var(txn.bucket) str({experiment.id}:),concat(,txn.uid,),crc32,mod({BUCKETS})
    http-request set-var(txn.split) var(txn.bucket),map_int({MAP_PATH},a_0)
    http-request set-var(txn.assigned) var(txn.split),field(1,_)
    http-request set-var(txn.share) var(txn.split),field(2,_)
    http-request set-header X-Experiment-Bucket %[var(txn.bucket)]
    http-request set-header X-Experiment-Share %[var(txn.share)]
    http-request set-header X-Experiment-Assigned %[var(txn.assigned)]
    http-response set-header X-Experiment {experiment.id}
    http-response set-header X-Experiment-Bucket %[var(txn.bucket)]
    http-response add-header Set-Cookie "{cookie}=%[var(txn.newuid)]; Path=/; \
Max-Age={max_age}; SameSite=Lax; HttpOnly" if {{ var(txn.newuid) -m found }}
    use_backend candidate if {{ var(txn.assigned) -m str b }}
"""


def entry_config(base: str, experiment: Experiment, state: State, *, stack: str) -> str:
    """The entry's haproxy.cfg with the split, from the one without it (golden-file tested)."""
    frontend_end = "    default_backend model\n\nfrontend admin\n"
    model_start = "\nbackend model\n"
    admin_bind = f"frontend admin\n    bind :{haproxy.ADMIN_PORT}\n"
    if base.count(frontend_end) != 1 or base.count(model_start) != 1 or base.count(admin_bind) != 1:
        raise ValueError(
            "the entry's haproxy.cfg no longer has the shape pipeline/deploy/split.py edits "
            "(`default_backend model` before `frontend admin`, one `backend model`)"
        )
    rules = frontend_rules(experiment)
    head, tail = base.split(frontend_end)
    text = head + rules + frontend_end + tail
    # in the admin frontend, after its http-request rules (which HAProxy runs first anyway)
    admin = text.index(admin_bind)
    section_end = text.find("\n\n", admin)
    found = [m for m in range(admin, section_end) if text.startswith("    http-request ", m)]
    at = text.index("\n", found[-1]) + 1 if found else admin + len(admin_bind)
    text = (
        text[:at]
        + "    # the experiment's Prometheus (HTTP API), beside the exporter\n"
        + "    use_backend prometheus if { path_beg /api/v1/ }\n"
        + text[at:]
    )
    before, model = text.split(model_start)
    version_a, version_b = state.model.version, experiment.candidate.model.version
    model_section = model_start + model
    model_section += (
        "    http-response set-header X-Model-Variant a\n"
        f"    http-response set-header X-Model-Version {_token(version_a)}\n"
    )
    candidate = _candidate_backend(model, stack=stack, version_a=version_a, version_b=version_b)
    prometheus = (
        "\nbackend prometheus\n"
        f"    server prometheus tasks.{stack}_prometheus:{monitor.PORT} check "
        "resolvers swarm resolve-prefer ipv4 init-addr none\n"
    )
    return before + model_section + candidate + prometheus


def _candidate_backend(model: str, *, stack: str, version_a: str, version_b: str) -> str:
    """``backend candidate`` from the entry's ``backend model``: its settings (balance, checks,
    timings), B's tasks as servers, A's tasks as backups (checked; and unchecked ones last if the
    model backend fails open), every server named so that its name tells the variant."""
    lines = model.rstrip("\n").splitlines()
    templates = [ln.split() for ln in lines if ln.strip().startswith("server-template ")]
    if not templates:
        raise ValueError("the entry's `backend model` has no server-template line")
    slots = templates[0][2]  # 1-N
    fails_open = any("no-check" in t and "backup" in t for t in templates)
    port = haproxy.MODEL_PORT
    body = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith(("server-template ", "#")) or stripped == "option allbackups":
            continue
        if stripped.startswith("default-server "):
            # a B task that refuses a connection is out at once: the retry goes to A (backup)
            line += " observe layer4 error-limit 1 on-error mark-down"
        body.append(line)
        if stripped.startswith("balance "):
            body.append("    option allbackups")
    body.append(f"    server-template b {slots} tasks.{stack}_candidate:{port}")
    body.append(f"    server-template a {slots} tasks.{stack}_model:{port} backup")
    if fails_open:  # as the model backend: every check failing at once is a starved machine
        spare = f"    server-template aspare {slots} tasks.{stack}_model:{port}"
        body.append(spare + " backup no-check")
    return (
        "\n# B's tasks; A's are its backup servers: with no healthy B task, A serves (fallback).\n"
        "backend candidate\n"
        + "\n".join(body)
        + "\n"
        + "    http-response set-header X-Model-Variant b if { srv_name -m beg b }\n"
        + f"    http-response set-header X-Model-Version {_token(version_b)} if "
        + "{ srv_name -m beg b }\n"
        + "    http-response set-header X-Model-Variant a if { srv_name -m beg a }\n"
        + f"    http-response set-header X-Model-Version {_token(version_a)} if "
        + "{ srv_name -m beg a }\n"
        + "    http-response set-header X-Experiment-Fallback 1 if { srv_name -m beg a }\n"
    )


def render(
    state: State,
    shape: EnvTopology,
    *,
    entry_image: str,
    cfg_file: str = "",
    monitor_image: str = "",
) -> Desired:
    """The environment's stack, with the experiment's split when one runs (module docstring);
    ``monitor_image``: the experiment's Prometheus (:mod:`.monitor`), none when empty."""
    base = render_stack(state, shape, entry_image=entry_image, cfg_file=cfg_file)
    experiment = running(state)
    if experiment is None:
        return base
    stack, env = shape.stack, state.environment
    cfg = entry_config(base.haproxy_cfg, experiment, state, stack=stack)
    config_name = f"{stack}_haproxy_{hashlib.sha256(cfg.encode()).hexdigest()[:12]}"
    document: dict[str, Any] = yaml.safe_load(base.stack_yaml.split("\n", 2)[2])
    services = document["services"]
    arm_env = {
        "SERVING_EXPERIMENT": experiment.id,
        "SERVING_USER_HEADER": experiment.split.user_header,
    }
    shapes = dict(base.shapes)

    # A: the champion, as rendered, told it is arm A
    model = services["model"]
    model["environment"] = {**model["environment"], **arm_env, "SERVING_VARIANT": "a"}
    model_labels = {**model["deploy"]["labels"], ID_LABEL: experiment.id}
    shapes["model"], model["deploy"]["labels"] = _relabel(
        base.shapes["model"], env=model["environment"], labels=model_labels
    )

    # B: the same service shape, the candidate's digest and labels
    candidate_ref = f"{experiment.candidate.image.repository}@{experiment.candidate.image.digest}"
    candidate = copy.deepcopy(model)
    candidate["image"] = candidate_ref
    candidate["environment"] = {**model["environment"], "SERVING_VARIANT": "b"}
    candidate_labels = {
        **model_labels,
        "ml.model.name": experiment.candidate.model.name,
        "ml.model.version": experiment.candidate.model.version,
        "ml.image.digest": experiment.candidate.image.digest,
        "ml.service": "candidate",
    }
    shapes["candidate"], candidate["deploy"]["labels"] = _relabel(
        replace(base.shapes["model"], image=candidate_ref),
        env=candidate["environment"],
        labels=candidate_labels,
    )

    # the entry: the split's config, the share as a label, the map written at start-up
    entry = services["entry"]
    entry["entrypoint"] = ["/bin/sh", "-c", map_script()]
    entry["environment"] = {SHARE_ENV: '{{index .Service.Labels "' + SHARE_LABEL + '"}}'}
    entry_labels = {
        **entry["deploy"]["labels"],
        ID_LABEL: experiment.id,
        SHARE_LABEL: str(experiment.share),
    }
    shapes["entry"], entry["deploy"]["labels"] = _relabel(
        replace(base.shapes["entry"], configs=(config_name,)),
        env=entry["environment"],
        labels=entry_labels,
        in_digest=(ID_LABEL, SHARE_LABEL),
    )
    document["configs"]["haproxy"]["name"] = config_name
    services["candidate"] = candidate
    names = ["model", "candidate", "entry"]
    if monitor_image:
        prometheus, prometheus_shape = monitor.service(
            stack,
            image=monitor_image,
            labels={"ml.environment": env, "ml.service": "prometheus", ID_LABEL: experiment.id},
        )
        shapes["prometheus"], prometheus["deploy"]["labels"] = _relabel(
            prometheus_shape, env=prometheus["environment"], labels=prometheus["deploy"]["labels"]
        )
        services["prometheus"] = prometheus
        names.append("prometheus")
    ordered = {name: services[name] for name in names}
    document["services"] = ordered
    text = HEADER.format(env=env) + yaml.safe_dump(document, sort_keys=False, width=100)
    return Desired(
        env=env,
        stack=stack,
        stack_yaml=text,
        haproxy_cfg=cfg,
        config_name=config_name,
        shapes=shapes,
        model_digest=base.model_digest,
        model_version=base.model_version,
        experiment_share=experiment.share,
    )


def _relabel(
    shape: Shape,
    *,
    env: dict[str, str],
    labels: dict[str, str],
    in_digest: tuple[str, ...] = (),
) -> tuple[Shape, dict[str, str]]:
    """``shape`` with ``env`` and ``labels``, its spec hash recomputed as the stack does (over
    the shape without labels; ``in_digest`` names labels that count, so that a ramp is a change
    of git's desired state, not drift)."""
    counted = tuple(sorted((k, labels[k]) for k in in_digest))
    bare = replace(shape, env=tuple(sorted(f"{k}={v}" for k, v in env.items())), labels=counted)
    final = {k: v for k, v in labels.items() if k != SPEC_LABEL}
    final[SPEC_LABEL] = bare.digest()
    return Shape(**{**asdict(bare), "labels": tuple(sorted(final.items()))}), final


def _token(value: str) -> str:
    """A model version as one HAProxy word (versions are short; anything odd becomes _)."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in value)[:64] or "_"
