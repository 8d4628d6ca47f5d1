"""The training image (`make train-image`, train.Dockerfile) against a real Docker engine.

The image is built once per session, from a temp copy of the template, by the same command
`make train-image` runs; it gets the name users get (`pipeline-train`, tags: content hash and
`latest`), so an image `make train-image` already built for the same files is reused and this
session's build stays for the next. Two more copies of the template then run `dvc repro train`
(prepare + train), one on the host and one in the container (no network, the image's non-root
user), from the same data and params: the model files must be byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.image.wheels import pinned
from tools.template import GIT, copy_template, dvc, run

pytestmark = [pytest.mark.docker, pytest.mark.integration, pytest.mark.slow]

UID = 10001  # the image's user (train.Dockerfile)
TRAINED = ("models/model.pkl", "models/model.onnx")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def docker_run(work: Path, image: str, *command: str, user: str | None = None) -> list[str]:
    """`docker run` as docs/training-image.md shows it: the repository mounted at /work."""
    args = ["docker", "run", "--rm", "--network", "none", "-v", f"{work}:/work"]
    return [*args, *(["--user", user] if user else []), image, *command]


@pytest.fixture(scope="session")
def train_image(template_root: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    work = copy_template(template_root, tmp_path_factory.mktemp("train-image") / "project")
    wheels = template_root / "build/train-wheels"
    if (wheels / ".pipeline.lock.sha256").is_file():  # a download cache, checked by its stamp
        shutil.copytree(wheels, work / "build/train-wheels")
    started = time.monotonic()
    done = run(work, sys.executable, "-m", "pipeline.cli", "train-image")
    print(f"train image: {done.stdout.strip()} ({time.monotonic() - started:.1f} s)")
    ref = done.stdout.split()[0]
    assert ref.startswith("pipeline-train:"), done.stdout
    return ref


def test_the_image_holds_exactly_the_locked_environment_and_the_package(
    train_image: str, template_root: Path
) -> None:
    listing = "import importlib.metadata as m; print(*sorted(d.name for d in m.distributions()))"
    done = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", train_image, "python", "-c", listing],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    installed = {re.sub(r"[-_.]+", "-", name).lower() for name in done.stdout.split()}
    locked = set(pinned(template_root / "requirements/pipeline.lock"))
    assert installed == locked | {"gitops-ml-pipeline"}  # and no pip


def test_a_model_trained_in_the_container_is_byte_identical_to_the_host_one(
    train_image: str, template_root: Path, tmp_path: Path
) -> None:
    host = copy_template(template_root, tmp_path / "host")
    box = copy_template(template_root, tmp_path / "container")
    head = run(box, *GIT, "rev-parse", "HEAD").stdout.strip()
    if os.geteuid() == 0:  # the repository belongs to the image's own user: run as that user
        subprocess.run(["chown", "-R", f"{UID}:{UID}", str(box)], check=True)
        user = None
    else:  # the documented way for anyone else: `-u "$(id -u):$(id -g)"`
        user = f"{os.getuid()}:{os.getgid()}"
    started = time.monotonic()
    inside = subprocess.Popen(  # both at once: the 2-core CI budget is wall time
        docker_run(box, train_image, "dvc", "repro", "train", user=user),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    dvc(host, "repro", "train")
    log, _ = inside.communicate(timeout=600)
    print(f"dvc repro train, host and container at once: {time.monotonic() - started:.1f} s")
    assert inside.returncode == 0, log

    # the same data: prepare wrote the same split (DVC's md5 of data/prepared)
    locks = [yaml.safe_load((w / "dvc.lock").read_text()) for w in (host, box)]
    prepared = [lock["stages"]["prepare"]["outs"][0]["md5"] for lock in locks]
    assert prepared[0] == prepared[1]
    # the same model, to the byte: the pickle and the ONNX graph
    for name in TRAINED:
        assert sha256(host / name) == sha256(box / name), f"{name} differs (see the docs)"
    cards = [json.loads((w / "models/model.json").read_text()) for w in (host, box)]
    assert cards[0]["sha256"] == cards[1]["sha256"] == sha256(host / "models/model.pkl")
    versions = [card["library_versions"] for card in cards]
    for library in ("scikit-learn", "numpy"):  # Python may differ in its patch release
        assert versions[0][library] == versions[1][library]
    print(f"Python: host {versions[0]['python']}, container {versions[1]['python']}")
    # git worked inside: the card names the container copy's commit, not "unknown" ("-dirty" on
    # both sides: copy_template's `dvc init` stages .dvc/ after the commit)
    assert cards[1]["git_commit"] == f"{head}-dirty" and cards[0]["git_commit"].endswith("-dirty")


def test_git_in_the_image_reads_a_repository_another_user_owns(
    train_image: str, template_root: Path, tmp_path: Path
) -> None:
    work = copy_template(template_root, tmp_path / "project")
    head = run(work, *GIT, "rev-parse", "HEAD").stdout.strip()
    command = docker_run(work, train_image, "git", "rev-parse", "HEAD", user="54321:54321")
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == head, done.stderr  # safe.directory
