"""deploy/<env>.yaml and the promotion lock, without a registry (see test_release.py for those)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.errors import ArtifactError, PromotionRefused
from pipeline.release.evidence import evidence_tag
from pipeline.release.promotion import locked
from pipeline.release.state import (
    EvidenceRef,
    Image,
    Model,
    Release,
    State,
    read_state,
    write_state,
)


def settings(tmp_path: Path, wait: float = 0.3) -> Settings:
    return Settings(deploy_dir=tmp_path / "deploy", promote_lock_timeout_s=wait)


def release(digest: str) -> Release:
    return Release(
        action="promote",
        image=Image(repository="127.0.0.1:5000/acme/model", digest=digest),
        model=Model(name="model", version="3", mlflow_run_id="abc"),
        evidence=EvidenceRef(digest="sha256:" + "e" * 64, tag=evidence_tag(digest)),
        promoted_at="2026-01-01T00:00:00Z",
        promoted_by="someone",
    )


def test_a_state_file_reads_back_as_written_with_its_history(tmp_path: Path) -> None:
    old, new = release("sha256:" + "a" * 64), release("sha256:" + "b" * 64)
    state = State(environment="staging", history=[old], **dict(new))
    (tmp_path / "deploy").mkdir()
    path = write_state(tmp_path / "deploy", state)
    assert read_state(tmp_path / "deploy", "staging") == state
    text = path.read_text()
    assert text.startswith("# The desired state of the staging environment")
    assert text.index("environment: staging") < text.index("history:")
    assert evidence_tag("sha256:" + "b" * 64) == "sha256-" + "b" * 64 + ".contract"


def test_a_hand_edited_state_file_is_an_error_that_says_to_restore_it(tmp_path: Path) -> None:
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy/production.yaml").write_text("environment: production\nimage: latest\n")
    with pytest.raises(ArtifactError, match=r"not a valid state file.*restore it from git"):
        read_state(tmp_path / "deploy", "production")


def test_a_second_promotion_of_the_same_environment_fails_naming_the_holder(
    tmp_path: Path,
) -> None:
    holder = rf"another promotion of production \(pid {os.getpid()}\)"
    with locked(settings(tmp_path), "production"):
        with (
            pytest.raises(PromotionRefused, match=holder),
            locked(settings(tmp_path), "production"),
        ):
            pass
        with locked(settings(tmp_path), "staging"):  # another environment is not blocked
            pass
    with locked(settings(tmp_path), "production"):  # released: free again
        pass
