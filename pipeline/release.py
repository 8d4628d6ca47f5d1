"""`pipeline push` and `pipeline attest`, and the evidence check every promotion runs.

The image is pushed once, by the engine, as ``sha-<git sha>`` and its content tag; from then on
it is known by its digest. The contract report that passed for that digest is pushed next to it
as an OCI 1.1 artifact whose ``subject`` is the image (found through the referrers API) and,
for registries without that API, also tagged ``sha256-<hex>.contract``. Evidence counts only if
it refers to exactly that digest, its verdict is pass, and the report names the image's id (its
config digest) and that digest: a report made for another build cannot be reused.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.config import Settings
from pipeline.contract import REPORT_SCHEMA
from pipeline.errors import ImageError, PipelineError
from pipeline.image import Engine
from pipeline.registry import AUTH_HINT, Manifest, Registry, RegistryError

log = logging.getLogger("pipeline.release")
IMAGE_JSON = Path("build/image.json")
REPORT = Path("build/contract-report.json")
ARTIFACT_TYPE = "application/vnd.gitops-ml-pipeline.contract-report.v1+json"
IMAGE_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
)


class EvidenceError(PipelineError):
    """No passing contract report exists for exactly this digest, or the report is not one."""


@dataclass(frozen=True)
class Evidence:
    digest: str  # the artifact's own digest
    subject: str  # the image it vouches for: repository@digest
    report: dict[str, Any]


def evidence_tag(digest: str) -> str:
    """The tag-scheme fallback: ``sha256-<hex>.contract`` (as cosign's ``.sig``)."""
    return digest.replace(":", "-") + ".contract"


def push(settings: Settings, *, image_json: Path = IMAGE_JSON) -> dict[str, Any]:
    """Push the image build/image.json names; record the digest there and return the record."""
    built = _read_json(image_json, "build the image first: `make repro` (or `dvc repro`)")
    registry = Registry(settings)  # fails fast (and says why) before anything is sent
    revision = str(built["labels"].get("org.opencontainers.image.revision", "unknown"))
    if revision == "unknown":
        raise PipelineError(f"{built['image']} has no git revision label: build it in a git clone")
    if revision.endswith("-dirty"):
        log.warning("%s was built from uncommitted changes (%s)", built["image"], revision)
    tags = [str(built["image"]).rsplit(":", 1)[1], f"sha-{revision}"]
    auth: dict[str, str] = {}
    if settings.registry_token is not None:
        auth = {"registrytoken": settings.registry_token.get_secret_value()}
    elif settings.registry_username and settings.registry_password is not None:
        auth = {"username": settings.registry_username}
        auth["password"] = settings.registry_password.get_secret_value()
    engine, started = Engine.connect(), time.monotonic()
    try:
        digest = engine.push(
            str(built["id"]), repository=registry.repository, tags=tags, auth=auth or None
        )
    except ImageError as exc:
        if any(word in str(exc).lower() for word in ("unauthorized", "denied", "authentication")):
            raise RegistryError(f"{exc}{AUTH_HINT}") from None
        raise
    seconds = time.monotonic() - started
    manifest = image_manifest(registry, digest)
    config_digest = manifest.body["config"]["digest"]
    if config_digest != built["id"]:
        raise RegistryError(
            f"{registry.ref(digest)} holds image {config_digest}, not {built['id']}"
        )
    for tag in tags:
        if (now := registry.digest_of(tag)) != digest:
            raise RegistryError(f"{registry.ref(tag)} resolves to {now}, not {digest}")
    built["digest"] = digest
    built["registry"] = {
        "repository": registry.repository,
        "digest": digest,
        "ref": registry.ref(digest),
        "tags": tags,
        "pushed_at": _now(),
        "seconds": round(seconds, 2),
    }
    image_json.write_text(json.dumps(built, indent=2) + "\n")
    log.info("pushed %s as %s in %.1f s", registry.ref(digest), ", ".join(tags), seconds)
    return built


def attest(settings: Settings, *, report_path: Path = REPORT, image: str | None = None) -> Evidence:
    """Push a passing report as evidence for the digest it names (or ``image``)."""
    report = _read_json(report_path, "run `pipeline contract-test` first")
    if report.get("schema") != REPORT_SCHEMA:
        raise EvidenceError(f"{report_path} is not a contract report ({REPORT_SCHEMA})")
    if report.get("verdict") != "pass":
        raise EvidenceError(
            f"{report_path} has verdict {report.get('verdict')!r}: only a passing report is "
            "evidence; fix the image and run `pipeline contract-test` again"
        )
    registry = Registry(settings)
    digest = registry.reference(image) if image else _named_digest(report, registry)
    manifest = image_manifest(registry, digest)
    problem = report_problem(report, manifest)
    if problem:
        raise EvidenceError(f"{report_path} is not evidence for {registry.ref(digest)}: {problem}")
    artifact = registry.push_artifact(
        subject=manifest,
        artifact_type=ARTIFACT_TYPE,
        content=report_path.read_bytes(),
        filename=report_path.name,
        annotations={
            "org.opencontainers.image.created": _now(),
            "ml.contract.verdict": "pass",
            "ml.contract.schema": REPORT_SCHEMA,
        },
        tag=evidence_tag(manifest.digest),
    )
    find_evidence(registry, manifest)  # a promotion will find it: read back before it counts
    return Evidence(digest=artifact, subject=registry.ref(manifest.digest), report=report)


def report_problem(report: dict[str, Any], manifest: Manifest) -> str | None:
    """Why ``report`` is not passing evidence for the image ``manifest``; None if it is."""
    image = report.get("image") or {}
    config_digest = manifest.body["config"]["digest"]
    named = [image.get("digest"), *(str(d).rsplit("@", 1)[-1] for d in image.get("digests") or [])]
    if report.get("schema") != REPORT_SCHEMA:
        return f"its schema is {report.get('schema')!r}, not {REPORT_SCHEMA}"
    if report.get("verdict") != "pass":
        return f"its verdict is {report.get('verdict')!r}"
    if image.get("id") != config_digest:
        return f"it tested image {image.get('id')}, this digest is image {config_digest}"
    if manifest.digest not in named:
        return (
            f"it does not name {manifest.digest} (it names {[d for d in named if d]}): run "
            "`pipeline contract-test` after `pipeline push`, so the report records the digest"
        )
    return None


def find_evidence(registry: Registry, manifest: Manifest) -> Evidence:
    """The passing contract report for exactly ``manifest``'s digest, or EvidenceError."""
    candidates = registry.referrers(manifest.digest, artifact_type=ARTIFACT_TYPE) or []
    tagged = registry.digest_of(evidence_tag(manifest.digest))
    candidates += [tagged] if tagged and tagged not in candidates else []
    problems = []
    for digest in candidates:
        artifact = registry.manifest(digest)
        if artifact is None:
            continue
        subject = (artifact.body.get("subject") or {}).get("digest")
        if subject != manifest.digest or artifact.body.get("artifactType") != ARTIFACT_TYPE:
            problems.append(f"{digest} is not a contract report for it")
            continue
        report = json.loads(registry.artifact_content(artifact))
        problem = report_problem(report, manifest)
        if problem is None:
            return Evidence(digest=digest, subject=registry.ref(manifest.digest), report=report)
        problems.append(f"{digest}: {problem}")
    found = "; ".join(problems) if problems else "none found"
    raise EvidenceError(
        f"no passing contract evidence for {registry.ref(manifest.digest)} ({found}): run "
        "`pipeline contract-test` on that image, then `pipeline attest`"
    )


def image_manifest(registry: Registry, reference: str) -> Manifest:
    manifest = registry.manifest(reference)
    if manifest is None:
        raise RegistryError(f"{registry.ref(reference)} does not exist: `pipeline push` it first")
    if manifest.media_type not in IMAGE_TYPES:
        raise RegistryError(f"{registry.ref(reference)} is a {manifest.media_type}, not an image")
    return manifest


def _named_digest(report: dict[str, Any], registry: Registry) -> str:
    image = report.get("image") or {}
    if image.get("digest"):
        return str(image["digest"])
    for ref in image.get("digests") or []:
        repository, _, digest = str(ref).rpartition("@")
        if repository == registry.repository:
            return digest
    raise EvidenceError(
        f"the report names no digest in {registry.repository}: `pipeline push`, then "
        "`pipeline contract-test`, then attest (or pass --image)"
    )


def _read_json(path: Path, what_to_do: str) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path} does not exist: {what_to_do}") from None
    except json.JSONDecodeError as exc:
        raise PipelineError(f"{path} is not JSON ({exc}): {what_to_do}") from None
    return data


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
