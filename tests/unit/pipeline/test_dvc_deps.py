"""dvc.yaml's deps are exactly what each stage imports, so DVC never skips a stage whose code
changed and never re-runs one for a change it does not run (tools/stage_deps.py)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tools.stage_deps import check, imports_of

ROOT = Path(__file__).resolve().parents[3]
STAGES = ("prepare", "train", "validate", "containerize")


@pytest.fixture(scope="module")
def dvc_yaml() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    return data


def test_every_stage_lists_exactly_the_project_modules_it_imports(
    dvc_yaml: dict[str, Any],
) -> None:
    assert check(dvc_yaml, root=ROOT) == []


@pytest.mark.parametrize("stage", STAGES)
def test_removing_a_dep_the_stage_imports_is_reported_as_missing(
    dvc_yaml: dict[str, Any], stage: str
) -> None:
    edited = copy.deepcopy(dvc_yaml)
    deps = edited["stages"][stage]["deps"]
    deps.remove("pipeline/config.py")
    (difference,) = check(edited, root=ROOT)
    assert difference.stage == stage and difference.missing == ["pipeline/config.py"]


def test_listing_a_module_no_stage_code_imports_is_reported_as_extra(
    dvc_yaml: dict[str, Any],
) -> None:
    edited = copy.deepcopy(dvc_yaml)
    edited["stages"]["prepare"]["deps"].append("pipeline/release/promotion.py")
    (difference,) = check(edited, root=ROOT)
    assert difference.extra == ["pipeline/release/promotion.py"]


def test_no_stage_runs_the_cli_so_editing_a_help_text_reruns_nothing() -> None:
    for stage in STAGES:
        needed = imports_of(f"pipeline.stages.{stage}", root=ROOT)
        assert not any(p.parts[:2] == ("pipeline", "cli") for p in needed), stage
        assert not any(p.parts[:2] == ("pipeline", "release") for p in needed), stage


def test_the_serving_image_code_imports_nothing_of_the_pipeline_package() -> None:
    needed = imports_of("serving.__main__", root=ROOT) | imports_of("serving.server", root=ROOT)
    assert needed and all(p.parts[0] == "serving" for p in needed)
