"""The training image: the pipeline's own locked environment, so `dvc repro` runs in a container.

``train.Dockerfile`` on the project's base image (``image.base``, else ``image.fallback_base``):
``requirements/pipeline.lock`` installed offline from wheels downloaded on the host and checked
against its hashes (``build/train-wheels``), git with the Debian packages it needs beyond that
base (``build/train-debs``, downloaded on the host for exactly that base's package set), and this
project's package. Tagged ``pipeline-train:<content hash>`` (the Dockerfile, the lock, the
package's files, the .debs and the base image's id; the wheels are pinned by the lock's hashes)
and ``pipeline-train:latest``; an existing content tag skips the build. Then a check with no
network: git, DVC, MLflow and the pipeline's stages import and run in it, as a non-root user.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline import provenance
from pipeline.config import ImageParams
from pipeline.errors import ImageError
from pipeline.image import context
from pipeline.image.engine import Base, Engine
from pipeline.image.wheels import resolve_wheels

log = logging.getLogger("pipeline")

NAME = "pipeline-train"
DOCKERFILE = Path("train.Dockerfile")
LOCK = Path("requirements/pipeline.lock")
WHEELS = Path("build/train-wheels")
DEBS = Path("build/train-debs")
#: Debian packages the image adds to the base (with what they depend on that the base lacks).
PACKAGES = ("git",)
#: The project's package as pyproject.toml installs it (``[tool.setuptools.packages.find]``).
PACKAGE_FILES = (Path("pyproject.toml"), Path("pipeline"), Path("serving"))
#: Run in the built image with no network, as its own user: it must print the versions.
CHECK = (
    "git --version && dvc --version && pipeline --help >/dev/null"
    " && python -c 'import mlflow, sklearn, pipeline.stages.train; print(sklearn.__version__)'"
)


@dataclass(frozen=True)
class TrainImage:
    """The image ``make train-image`` leaves: its content tag, ``latest``, id and size."""

    ref: str
    latest: str
    id: str
    size: int
    base: str
    built: bool  # False: the content tag existed, nothing was built
    seconds: float


def resolve_debs(*, status: str, target: Path = DEBS) -> list[Path]:
    """The .deb files of :data:`PACKAGES` and their dependencies that a system whose dpkg status
    file is ``status`` lacks (apt resolves against that file, not the host's), downloaded from
    the host's Debian archive into ``target``; downloaded again only when ``status`` changes."""
    stamp = target / ".status.sha256"
    want = hashlib.sha256(status.encode() + " ".join(PACKAGES).encode()).hexdigest()
    if stamp.is_file() and stamp.read_text().strip() == want:
        return sorted(target.glob("*.deb"))
    apt = shutil.which("apt-get")
    if apt is None:
        raise ImageError(
            "the training image installs git from Debian packages downloaded on the host, and "
            "this host has no apt-get: build it on Debian or Ubuntu"
        )
    shutil.rmtree(target, ignore_errors=True)
    (target / "partial").mkdir(parents=True)
    (target / "status").write_text(status)
    command = [apt, "install", "--download-only", "--no-install-recommends", "--yes", "--quiet=2"]
    command += ["-o", f"Dir::State::status={(target / 'status').resolve()}"]
    command += ["-o", f"Dir::Cache::archives={target.resolve()}/", "-o", "Debug::NoLocking=1"]
    environ = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log.info("downloading %s for the training image's base (Debian packages)", ", ".join(PACKAGES))
    done = subprocess.run([*command, *PACKAGES], env=environ, capture_output=True, text=True)
    if done.returncode != 0 and os.geteuid() == 0:  # stale or missing package lists: once more
        subprocess.run([apt, "update", "--quiet=2"], env=environ, capture_output=True, check=False)
        done = subprocess.run([*command, *PACKAGES], env=environ, capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(target, ignore_errors=True)
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
        raise ImageError(
            f"could not download {', '.join(PACKAGES)} to {target} (apt-get exited "
            f"{done.returncode}); run `apt-get update` as root, then re-run:\n{tail}"
        )
    shutil.rmtree(target / "partial")
    (target / "status").unlink()
    stamp.write_text(want + "\n")
    debs = sorted(target.glob("*.deb"))
    log.info("%d packages, %.0f MB", len(debs), sum(p.stat().st_size for p in debs) / 1e6)
    return debs


def package_files() -> list[Path]:
    """Every file of the project's package that the image installs."""
    found: list[Path] = []
    for root in PACKAGE_FILES:
        paths = root.rglob("*") if root.is_dir() else [root]
        found += [p for p in paths if p.is_file() and "__pycache__" not in p.parts]
    return sorted(found)


def build_train_image(
    image: ImageParams, *, engine: Engine, name: str = NAME, rebuild: bool = False
) -> TrainImage:
    """``{name}:{content hash}`` and ``{name}:latest``, built unless the content tag exists
    (``rebuild``: build anyway, every step, none from the builder's cache), then checked; a
    failed check loses the content tag."""
    for required in (DOCKERFILE, LOCK, *PACKAGE_FILES):
        if not required.exists():
            raise ImageError(f"the training image needs {required}: run from the project's root")
    base = engine.resolve_base(base=image.base, fallback=image.fallback_base)
    wheels = sorted(p for p in resolve_wheels(lock=LOCK, target=WHEELS, sdists=True).iterdir()
                    if p.suffix == ".whl" or p.name.endswith(".tar.gz"))  # fmt: skip
    debs = resolve_debs(status=engine.output(base.ref, command=["cat", "/var/lib/dpkg/status"]))
    files = [(DOCKERFILE.name, DOCKERFILE), (LOCK.as_posix(), LOCK)]
    files += [(p.as_posix(), p) for p in package_files()]
    files += [(f"{DEBS.as_posix()}/{p.name}", p) for p in debs]
    args = {"BASE_IMAGE": base.ref}
    digest = context.content_hash(files, base_id=base.id, labels={"image": name}, build_args=args)
    ref, latest = f"{name}:{digest[:12]}", f"{name}:latest"
    started = time.monotonic()
    built = rebuild or engine.image(ref) is None
    if built:
        entries: dict[str, Path | bytes] = dict(files)
        entries |= {f"{WHEELS.as_posix()}/{p.name}": p for p in wheels}
        entries[DOCKERFILE.name] = DOCKERFILE.read_bytes() + context.label_instruction(
            labels(base=base, digest=digest, name=name)
        )
        log.info("building %s on %s (%s): %s, %d .debs", ref, base.ref, base.id[:19], LOCK,
                 len(debs))  # fmt: skip
        with context.tar_context(entries) as tar:
            engine.build(tar, tag=ref, buildargs=args, dockerfile=DOCKERFILE.name, nocache=rebuild)
    else:
        log.info("%s exists (same Dockerfile, lock, package, .debs and base): build skipped", ref)
    found = engine.image(ref)
    if found is None:
        raise ImageError(f"the build reported success, yet {ref} is not in {engine.describe()}")
    try:
        versions = engine.output(ref, command=["sh", "-ec", CHECK], timeout=300)
    except ImageError as exc:
        engine.untag(ref)
        raise ImageError(f"{ref} failed its check ({CHECK}): {exc}") from None
    engine.tag(found.id, latest)
    log.info("%s checked: %s", ref, " | ".join(versions.split()))
    return TrainImage(
        ref=ref,
        latest=latest,
        id=found.id,
        size=found.size,
        base=base.ref,
        built=built,
        seconds=round(time.monotonic() - started, 1),
    )


def labels(*, base: Base, digest: str, name: str) -> dict[str, str]:
    return {
        "org.opencontainers.image.title": name,
        "org.opencontainers.image.description": (
            "the pipeline's locked environment (requirements/pipeline.lock), git and the "
            "project's package: dvc repro, dvc exp run, pipeline, dask worker"
        ),
        "org.opencontainers.image.revision": provenance.git_commit(),
        "org.opencontainers.image.base.name": base.ref,
        "ml.image.content_hash": digest,
    }
