"""A temp copy of the template, run with the real tools: for the integration and end-to-end tests
and the benchmark."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

TEMPLATE_FILES = [
    "pipeline", "serving", "estimators", "tools", "expectations", "data/raw", "requirements",
    "scripts", "tests", "release", "deploy/topology.yaml", "deploy/README.md", "deploy/.gitignore",
    "dvc.yaml", "params.yaml", "Dockerfile", "train.Dockerfile", ".dockerignore", "Makefile",
    ".dvcignore", ".gitignore", "pyproject.toml", "conftest.py",
]  # fmt: skip
GIT = ("git", "-c", "user.email=t@example.com", "-c", "user.name=t")


def env() -> dict[str, str]:
    """The test's environment with this interpreter's bin/ first (stages run `python -m`)."""
    environ = dict(os.environ)
    environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environ['PATH']}"
    environ.pop("MLFLOW_TRACKING_URI", None)
    return environ


def run(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, cwd=cwd, env=env(), capture_output=True, text=True, timeout=1200)
    if check and done.returncode != 0:
        raise AssertionError(f"{args} exited {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def dvc(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(cwd, str(Path(sys.executable).parent / "dvc"), *args, check=check)


def copy_template(source: Path, target: Path) -> Path:
    """The template's files in `target`, committed to a new git repository, DVC initialised."""
    target.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", ".pytest_cache")
    for name in TEMPLATE_FILES:
        src = source / name
        if src.is_dir():
            shutil.copytree(src, target / name, ignore=ignore)
        else:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target / name)
    run(target, "git", "init", "-q")
    run(target, *GIT, "add", ".")
    run(target, *GIT, "commit", "-qm", "template")
    dvc(target, "init", "-q")
    # DVC's settings as a clone of the template has them (analytics off: no DVC command here
    # spawns the daemon that reports usage over the network)
    shutil.copy2(source / ".dvc/config", target / ".dvc/config")
    return target


def clone(source: Path, target: Path) -> Path:
    """A copy of a project that already ran (its DVC cache and MLflow store included)."""
    shutil.copytree(source, target, symlinks=True)
    return target


def edit_params(work: Path, section: str, **values: object) -> None:
    params = yaml.safe_load((work / "params.yaml").read_text())
    params[section].update(values)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
