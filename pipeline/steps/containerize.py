"""Stage `containerize`: the validated model and the serving app as a smoke-checked image.

1. wheels: ``build/wheels`` holds what ``requirements/serving.lock`` pins, for CPython 3.11 on
   manylinux x86-64, downloaded on the host (a container does not trust the host's CA, and the
   build runs with no network); downloaded again only when the lock changes;
2. base: ``image.base`` if present or pullable, else ``image.fallback_base`` (`make base-image`);
3. tag: ``{image.name}:{content hash}`` of every file the image gets (the wheels are pinned by
   the lock's hashes), the base image's id and ``image.labels``; an existing tag skips the build;
4. build (OCI and ``ml.*`` labels), size budget ``image.max_size_mb``, smoke check (run, wait for
   ready, one golden request); a failed image loses its tag;
5. ``build/image.json``: id, tags, labels, size, timings.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import logging
import os
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from pipeline import versioning
from pipeline.config import ImageParams, Params
from pipeline.errors import ImageError
from pipeline.image import Base, Engine
from pipeline.probe import smoke_check
from pipeline.wheels import LOCK, resolve_wheels

log = logging.getLogger("pipeline")
IMAGE_JSON = Path("build/image.json")
GOLDEN = Path("reports/golden.json")
DOCKERFILE = Path("Dockerfile")
PACKAGE, SERVING = Path("pipeline"), Path("pipeline/serving")
HASH_SCHEME = "containerize/1"  # change it when the content hash's inputs change meaning


def containerize(params: Params) -> dict[str, Any]:
    image, model_dir = params.image, params.train.model_dir
    holdout_file = params.validate_.metrics_file
    card = _read_json(model_dir / "model.json", "run the train stage: dvc repro")
    golden = _read_json(GOLDEN, "run the validate stage: dvc repro")
    holdout = _read_json(holdout_file, "run the validate stage: dvc repro")
    reserved = sorted(k for k in image.labels if k.startswith("ml."))
    if reserved:
        raise ImageError(f"params.yaml: image.labels: {reserved} — the ml.* labels are the stage's")
    wheel_dir = resolve_wheels()
    engine = Engine.connect()
    engine_name = engine.describe()
    log.info("container engine: %s", engine_name)
    base = engine.resolve_base(base=image.base, fallback=image.fallback_base)
    files = context_files(model_dir=model_dir, holdout=holdout_file)
    digest = content_hash(files, base_id=base.id, labels=image.labels)
    ref = f"{image.name}:{digest[:12]}"
    built = engine.image(ref)
    if built is not None:
        log.info("%s exists (same model, code, lock, Dockerfile and base): build skipped", ref)
        summary = None
    else:
        labels = {**image_labels(image, card, holdout, digest=digest, base=base), **image.labels}
        entries: dict[str, Path | bytes] = dict(files)
        entries |= {f"build/wheels/{p.name}": p for p in sorted(wheel_dir.glob("*.whl"))}
        entries["Dockerfile"] = DOCKERFILE.read_bytes() + _label_instruction(labels)
        log.info("building %s on %s (%s)", ref, base.ref, base.id[:19])
        with _tar(entries) as context:
            build = engine.build(context, tag=ref, buildargs={"BASE_IMAGE": base.ref})
        built = engine.image(ref)
        if built is None:
            raise ImageError(f"the engine reported a build but has no image {ref}")
        summary = {"seconds": round(build.seconds, 2), "steps": build.steps, "cached": build.cached}
        log.info(
            "built %s in %.1f s; %d of %d steps cached",
            ref,
            build.seconds,
            len(build.cached),
            build.steps,
        )
    size_mb = built.size / 1e6
    if size_mb > image.max_size_mb:
        engine.untag(ref)
        raise ImageError(
            f"{ref} is {size_mb:.0f} MB, above image.max_size_mb = {image.max_size_mb:g} MB: "
            "trim requirements/serving.in (then `make lock`) or raise the budget in params.yaml"
        )
    try:
        checked = smoke_check(engine, ref, card=card, golden=golden, timeout=image.smoke_timeout_s)
    except ImageError:
        engine.untag(ref)
        raise
    engine.tag(built.id, f"{image.name}:latest")
    result: dict[str, Any] = {
        "image": ref,
        "id": built.id,
        "tags": [ref, f"{image.name}:latest"],
        "labels": built.labels,
        "size_bytes": built.size,
        "size_mb": round(size_mb, 1),
        "max_size_mb": image.max_size_mb,
        "content_hash": digest,
        "base": {"ref": base.ref, "id": base.id, "fallback": base.fallback},
        "build": summary,  # None: skipped, the tag existed
        "smoke": checked,
        "engine": engine_name,
    }
    IMAGE_JSON.parent.mkdir(parents=True, exist_ok=True)
    IMAGE_JSON.write_text(json.dumps(result, indent=2) + "\n")
    log.info(
        "%s: %.0f MB (budget %g MB), ready in %.2f s, golden row answered; wrote %s",
        ref,
        size_mb,
        image.max_size_mb,
        checked["time_to_ready_s"],
        IMAGE_JSON,
    )
    return result


def context_files(*, model_dir: Path, holdout: Path) -> list[tuple[str, Path]]:
    """(name in the build context, file) for everything the image gets except the wheels. The
    context mirrors the repository, so the Dockerfile also builds from the root by hand."""
    files = [("Dockerfile", DOCKERFILE), ("requirements/serving.lock", LOCK)]
    files += [(p.as_posix(), p) for p in serving_code()]
    files += [(f"models/{p.name}", p) for p in sorted(model_dir.iterdir()) if p.is_file()]
    files += [("reports/golden.json", GOLDEN), ("metrics/holdout.json", holdout)]
    missing = [str(p) for _, p in files if not p.is_file()]
    if missing:
        raise ImageError(f"the image needs {', '.join(missing)}: run `dvc repro` first")
    return files


def serving_code() -> list[Path]:
    """pipeline/__init__.py, pipeline/serving/ and the pipeline modules they import (e.g.
    pipeline/errors.py), found by reading their imports: what `python -m pipeline.serving` needs
    of this package and nothing more."""
    found = [p for p in SERVING.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    todo, seen = [PACKAGE / "__init__.py", *(p for p in found if p.suffix == ".py")], set(found)
    while todo:
        source = todo.pop()
        seen.add(source)
        for node in ast.walk(ast.parse(source.read_bytes(), filename=str(source))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for parts in (n.split(".") for n in names if n.startswith(f"{PACKAGE}.")):
                for end in range(2, len(parts) + 1):  # pipeline.a.b: a/__init__.py, a/b.py, ...
                    path = Path(*parts[:end])
                    for module in (path.with_suffix(".py"), path / "__init__.py"):
                        if module.is_file() and module not in seen:
                            todo.append(module)
    return sorted(seen)


def content_hash(files: list[tuple[str, Path]], *, base_id: str, labels: dict[str, str]) -> str:
    """The image tag: same files, base and extra labels give the same hash. Timestamps, the git
    revision and the build time are labels, not inputs, so they never change it."""
    digest = hashlib.sha256(f"{HASH_SCHEME}\nbase {base_id}\n".encode())
    digest.update(f"labels {json.dumps(labels, sort_keys=True)}\n".encode())
    for name, path in sorted(files):
        digest.update(f"{name} {hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return digest.hexdigest()


def image_labels(
    image: ImageParams, card: dict[str, Any], holdout: dict[str, Any], *, digest: str, base: Base
) -> dict[str, str]:
    runtime = "onnx" if card.get("onnx") else "sklearn"
    labels = {
        "org.opencontainers.image.title": image.name,
        "org.opencontainers.image.description": (
            f"{card['model_name']} version {card['model_version']} ({card['model_type']}) "
            "over HTTP: MLflow scoring protocol and Open Inference Protocol"
        ),
        "org.opencontainers.image.source": _git_remote(),
        "org.opencontainers.image.revision": versioning.git_commit(),
        "org.opencontainers.image.version": str(card["model_version"]),
        "org.opencontainers.image.created": datetime.now(UTC).isoformat(timespec="seconds"),
        "org.opencontainers.image.base.name": base.ref,
        "ml.model.name": str(card["model_name"]),
        "ml.model.version": str(card["model_version"]),
        "ml.model.type": str(card["model_type"]),
        "ml.model.sha256": str(card["sha256"]),
        "ml.mlflow.run_id": str(card["run_id"]),
        "ml.dvc.data_hash": str(card["data_hash"]),
        "ml.serving.runtime": runtime,
        "ml.image.content_hash": digest,
    }
    for name, value in sorted(holdout.items()):
        if isinstance(value, int | float) and not isinstance(value, bool):
            labels[f"ml.metrics.holdout.{name}"] = repr(float(value))
    return labels


def _git_remote() -> str:
    """The ``origin`` remote's URL: where the source is (``unknown`` outside git)."""
    done = subprocess.run(
        ["git", "config", "--get", "remote.origin.url"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or "unknown"


def _label_instruction(labels: dict[str, str]) -> bytes:
    """One LABEL instruction for all labels, appended to the context's copy of the Dockerfile:
    one build step, where the builder's `labels` option takes one step per label."""
    quoted = (json.dumps(v, ensure_ascii=False).replace("$", "\\$") for v in labels.values())
    pairs = (f"{json.dumps(k)}={v}" for k, v in zip(labels, quoted, strict=True))
    return ("\nLABEL " + " \\\n      ".join(pairs) + "\n").encode()


@contextmanager
def _tar(entries: dict[str, Path | bytes]) -> Iterator[IO[bytes]]:
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


def _read_json(path: Path, hint: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise ImageError(f"{path} does not exist: {hint}") from None
    except json.JSONDecodeError as exc:
        raise ImageError(f"{path} is not valid JSON ({exc}): {hint}") from None
    if not isinstance(value, dict):
        raise ImageError(f"{path} must hold a JSON object: {hint}")
    return value
