"""`pipeline sbom`: a CycloneDX SBOM of the Python environment inside the serving image.

The image's own interpreter lists what it can import (``importlib.metadata`` over its venv), in
a throwaway container with no network, so the SBOM describes the image as built, not the lock
file it was built from. The document is CycloneDX 1.6 JSON made with cyclonedx-python-lib; its
root component is the image (its id, and later, in the signed statement, its digest).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.errors import ArtifactError, ImageError, MissingInputError
from pipeline.image.engine import Engine

SBOM = Path("build/sbom.cdx.json")
# Runs inside the image: name, version and licence of every installed distribution.
_LIST = (
    "import json, importlib.metadata as m; print(json.dumps(sorted("
    "[d.metadata['Name'], d.version, d.metadata.get('License-Expression') or '']"
    " for d in m.distributions() if d.metadata['Name'])))"
)
IMAGE_ID_PROPERTY = "gitops-ml-pipeline:image:id"


def image_sbom(engine: Engine, ref: str) -> dict[str, Any]:
    """The SBOM of ``ref``'s Python environment, as a CycloneDX JSON document."""
    from cyclonedx.model import Property
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.model.license import LicenseExpression
    from cyclonedx.output.json import JsonV1Dot6
    from packageurl import PackageURL

    info = engine.image(ref)
    if info is None:
        raise ImageError(f"no image {ref!r} here: build it (`dvc repro`) or load it first")
    try:
        found = json.loads(engine.output(ref, command=["python3", "-c", _LIST]))
    except ValueError:
        raise ImageError(f"{ref}'s python did not list its packages as JSON") from None
    bom = Bom()
    root = Component(
        name=info.labels.get("org.opencontainers.image.title", ref.rsplit(":", 1)[0]),
        version=info.labels.get("org.opencontainers.image.version"),
        type=ComponentType.CONTAINER,
        bom_ref="image",
        properties=[Property(name=IMAGE_ID_PROPERTY, value=info.id)],
    )
    bom.metadata.component = root
    libraries = []
    for name, version, licence in found:
        purl = PackageURL("pypi", name=str(name).lower().replace("_", "-"), version=str(version))
        component = Component(
            name=str(name),
            version=str(version),
            type=ComponentType.LIBRARY,
            purl=purl,
            bom_ref=str(purl),
            licenses=[LicenseExpression(str(licence))] if licence else None,
        )
        bom.components.add(component)
        libraries.append(component)
    bom.register_dependency(root, libraries)
    document: dict[str, Any] = json.loads(JsonV1Dot6(bom).output_as_string())
    return document


def write_sbom(engine: Engine, ref: str, path: Path = SBOM) -> dict[str, Any]:
    document = image_sbom(engine, ref)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
    return document


def sbom_image_id(document: Any) -> str | None:
    """The image id an SBOM of :func:`image_sbom` names (None if it names none)."""
    if not isinstance(document, dict) or document.get("bomFormat") != "CycloneDX":
        return None
    component = (document.get("metadata") or {}).get("component") or {}
    for prop in component.get("properties") or []:
        if prop.get("name") == IMAGE_ID_PROPERTY:
            return str(prop.get("value"))
    return None


def read_sbom(path: Path = SBOM) -> dict[str, Any]:
    if not path.is_file():
        raise MissingInputError(f"{path} does not exist: run `pipeline sbom` first")
    try:
        document = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path} is not JSON ({exc}): run `pipeline sbom` again") from None
    if sbom_image_id(document) is None:
        raise ArtifactError(f"{path} is not an image SBOM of `pipeline sbom`: run it again")
    return dict(document)
