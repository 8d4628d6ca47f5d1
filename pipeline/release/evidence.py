"""`pipeline attest`, and the evidence check every promotion runs.

An image is pushed once (:mod:`.push`); from then on it is known by its digest. The contract
report that passed for that digest is pushed next to it
as an OCI 1.1 artifact whose ``subject`` is the image (found through the referrers API) and,
for registries without that API, also tagged ``sha256-<hex>.contract``. Evidence counts only if
it refers to exactly that digest, its verdict is pass, and the report names the image's id (its
config digest) and that digest: a report made for another build cannot be reused.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pipeline import artifacts
from pipeline.artifacts import REPORT_SCHEMA, ContractReport
from pipeline.config import Settings
from pipeline.errors import ArtifactError, EvidenceError, RegistryError
from pipeline.release.registry import Manifest, Registry

log = logging.getLogger("pipeline.release")
ARTIFACT_TYPE = "application/vnd.gitops-ml-pipeline.contract-report.v1+json"
IMAGE_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
)


@dataclass(frozen=True)
class Evidence:
    digest: str  # the artifact's own digest
    subject: str  # the image it vouches for: repository@digest
    report: ContractReport


def evidence_tag(digest: str) -> str:
    """The tag-scheme fallback: ``sha256-<hex>.contract`` (as cosign's ``.sig``)."""
    return digest.replace(":", "-") + ".contract"


def attest(
    settings: Settings, *, report_path: Path = artifacts.CONTRACT_REPORT, image: str | None = None
) -> Evidence:
    """Push a passing report as evidence for the digest it names (or ``image``)."""
    report = artifacts.read_report(report_path)
    if report.verdict != "pass":
        raise EvidenceError(
            f"{report_path} has verdict {report.verdict!r}: only a passing report is "
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


def report_problem(report: ContractReport, manifest: Manifest) -> str | None:
    """Why ``report`` is not passing evidence for the image ``manifest``; None if it is."""
    image = report.image
    config_digest = manifest.body["config"]["digest"]
    named = [image.digest, *(d.rsplit("@", 1)[-1] for d in image.digests)]
    if report.verdict != "pass":
        return f"its verdict is {report.verdict!r}"
    if image.id != config_digest:
        return f"it tested image {image.id}, this digest is image {config_digest}"
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
        try:
            report = artifacts.parse_report(
                json.loads(registry.artifact_content(artifact)), where=f"artifact {digest}"
            )
        except (ArtifactError, ValueError) as exc:
            problems.append(str(exc))
            continue
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


def _named_digest(report: ContractReport, registry: Registry) -> str:
    if report.image.digest:
        return report.image.digest
    for ref in report.image.digests:
        repository, _, digest = ref.rpartition("@")
        if repository == registry.repository:
            return digest
    raise EvidenceError(
        f"the report names no digest in {registry.repository}: `pipeline push`, then "
        "`pipeline contract-test`, then attest (or pass --image)"
    )


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
