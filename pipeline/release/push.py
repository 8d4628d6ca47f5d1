"""`pipeline push`: the built image into the registry, known from then on by its digest.

The engine pushes the layers (:mod:`pipeline.image.engine`) as ``sha-<git sha>`` and the content
tag; the registry is then asked what the tags resolve to, and the digest is recorded in
``build/image.json``.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path

from pipeline import artifacts
from pipeline.config import Settings
from pipeline.errors import ArtifactError, ImageError, RegistryError
from pipeline.image.engine import Engine
from pipeline.release.evidence import image_manifest
from pipeline.release.registry import AUTH_HINT, Registry

log = logging.getLogger("pipeline.release")


def push(settings: Settings, *, image_json: Path = artifacts.IMAGE) -> artifacts.ImageRecord:
    """Push the image build/image.json names; record the digest there and return the record."""
    built = artifacts.read_image(image_json)
    registry = Registry(settings)  # fails fast (and says why) before anything is sent
    revision = built.labels.get("org.opencontainers.image.revision", "unknown")
    if revision == "unknown":
        raise ArtifactError(f"{built.image} has no git revision label: build it in a git clone")
    if revision.endswith("-dirty"):
        log.warning("%s was built from uncommitted changes (%s)", built.image, revision)
    tags = [built.image.rsplit(":", 1)[1], f"sha-{revision}"]
    auth: dict[str, str] = {}
    if settings.registry_token is not None:
        auth = {"registrytoken": settings.registry_token.get_secret_value()}
    elif settings.registry_username and settings.registry_password is not None:
        auth = {"username": settings.registry_username}
        auth["password"] = settings.registry_password.get_secret_value()
    engine, started = Engine.connect(), time.monotonic()
    try:
        digest = engine.push(built.id, repository=registry.repository, tags=tags, auth=auth or None)
    except ImageError as exc:
        if any(word in str(exc).lower() for word in ("unauthorized", "denied", "authentication")):
            raise RegistryError(f"{exc}{AUTH_HINT}") from None
        raise
    seconds = time.monotonic() - started
    manifest = image_manifest(registry, digest)
    config_digest = manifest.body["config"]["digest"]
    if config_digest != built.id:
        raise RegistryError(f"{registry.ref(digest)} holds image {config_digest}, not {built.id}")
    for tag in tags:
        if (now := registry.digest_of(tag)) != digest:
            raise RegistryError(f"{registry.ref(tag)} resolves to {now}, not {digest}")
    pushed = built.model_copy(
        update={
            "digest": digest,
            "registry": artifacts.Pushed(
                repository=registry.repository,
                digest=digest,
                ref=registry.ref(digest),
                tags=tags,
                pushed_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                seconds=round(seconds, 2),
            ),
        }
    )
    artifacts.write_image(pushed, image_json)
    log.info("pushed %s as %s in %.1f s", registry.ref(digest), ", ".join(tags), seconds)
    return pushed
