"""The serving image's wheels, resolved on the host from requirements/serving.lock.

A container does not trust the host's CA and the image build runs with no network, so the
wheels for CPython 3.11 on manylinux x86-64 are downloaded here, checked against the lock's
hashes, and handed to the build; downloaded again only when the lock changes.

Two environments, one download: ``serving.lock`` (every runtime: onnxruntime *and*
scikit-learn/scipy) and ``serving-onnx.lock``, its subset for a model ONNX serves, compiled
against it (same versions, same hashes; a unit test holds that). The image of an ONNX-served
model gets only the subset's wheels and installs only the subset.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from pipeline.errors import ImageError

log = logging.getLogger("pipeline")
LOCK = Path("requirements/serving.lock")
ONNX_LOCK = Path("requirements/serving-onnx.lock")
#: The lock each runtime's image installs (``serving.card.ModelCard.runtime`` picks one).
LOCKS: dict[str, Path] = {"onnx": ONNX_LOCK, "sklearn": LOCK}
WHEELS = Path("build/wheels")
# What the image runs: CPython 3.11 on glibc >= 2.28 x86-64 (Debian bookworm).
TARGET = (
    *("--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp"),
    *("--platform", "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64"),
)
# pip accepts a target platform with sdists allowed only without dependency resolution.
TARGET_WITH_SDISTS = ("--no-deps", "--prefer-binary", *TARGET[1:])
PIP, INDEX = "pip==25.3", "https://pypi.org/simple"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def resolve_wheels(*, lock: Path = LOCK, target: Path = WHEELS, sdists: bool = False) -> Path:
    """``target`` holds the wheels ``lock`` pins for the image, checked against the lock's
    hashes; downloaded with pip on the host, and again only when the lock changes.

    ``sdists``: a pinned version with no wheel for the image (pipeline.lock's
    antlr4-python3-runtime 4.9.3) is downloaded as its hash-checked source archive, which the
    image builds offline (train.Dockerfile); every lock line is pinned, so no resolution is
    lost to ``--no-deps``. Off for serving.lock: its image builds nothing."""
    stamp = target / f".{lock.name}.sha256"
    platform = TARGET_WITH_SDISTS if sdists else TARGET
    want = hashlib.sha256(lock.read_bytes() + " ".join(platform).encode()).hexdigest()
    if stamp.is_file() and stamp.read_text().strip() == want:
        return target
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}  # no site settings
    if importlib.util.find_spec("pip") is not None:
        pip = [sys.executable, "-m", "pip"]
    elif uv := shutil.which("uv", path=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"):
        pip = [uv, "tool", "run", "--isolated", "--no-config", "--default-index", INDEX]
        pip += ["--from", PIP, "pip"]
        env.setdefault("UV_NATIVE_TLS" if "UV_NATIVE_TLS" in env else "UV_SYSTEM_CERTS", "1")
    else:
        raise ImageError("neither pip nor uv is installed next to this Python: run `make install`")
    command = [*pip, "download", "--isolated", "--progress-bar", "off", "--quiet", *platform]
    command += ["--require-hashes", "--index-url", INDEX, "-r", str(lock), "-d", str(target)]
    if CA_BUNDLE.is_file():
        command += ["--cert", str(CA_BUNDLE)]
    log.info("downloading the wheels %s pins for the image (CPython 3.11, x86-64)", lock)
    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        shutil.rmtree(target, ignore_errors=True)
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-12:])
        raise ImageError(
            f"could not download the wheels of {lock} to {target} (pip exited {done.returncode}); "
            f"this host must reach {INDEX} (the image build itself needs no network):\n{tail}"
        )
    stamp.write_text(want + "\n")
    found = list(target.glob("*.whl"))
    megabytes = sum(p.stat().st_size for p in found) / 1e6
    log.info("%d wheels, %.0f MB, in %.1f s", len(found), megabytes, time.monotonic() - started)
    return target


def pinned(lock: Path) -> dict[str, str]:
    """{normalised project name: version} of every ``name==version`` line of ``lock``."""
    found: dict[str, str] = {}
    for line in lock.read_text().splitlines():
        name, sep, rest = line.partition("==")
        if sep and not line.startswith((" ", "#")):
            found[_normalise(name)] = rest.split()[0].rstrip("\\").strip()
    return found


def wheels_for(lock: Path, *, wheel_dir: Path) -> list[Path]:
    """The wheels of ``wheel_dir`` that ``lock`` pins (name and version), sorted; an error when
    one is missing (``lock`` must be a subset of the downloaded serving.lock)."""
    want = pinned(lock)
    chosen: dict[str, Path] = {}
    for wheel in sorted(wheel_dir.glob("*.whl")):
        name, version = wheel.name.split("-")[:2]
        if want.get(_normalise(name)) == version:
            chosen[_normalise(name)] = wheel
    missing = sorted(set(want) - set(chosen))
    if missing:
        raise ImageError(
            f"{wheel_dir} has no wheel for {missing} pinned by {lock}: it must pin a subset of "
            f"{LOCK} (re-run `make lock`)"
        )
    return sorted(chosen.values())


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.strip()).lower()
