"""The serving image's build context: exactly the files it gets, their hash, its labels.

The context mirrors the repository (so the Dockerfile also builds from the root by hand):
the Dockerfile, the lock of the model's runtime (``requirements/serving-onnx.lock`` when ONNX
serves it, ``requirements/serving.lock`` otherwise: :data:`pipeline.image.wheels.LOCKS`), the
``serving/`` package (the image's only Python), the model files and the golden and holdout
files, plus that lock's wheels. The image tag is a hash of all of them, the build arguments,
the base image's id and the extra labels.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

from pipeline import artifacts
from pipeline.config import ImageParams
from pipeline.errors import MissingInputError
from pipeline.image.engine import Base
from pipeline.image.wheels import LOCKS
from serving.card import ModelCard

DOCKERFILE = Path("Dockerfile")
SERVING = Path("serving")
HASH_SCHEME = "containerize/3"  # change it when the content hash's inputs change meaning


def build_args(runtime: str) -> dict[str, str]:
    """The Dockerfile's arguments for a model ``runtime`` serves (``ModelCard.runtime``): which
    lock the image installs, and the runtime its server insists on (an ONNX image holds no
    scikit-learn to fall back to, so it says so at start-up rather than failing on import)."""
    try:
        lock = LOCKS[runtime]
    except KeyError:
        raise ValueError(f"unknown runtime {runtime!r}; known: {sorted(LOCKS)}") from None
    return {"SERVING_LOCK": lock.as_posix(), "SERVING_RUNTIME": runtime}


def context_files(*, lock: Path = LOCKS["sklearn"]) -> list[tuple[str, Path]]:
    """(name in the build context, file) for everything the image gets except the wheels."""
    model_dir = artifacts.MODEL_DIR
    if not model_dir.is_dir():
        raise artifacts.missing(artifacts.MODEL_CARD)
    files = [("Dockerfile", DOCKERFILE), (lock.as_posix(), lock)]
    files += [(p.as_posix(), p) for p in serving_code()]
    files += [(p.as_posix(), p) for p in sorted(model_dir.iterdir()) if p.is_file()]
    files += [(p.as_posix(), p) for p in (artifacts.GOLDEN, artifacts.HOLDOUT_METRICS)]
    for _, path in files:
        if not path.is_file():
            if path in artifacts.WRITER:
                raise artifacts.missing(path)
            raise MissingInputError(f"the image needs {path}: restore it from git")
    return files


def serving_code() -> list[Path]:
    """Every file of the ``serving`` package: the image's only Python."""
    return sorted(p for p in SERVING.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def content_hash(
    files: list[tuple[str, Path]],
    *,
    base_id: str,
    labels: dict[str, str],
    build_args: dict[str, str] | None = None,
) -> str:
    """The image tag: same files, build arguments, base and extra labels give the same hash.
    Timestamps, the git revision and the build time are labels, not inputs, so they never
    change it."""
    digest = hashlib.sha256(f"{HASH_SCHEME}\nbase {base_id}\n".encode())
    digest.update(f"labels {json.dumps(labels, sort_keys=True)}\n".encode())
    digest.update(f"args {json.dumps(build_args or {}, sort_keys=True)}\n".encode())
    for name, path in sorted(files):
        digest.update(f"{name} {hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return digest.hexdigest()


def image_labels(
    image: ImageParams,
    card: ModelCard,
    holdout: dict[str, float],
    *,
    digest: str,
    base: Base,
    source: str | None,
    revision: str,
) -> dict[str, str]:
    """OCI and ``ml.*`` labels; ``source`` is already credential-free (see :func:`source_url`)."""
    labels = {
        "org.opencontainers.image.title": image.name,
        "org.opencontainers.image.description": (
            f"{card.model_name} version {card.model_version} ({card.model_type}) "
            "over HTTP: MLflow scoring protocol and Open Inference Protocol"
        ),
        "org.opencontainers.image.revision": revision,
        "org.opencontainers.image.version": card.model_version,
        "org.opencontainers.image.created": datetime.now(UTC).isoformat(timespec="seconds"),
        "org.opencontainers.image.base.name": base.ref,
        "ml.model.name": card.model_name,
        "ml.model.version": card.model_version,
        "ml.model.type": card.model_type,
        "ml.model.sha256": card.sha256,
        "ml.mlflow.run_id": card.run_id,
        "ml.dvc.data_hash": card.data_hash,
        "ml.serving.runtime": card.runtime,
        "ml.image.content_hash": digest,
    }
    if source:
        labels["org.opencontainers.image.source"] = source
    for name, value in sorted(holdout.items()):
        labels[f"ml.metrics.holdout.{name}"] = repr(float(value))
    return labels


def git_remote() -> str | None:
    """The ``origin`` remote's URL as git holds it (may carry credentials: never label it as
    is; see :func:`source_url`)."""
    try:
        done = subprocess.run(
            ["git", "config", "--get", "remote.origin.url"],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return None
    return done.stdout.strip() or None


def source_url(remote: str | None) -> str | None:
    """Where the source is, fit for a public label: an http(s) or ssh URL of a remote host
    with any user name and password removed; scp-like ``git@host:owner/repo`` becomes
    ``ssh://host/owner/repo``. Anything else (a local path, file://) is omitted: None."""
    if not remote:
        return None
    if "://" not in remote and ":" in remote and not remote.startswith("/"):
        host, _, path = remote.partition(":")
        remote = f"ssh://{host}/{path}"
    parts = urlsplit(remote)
    if parts.scheme not in ("http", "https", "ssh") or not parts.hostname:
        return None
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def label_instruction(labels: dict[str, str]) -> bytes:
    """One LABEL instruction for all labels, appended to the context's copy of the Dockerfile:
    one build step, where the builder's `labels` option takes one step per label."""
    quoted = (json.dumps(v, ensure_ascii=False).replace("$", "\\$") for v in labels.values())
    pairs = (f"{json.dumps(k)}={v}" for k, v in zip(labels, quoted, strict=True))
    return ("\nLABEL " + " \\\n      ".join(pairs) + "\n").encode()


@contextmanager
def tar_context(entries: dict[str, Path | bytes]) -> Iterator[IO[bytes]]:
    """The build context as an uncompressed tar with fixed owners, modes and times."""
    with tempfile.TemporaryFile() as handle:
        with tarfile.open(fileobj=handle, mode="w") as tar:
            for name, source in sorted(entries.items()):
                info = tarfile.TarInfo(name)
                data = source if isinstance(source, bytes) else source.read_bytes()
                executable = isinstance(source, Path) and os.access(source, os.X_OK)
                info.size, info.mode = len(data), 0o755 if executable else 0o644
                tar.addfile(info, io.BytesIO(data))
        handle.seek(0)
        yield handle
