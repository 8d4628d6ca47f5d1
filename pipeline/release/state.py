"""``deploy/<environment>.yaml``: the desired state of one environment, as git holds it.

Written only by `pipeline promote` and `pipeline rollback` (see :mod:`.promotion`), read by them,
by the job summary and by the deploy commands. One typed record (:class:`State`), one reader,
one writer; the write is atomic (readers see the old file or the new one, never half of one).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.ab.record import Experiment
from pipeline.errors import ArtifactError

Environment = Literal["staging", "production"]
ENVIRONMENTS: tuple[Environment, ...] = ("staging", "production")
HEADER = (
    "# The desired state of the {env} environment, written by `pipeline promote` and\n"
    "# `pipeline rollback` (see docs/release.md). Commit it; do not edit it by hand.\n"
)


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Image(_Entry):
    repository: str
    digest: str


class Model(_Entry):
    name: str
    version: str
    mlflow_run_id: str


class EvidenceRef(_Entry):
    digest: str  # the signed contract statement (an OCI artifact referring to the image)
    tag: str
    signer: str | None = None  # the trusted key that signed it (its name in release/signers/)
    sbom: str | None = None  # the signed SBOM and provenance statements' artifacts
    provenance: str | None = None


class Release(_Entry):
    action: Literal["promote", "rollback"]
    image: Image
    model: Model
    evidence: EvidenceRef
    promoted_at: str
    promoted_by: str
    reason: str | None = None  # why (a rollback after a failed rollout says what failed)


class State(Release):
    environment: Environment
    experiment: Experiment | None = None  # an A/B experiment: written by `pipeline ab` only
    history: list[Release] = []  # newest first


def state_path(deploy_dir: Path, env: str) -> Path:
    return deploy_dir / f"{env}.yaml"


def read_state_file(path: Path) -> State | None:
    """The state a file holds, None when there is no such file."""
    if not path.is_file():
        return None
    try:
        return State.model_validate(yaml.safe_load(path.read_text()))
    except (yaml.YAMLError, ValidationError) as exc:
        reason = str(exc).splitlines()[0]
        raise ArtifactError(
            f"{path} is not a valid state file ({reason}): restore it from git"
        ) from None


def read_state(deploy_dir: Path, env: str) -> State | None:
    return read_state_file(state_path(deploy_dir, env))


def write_state(deploy_dir: Path, state: State) -> Path:
    path = state_path(deploy_dir, state.environment)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = state.model_dump(mode="json", exclude_none=True)  # no `reason: null` lines
    ordered = {"environment": data.pop("environment"), **data}  # history last, as dumped
    body = yaml.safe_dump(ordered, sort_keys=False, allow_unicode=True)
    temp = path.with_suffix(".yaml.tmp")
    temp.write_text(HEADER.format(env=state.environment) + body)
    os.replace(temp, path)  # readers see the old file or the new one, never half of one
    return path
