"""Shared inputs of the deploy unit tests: a fixed desired state and the golden-file helper.

Golden files live in tests/unit/deploy/golden; `UPDATE_GOLDEN=1 pytest tests/unit/deploy`
rewrites them (review the diff: it is what a user's deploy/ commit would show).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.release.state import EvidenceRef, Image, Model, State

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
ENTRY = "registry.example:5000/acme/classifier-entry@sha256:" + "e" * 64


def state(env: str = "production", digest: str = "sha256:" + "1" * 64, version: str = "4") -> State:
    return State(
        environment=env,  # type: ignore[arg-type]
        action="promote",
        image=Image(repository="registry.example:5000/acme/classifier", digest=digest),
        model=Model(name="breast-cancer-classifier", version=version, mlflow_run_id="9b2e"),
        evidence=EvidenceRef(digest="sha256:" + "7" * 64, tag="sha256-1111.contract"),
        promoted_at="2026-11-24T21:30:05Z",
        promoted_by="octocat",
    )


def check_golden(name: str, text: str) -> None:
    path = HERE / "golden" / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.is_file(), f"no golden file {path}: run with UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(), f"{name} differs from its golden file (UPDATE_GOLDEN=1)"


@pytest.fixture
def topology_file() -> Path:
    return ROOT / "deploy" / "topology.yaml"
