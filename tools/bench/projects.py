"""Temp copies of the template, run with real `dvc repro`: the models under test and the
pipeline timings come from them (tools/template.py makes the copies, as the tests do)."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.template import copy_template, dvc, edit_params
from tools.template import env as project_env

ROOT = Path(__file__).resolve().parents[2]
# What the copies name their images (image.name), so the project's own image never moves.
IMAGE_REPOSITORIES = ("bench/lr", "bench/rf", "bench/cold", "bench/data")


class ReproError(RuntimeError):
    """`dvc repro` failed in a bench copy; the message has the end of its output."""


@dataclass(frozen=True)
class Trained:
    """A template copy after `dvc repro`: our image, the registered MLflow model, the pickle."""

    kind: str  # logistic_regression | random_forest
    project: Path
    image: str  # build/image.json "image"
    image_info: dict[str, Any]
    model_uri: str  # models:/<name>/<version> in the copy's own MLflow store
    model_pkl: Path
    cold_seconds: float

    def mlflow_env(self) -> dict[str, str]:
        environ = project_env()
        environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{self.project / 'mlflow.db'}"
        environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
        return environ


def new_copy(work: Path, *, image_name: str, **params: dict[str, Any]) -> Path:
    """A fresh copy (no DVC cache, no MLflow store) whose image is named ``image_name`` (so
    the project's own `breast-cancer-classifier:latest` is never moved); ``params`` edits
    params.yaml sections. The serving wheels are copied when the project has them (a download
    cache, checked by its stamp), as the tests do."""
    if work.exists():
        shutil.rmtree(work)
    project = copy_template(ROOT, work)
    edit_params(project, "image", name=image_name)
    for section, values in params.items():
        edit_params(project, section, **values)
    wheels = ROOT / "build/wheels"
    if (wheels / ".serving.lock.sha256").is_file():
        shutil.copytree(wheels, project / "build/wheels")
    return project


def repro(project: Path) -> float:
    """`dvc repro` in ``project``; its wall time in seconds."""
    started = time.monotonic()
    done = dvc(project, "repro", check=False)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])
        raise ReproError(f"dvc repro failed in {project} (exit {done.returncode}):\n{tail}")
    return seconds


def train(work: Path, *, kind: str) -> Trained:
    """A copy that trains ``kind`` and builds our image for it, from cold."""
    name = IMAGE_REPOSITORIES[0] if kind == "logistic_regression" else IMAGE_REPOSITORIES[1]
    project = new_copy(work, image_name=name, train={"model": kind})
    seconds = repro(project)
    info = json.loads((project / "build/image.json").read_text())
    card = json.loads((project / "models/model.json").read_text())
    return Trained(
        kind=kind,
        project=project,
        image=str(info["image"]),
        image_info=info,
        model_uri=f"models:/{card['model_name']}/{card['model_version']}",
        model_pkl=project / "models/model.pkl",
        cold_seconds=seconds,
    )


def built_images(project: Path) -> list[str]:
    """The tags the copy's last containerize gave its image (to remove them afterwards)."""
    path = project / "build/image.json"
    if not path.is_file():
        return []
    return [str(tag) for tag in json.loads(path.read_text()).get("tags", [])]
