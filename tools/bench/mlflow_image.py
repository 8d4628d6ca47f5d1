"""MLflow's own serving image for a model: `mlflow models generate-dockerfile`, built offline on
the same base image as ours.

What the network forces us to change in the generated Dockerfile, and nothing else:

1. ``FROM python:3.11.7-slim`` -> our base (``image.fallback_base``): Docker Hub is unreachable.
2. That base's Python is Debian's, which has no pip: a venv at /opt/venv, first on PATH, gives
   MLflow's ``pip install`` lines (and its ``python -c`` entrypoint) a pip, as the official
   python image's /usr/local does.
3. ``ARG PIP_NO_INDEX=1`` and ``ARG PIP_FIND_LINKS``: a container does not trust the host's
   re-signing CA, so pip installs wheels downloaded on the host, served to the build over
   loopback (the build uses host networking); build arguments are not kept in the image.
4. The model's pins are resolved against what that wheel folder can serve: the folder is
   downloaded from exactly what ``python_env.yaml`` (build dependencies: pip, setuptools, wheel
   as the training venv had them) and ``requirements.txt`` pin; a pin the index cannot serve as
   a cp311 manylinux wheel is loosened to its name for the download, and the model's copy of
   that file in the build context is rewritten to the version the folder holds (recorded as a
   deviation in the results). With no such pin, nothing is rewritten.

Every other line (apt-get nginx, ``pip install mlflow==X``, the model's own requirements, gunicorn,
the entrypoint that starts nginx and uvicorn) is MLflow's, unchanged.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import yaml

from tools.bench import containers

log = logging.getLogger("bench")
INDEX = "https://pypi.org/simple"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
TARGET = (
    *("--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp"),
    *("--platform", "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64"),
)
FROM_LINE = re.compile(r"^FROM \S+\s*$", re.MULTILINE)
BUILD_PACKAGES = ("pip", "setuptools", "wheel")  # MLflow's python_env build dependencies
WHEEL_PORT = 18765  # fixed when free: the port is part of a build argument, so of the cache key


class MlflowImageError(RuntimeError):
    """MLflow's Dockerfile could not be generated, rewritten or built."""


def pip_command() -> list[str]:
    """pip, run through uv with no site settings (the project venv has uv, not pip)."""
    uv = Path(sys.executable).parent / "uv"
    if not uv.exists():
        return [sys.executable, "-m", "pip"]
    return [
        str(uv),
        "tool",
        "run",
        "--isolated",
        "--no-config",
        "--default-index",
        INDEX,
        "--from",
        "pip==25.3",
        "pip",
    ]


def download_wheels(requirements: list[str], *, target: Path) -> Path:
    """cp311 manylinux wheels for ``requirements`` and their dependencies, into ``target``;
    skipped when the same list was downloaded there before. A build dependency pin (pip,
    setuptools, wheel) the index cannot serve is loosened to its name, once."""
    stamp = target / ".requirements.sha256"
    want = hashlib.sha256("\n".join([*requirements, *TARGET]).encode()).hexdigest()
    if stamp.is_file() and stamp.read_text().strip() == want:
        return target
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    failed = _pip_download(requirements, target=target)
    if failed is not None:
        loose = [_name(r) if _name(r) in BUILD_PACKAGES else r for r in requirements]
        if loose == requirements or _pip_download(loose, target=target) is not None:
            shutil.rmtree(target, ignore_errors=True)
            raise MlflowImageError(f"pip download failed: {failed}")
        log.warning("a build dependency pin of %s is not on the index: loosened", requirements)
    stamp.write_text(want + "\n")
    return target


