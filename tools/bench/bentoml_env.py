"""BentoML in a throwaway venv under build/bench (never in the project's locks), from PyPI at
bench time with uv; the same scikit-learn as the model, so the same pickle loads."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

BENTOML = "bentoml==1.4.40"
INDEX = "https://pypi.org/simple"
SERVICE = Path(__file__).with_name("bentoml_service.py")


class BentoMLUnavailable(RuntimeError):
    """BentoML did not install here; the results say so and carry on without it."""


def ensure(venv: Path, *, sklearn: str, numpy: str) -> Path:
    """The venv's ``bentoml`` executable, installing it when the pins changed."""
    pins = [BENTOML, f"scikit-learn=={sklearn}", f"numpy=={numpy}", "pandas"]
    stamp = venv / ".pins.sha256"
    want = hashlib.sha256("\n".join(pins).encode()).hexdigest()
    executable = venv / "bin/bentoml"
    if stamp.is_file() and stamp.read_text().strip() == want and executable.exists():
        return executable
    uv = Path(sys.executable).parent / "uv"
    if not uv.exists():
        raise BentoMLUnavailable(f"uv is not installed next to {sys.executable}")
    shutil.rmtree(venv, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env["UV_NATIVE_TLS"] = "1"
    steps = [
        [str(uv), "venv", "--no-config", "--quiet", "--python", "3.11", str(venv)],
        [
            str(uv),
            "pip",
            "install",
            "--no-config",
            "--quiet",
            "--python",
            str(venv / "bin/python"),
            "--index-url",
            INDEX,
            *pins,
        ],
    ]
    for step in steps:
        done = subprocess.run(step, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BentoMLUnavailable(f"`{' '.join(step[:3])}` failed: {done.stderr.strip()[-500:]}")
    stamp.write_text(want + "\n")
    return executable


def service_dir(work: Path) -> Path:
    """A folder holding the service module, for `bentoml serve bentoml_service:Classifier`."""
    work.mkdir(parents=True, exist_ok=True)
    shutil.copy2(SERVICE, work / SERVICE.name)
    return work
