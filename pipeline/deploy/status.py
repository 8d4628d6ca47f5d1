"""`pipeline status`: an environment's desired state (git) against the live one (Swarm).

Read-only and cheap: the entry image compared with is the one of the last render
(``deploy/<env>.stack.yaml``) or, without one, the running one, so nothing is built or
downloaded. Drift and pending updates are told apart as in :mod:`pipeline.deploy.reconcile`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.deploy.reconcile import plan
from pipeline.deploy.stack import Desired
from pipeline.deploy.swarm import Swarm

__all__ = ["Status", "rendered_entry_image", "status", "status_markdown"]


def rendered_entry_image(deploy_dir: Path, env: str, swarm: Swarm, stack: str) -> str:
    """The entry image of the last render (deploy/<env>.stack.yaml), else the live one: what
    `pipeline status` compares with, without building or downloading anything."""
    path = deploy_dir / f"{env}.stack.yaml"
    try:
        document = yaml.safe_load(path.read_text())
        return str(document["services"]["entry"]["image"])
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        live = swarm.services(stack).get("entry")
        return live.image if live is not None else "(no entry rendered or running)"


@dataclass(frozen=True)
class Status:
    env: str
    stack: str
    desired_digest: str
    desired_version: str
    live_digest: str | None
    live_version: str | None
    running_digests: list[str]
    replicas_ready: int
    replicas_desired: int
    update_state: str | None
    update_message: str
    drift: list[str]
    in_sync: bool
    services: dict[str, str]  # service -> plan action


def status(swarm: Swarm, desired: Desired) -> Status:
    """Desired (git) vs. live (Swarm) for one environment; changes nothing."""
    swarm.ensure_manager()
    current = plan(swarm, desired)
    model = current.live.get("model")
    tasks = swarm.tasks(model.name) if model else []
    running = [t for t in tasks if t.desired == "running" and t.state == "running"]
    return Status(
        env=desired.env,
        stack=desired.stack,
        desired_digest=desired.model_digest,
        desired_version=desired.model_version,
        live_digest=model.image.split("@", 1)[1] if model and "@" in model.image else None,
        live_version=model.labels.get("ml.model.version") if model else None,
        running_digests=sorted({t.image.split("@", 1)[-1] for t in running}),
        replicas_ready=len(running),
        replicas_desired=model.replicas if model else 0,
        update_state=model.update_state if model else None,
        update_message=model.update_message if model else "",
        drift=[f"{desired.service(c.service)}: {', '.join(c.fields)}" for c in current.drift],
        in_sync=current.in_sync,
        services={desired.service(c.service): c.action for c in current.changes},
    )


def status_markdown(found: Status) -> str:
    """The status as a Markdown section (a deploy job's summary)."""
    mark = "✅ in sync" if found.in_sync else "❌ not in sync"
    rows = [
        ("desired (git)", f"`{found.desired_digest}` (model version {found.desired_version})"),
        (
            "live (Swarm)",
            f"`{found.live_digest or '-'}` (model version {found.live_version or '-'})",
        ),
        ("replicas ready", f"{found.replicas_ready}/{found.replicas_desired}"),
        ("last update", f"{found.update_state or '-'} {found.update_message}".strip()),
        ("drift", "; ".join(found.drift) or "none"),
    ]
    lines = [f"## {found.env} ({found.stack}): {mark}", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines) + "\n\n"