def _pip_download(requirements: list[str], *, target: Path) -> str | None:
    """None when pip downloaded everything, else the tail of its error."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.setdefault("UV_NATIVE_TLS", "1")
    command = [*pip_command(), "download", "--isolated", "--progress-bar", "off", "--quiet"]
    command += [*TARGET, "--index-url", INDEX, "-d", str(target), *requirements]
    if CA_BUNDLE.is_file():
        command += ["--cert", str(CA_BUNDLE)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    return None if done.returncode == 0 else done.stderr.strip()[-800:]


def _name(requirement: str) -> str:
    """The normalised project name of a requirement line (PEP 503)."""
    found = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return re.sub(r"[-_.]+", "-", found.group(1)).lower() if found else requirement


def wheel_versions(directory: Path) -> dict[str, str]:
    """{normalised project name: version} of the wheels in ``directory``."""
    found: dict[str, str] = {}
    for wheel in directory.glob("*.whl"):
        name, version = wheel.name.split("-")[:2]
        found[_name(name)] = version
    return found


def reconcile(model_dir: Path, *, wheels: Path) -> list[dict[str, str]]:
    """Rewrite every ``name==version`` pin of the model's ``python_env.yaml`` and
    ``requirements.txt`` (the build context's copies) that the wheel folder cannot serve to the
    version it holds; the changes made, as {file, was, now} (none when the folder holds all)."""
    held = wheel_versions(wheels)
    changes: list[dict[str, str]] = []
    pin = re.compile(r"^(\s*-?\s*)([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)(.*)$", re.MULTILINE)
    for file in (model_dir / "python_env.yaml", model_dir / "requirements.txt"):
        if not file.is_file():
            continue

        def swap(found: re.Match[str], file: Path = file) -> str:
            lead, name, version, rest = found.groups()
            have = held.get(_name(name))
            if have is None or have == version:
                return found.group(0)
            changes.append(
                {"file": file.name, "was": f"{name}=={version}", "now": f"{name}=={have}"}
            )
            return f"{lead}{name}=={have}{rest}"

        text = file.read_text()
        rewritten = pin.sub(swap, text)
        if rewritten != text:
            file.write_text(rewritten)
    return changes


def generate(*, model_uri: str, out: Path, project: Path, env: dict[str, str]) -> Path:
    """Run MLflow's own generator for ``model_uri`` (resolved in ``project``'s store)."""
    shutil.rmtree(out, ignore_errors=True)
    mlflow = Path(sys.executable).parent / "mlflow"
    command = [str(mlflow), "models", "generate-dockerfile", "-m", model_uri, "-d", str(out)]
    done = subprocess.run(
        [*command, "--env-manager", "local"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or not (out / "Dockerfile").is_file():
        raise MlflowImageError(f"generate-dockerfile failed: {done.stderr.strip()[-800:]}")
    return out / "Dockerfile"


def rewrite(dockerfile: Path, *, base: str) -> str:
    """Apply the three network-forced changes (module docstring); return the original FROM."""
    text = dockerfile.read_text()
    found = FROM_LINE.search(text)
    if found is None:
        raise MlflowImageError(f"{dockerfile} has no single-line FROM to rewrite")
    replacement = (
        f"FROM {base}\n"
        "# bench: this base's Python (Debian's) has no pip: a venv on PATH gives MLflow's pip one\n"
        "RUN python3 -m venv /opt/venv\n"
        "ENV PATH=/opt/venv/bin:$PATH\n"
        "# bench: pip installs wheels resolved on the host (build arguments: not in the image)\n"
        "ARG PIP_NO_INDEX=1\n"
        "ARG PIP_FIND_LINKS\n"
    )
    dockerfile.write_text(text[: found.start()] + replacement + text[found.end() :])
    return found.group(0).strip()


def requirements(model_dir: Path) -> list[str]:
    """What MLflow's Dockerfile will pip-install, pinned as the model pins it: its
    ``python_env.yaml`` build dependencies, its ``requirements.txt`` (which pins mlflow), and
    gunicorn[gevent] (its container installs it)."""
    lines = (model_dir / "requirements.txt").read_text().splitlines()
    wanted = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    if not any(_name(w) == "mlflow" and "==" in w for w in wanted):
        raise MlflowImageError(f"{model_dir}/requirements.txt does not pin mlflow")
    env = yaml.safe_load((model_dir / "python_env.yaml").read_text()) or {}
    build_deps = env.get("build_dependencies") if isinstance(env, dict) else None
    if not isinstance(build_deps, list) or not all(isinstance(d, str) for d in build_deps):
        build_deps = list(BUILD_PACKAGES)
    return [*build_deps, *wanted, "gunicorn[gevent]"]


@contextlib.contextmanager
def wheel_index(directory: Path) -> Iterator[str]:
    """Serve ``directory`` on 127.0.0.1 (pip's --find-links reads the listing)."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    port = WHEEL_PORT if _free(WHEEL_PORT) else 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def _free(port: int) -> bool:
    with socket.socket() as probe:
        # As the server binds (allow_reuse_address): a port left in TIME_WAIT by the previous
        # build is free, and the next build's cache key (PIP_FIND_LINKS) stays the same.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def build(
    *, model_uri: str, project: Path, env: dict[str, str], base: str, work: Path, tag: str
) -> dict[str, object]:
    """Generate, rewrite and build MLflow's image for ``model_uri``; what happened, as a dict."""
    work.mkdir(parents=True, exist_ok=True)
    context = work / "context"
    dockerfile = generate(model_uri=model_uri, out=context, project=project, env=env)
    original_from = rewrite(dockerfile, base=base)
    wanted = requirements(context / "model_dir")
    wheels = download_wheels(wanted, target=work.parent / "wheels-mlflow")
    deviations = reconcile(context / "model_dir", wheels=wheels)
    for change in deviations:
        log.warning("MLflow's image: %s pins %s; the wheel folder serves %s", *change.values())
    log.info("building MLflow's image %s (generated Dockerfile, %s)", tag, original_from)
    replaced = containers.image_id(tag)
    with wheel_index(wheels) as url:
        seconds = containers.build(
            context,
            tag=tag,
            log=work / "build.log",
            build_args={"PIP_FIND_LINKS": url},
            network="host",
        )
    if replaced and replaced != containers.image_id(tag):
        containers.remove_image(replaced)  # the previous run's, now untagged (layers stay cached)
    return {
        "tag": tag,
        "model_uri": model_uri,
        "generated_from": original_from,
        "rewritten_from": base,
        "requirements": wanted,
        "pins_rewritten": deviations,
        "build_seconds": round(seconds, 1),
        "dockerfile": dockerfile.read_text(),
    }
