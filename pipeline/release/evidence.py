"""Signed evidence for an image digest: `pipeline sign`, `pipeline attest`, and the check every
promotion runs.

Three in-toto Statements, each about exactly one image digest and each in a DSSE envelope signed
with the release key (:mod:`.signing`), are attached to the image as OCI 1.1 artifacts whose
``subject`` is the image (the referrers API), and for registries without that API also tagged
``sha256-<hex>.<kind>``:

- ``contract``: the contract report (build/contract-report.json) as the predicate. It counts
  only if it is complete: verdict pass, pytest exited 0, every check module of the suite (and at
  least the five this tool ships) passed > 0 tests and failed none, at least the budgeted fuzz
  cases ran, it tested this image (its id is the manifest's config digest) and the model it
  tested has the sha256 of the image's ``ml.model.sha256`` label.
- ``sbom``: a CycloneDX SBOM of the image's Python environment (:mod:`.sbom`).
- ``provenance``: SLSA v1 build provenance: git commit, dvc.lock hash, base image, builder.

Nothing unsigned, signed by a key outside RELEASE_SIGNERS_DIR, altered after signing, or made
for another digest (a replayed envelope) is evidence.
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline import artifacts
from pipeline.artifacts import ContractReport
from pipeline.config import Settings
from pipeline.errors import ArtifactError, EvidenceError, MissingInputError, RegistryError
from pipeline.release import signing
from pipeline.release.registry import Manifest, Registry
from pipeline.release.sbom import SBOM, read_sbom, sbom_image_id

log = logging.getLogger("pipeline.release")
ENVELOPE_TYPE = "application/vnd.dsse.envelope.v1+json"
IMAGE_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
)
EVIDENCE_DIR = Path("build/evidence")
# The check modules of tests/contract a report must show passing, whatever else the suite has.
REQUIRED_CHECKS = ("error_contract", "fuzz", "golden_parity", "health_and_identity", "latency")


@dataclass(frozen=True)
class Kind:
    name: str
    predicate_type: str
    artifact_type: str

    def tag(self, digest: str) -> str:
        """The tag-scheme fallback: ``sha256-<hex>.<kind>`` (as cosign's ``.sig``)."""
        return digest.replace(":", "-") + f".{self.name}"

    def file(self, folder: Path = EVIDENCE_DIR) -> Path:
        return folder / f"{self.name}.dsse.json"


CONTRACT = Kind(
    "contract",
    "https://gitops-ml-pipeline.dev/contract-report/v1",
    "application/vnd.gitops-ml-pipeline.contract.v1+dsse",
)
SBOM_KIND = Kind("sbom", "https://cyclonedx.org/bom", "application/vnd.cyclonedx.v1+dsse")
PROVENANCE = Kind(
    "provenance",
    "https://slsa.dev/provenance/v1",
    "application/vnd.gitops-ml-pipeline.provenance.v1+dsse",
)
KINDS = (CONTRACT, SBOM_KIND, PROVENANCE)


@dataclass(frozen=True)
class Evidence:
    digest: str  # the contract statement's artifact
    subject: str  # the image it vouches for: repository@digest
    report: ContractReport
    signer: str  # the trusted key's name (its file in RELEASE_SIGNERS_DIR)
    artifacts: dict[str, str]  # kind -> artifact digest (contract, sbom, provenance)


def evidence_tag(digest: str) -> str:
    return CONTRACT.tag(digest)


# -- what a complete, passing report is --------------------------------------------------------


def completeness_problem(report: ContractReport) -> str | None:
    """Why ``report`` is not a complete pass on its own terms; None if it is."""
    if report.verdict != "pass":
        return f"its verdict is {report.verdict!r}"
    if report.error:
        return f"it records an error: {report.error}"
    if report.pytest_exit != 0:
        return f"pytest exited {report.pytest_exit} (0 means every collected test ran and passed)"
    if report.failed:
        return f"failed tests: {', '.join(report.failed[:5])}"
    for check in sorted(set(REQUIRED_CHECKS) | set(report.suite)):
        counts = report.checks.get(check) or {}
        if counts.get("passed", 0) <= 0:
            return f"check module {check!r} passed no test (counts {counts or 'absent'})"
        if counts.get("failed", 0):
            return f"check module {check!r} failed {counts['failed']} test(s)"
    budget = report.budgets.get("fuzz_cases")
    if not isinstance(budget, int) or budget < 1:
        return f"it records no fuzz budget (budgets.fuzz_cases = {budget!r})"
    if report.fuzz_cases is None or report.fuzz_cases < budget:
        return f"{report.fuzz_cases} fuzz cases ran, the budget is {budget}"
    return None


def report_problem(
    report: ContractReport, *, config_digest: str, labels: dict[str, str]
) -> str | None:
    """Why ``report`` is not passing evidence for the image with this config digest and these
    labels; None if it is."""
    problem = completeness_problem(report)
    if problem:
        return problem
    if report.image.id != config_digest:
        return f"it tested image {report.image.id}, this digest is image {config_digest}"
    label = labels.get("ml.model.sha256")
    if report.model.sha256 != label:
        return f"it tested model sha256 {report.model.sha256}, the image's label says {label}"
    return None


# -- `pipeline sign`: statements about the pushed digest, signed --------------------------------


def sign(
    settings: Settings,
    *,
    image_json: Path = artifacts.IMAGE,
    report_path: Path = artifacts.CONTRACT_REPORT,
    sbom_path: Path = SBOM,
    dvc_lock: Path = Path("dvc.lock"),
    out_dir: Path = EVIDENCE_DIR,
) -> dict[str, Path]:
    """Sign the contract report, the SBOM and the build provenance as statements about the
    digest build/image.json records (after `pipeline push`). Needs the key, not the registry."""
    signer = signing.load_signer(settings)
    built = artifacts.read_image(image_json)
    if built.digest is None or built.registry is None:
        raise MissingInputError(f"{image_json} records no digest: run `pipeline push` first")
    report = artifacts.read_report(report_path)
    problem = report_problem(report, config_digest=built.id, labels=built.labels)
    if problem:
        raise EvidenceError(f"{report_path} is not evidence for {built.image}: {problem}")
    sbom = read_sbom(sbom_path)
    if sbom_image_id(sbom) != built.id:
        raise EvidenceError(
            f"{sbom_path} describes image {sbom_image_id(sbom)}, not {built.id}: run "
            "`pipeline sbom` on this image"
        )
    predicates = {
        CONTRACT.name: report.dump(),
        SBOM_KIND.name: sbom,
        PROVENANCE.name: provenance(built, dvc_lock=dvc_lock),
    }
    envelopes = signed(
        signer, repository=built.registry.repository, digest=built.digest, predicates=predicates
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for kind in KINDS:
        path = kind.file(out_dir)
        path.write_bytes(envelopes[kind.name])
        written[kind.name] = path
    log.info(
        "signed %d statements about %s with key %s…", len(written), built.digest, signer.keyid[:16]
    )
    return written


def signed(
    signer: signing.Signer, *, repository: str, digest: str, predicates: dict[str, Any]
) -> dict[str, bytes]:
    """One DSSE envelope per kind: the Statement ``predicates[kind]`` about ``digest``."""
    return {
        kind.name: signing.sign(
            signer,
            signing.statement(
                subject=repository,
                digest=digest,
                predicate_type=kind.predicate_type,
                predicate=predicates[kind.name],
            ),
        )
        for kind in KINDS
    }


def provenance(built: artifacts.ImageRecord, *, dvc_lock: Path) -> dict[str, Any]:
    """SLSA v1 provenance of the image: what it was built from and by whom."""
    if not dvc_lock.is_file():
        raise MissingInputError(f"{dvc_lock} does not exist: the image was built by `dvc repro`")
    labels = built.labels
    revision = labels.get("org.opencontainers.image.revision", "unknown")
    source = labels.get("org.opencontainers.image.source")
    base_algorithm, _, base_hex = built.base.id.partition(":")
    env = os.environ
    if env.get("GITHUB_ACTIONS") == "true" and env.get("GITHUB_WORKFLOW_REF"):
        server = env.get("GITHUB_SERVER_URL", "https://github.com")
        builder = f"{server}/{env['GITHUB_WORKFLOW_REF']}"
        invocation = (
            f"{server}/{env.get('GITHUB_REPOSITORY', '')}/actions/runs/"
            f"{env.get('GITHUB_RUN_ID', '')}/attempts/{env.get('GITHUB_RUN_ATTEMPT', '1')}"
        )
    else:
        builder = f"local:{getpass.getuser()}@{socket.gethostname()}"
        invocation = None
    return {
        "buildDefinition": {
            "buildType": "https://gitops-ml-pipeline.dev/containerize/v1",
            "externalParameters": {"source": source, "revision": revision},
            "internalParameters": {"engine": built.engine, "content_hash": built.content_hash},
            "resolvedDependencies": [
                {"uri": f"git+{source}" if source else "git", "digest": {"gitCommit": revision}},
                {
                    "name": "dvc.lock",
                    "digest": {"sha256": hashlib.sha256(dvc_lock.read_bytes()).hexdigest()},
                },
                {
                    "name": "base image",
                    "uri": f"docker-image://{built.base.ref}",
                    "digest": {base_algorithm: base_hex},
                },
                {"name": "model", "digest": {"sha256": labels.get("ml.model.sha256", "")}},
            ],
        },
        "runDetails": {
            "builder": {"id": builder},
            "metadata": {
                "invocationId": invocation,
                "finishedOn": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
        },
    }


# -- `pipeline attest`: the signed statements into the registry ---------------------------------


def attest(
    settings: Settings, *, image: str | None = None, folder: Path = EVIDENCE_DIR
) -> Evidence:
    """Push the signed statements of `pipeline sign` as referrers of the digest they name;
    each must verify against the trusted keys first. Needs the registry, not the key."""
    registry = Registry(settings)
    keys = signing.trusted_keys(settings)
    if image:
        digest = registry.reference(image)
    else:
        built = artifacts.read_image()
        if built.digest is None:
            raise MissingInputError(f"{artifacts.IMAGE} records no digest: run `pipeline push`")
        digest = built.digest
    envelopes = {}
    for kind in KINDS:
        path = kind.file(folder)
        if not path.is_file():
            raise MissingInputError(f"{path} does not exist: run `pipeline sign` first")
        envelopes[kind.name] = path.read_bytes()
    return attach(registry, digest=digest, envelopes=envelopes, keys=keys, where=str(folder))


def attach(
    registry: Registry,
    *,
    digest: str,
    envelopes: dict[str, bytes],
    keys: list[signing.TrustedKey],
    where: str,
) -> Evidence:
    """Verify each envelope against ``keys`` and this image, then push it as a referrer."""
    manifest = image_manifest(registry, digest)
    labels = image_labels(registry, manifest)
    for kind in KINDS:
        raw = envelopes[kind.name]
        try:
            check(kind, raw, keys=keys, manifest=manifest, labels=labels)
        except EvidenceError as exc:
            raise EvidenceError(
                f"{where}: the {kind.name} statement is not evidence for "
                f"{registry.ref(manifest.digest)}: {exc}"
            ) from None
        registry.push_artifact(
            subject=manifest,
            artifact_type=kind.artifact_type,
            layer_type=ENVELOPE_TYPE,
            content=raw,
            filename=kind.file().name,
            annotations={"org.opencontainers.image.created": _now()},
            tag=kind.tag(manifest.digest),
        )
    return find_evidence(registry, manifest, keys=keys)  # what a promotion will find


# -- the check a promotion runs ----------------------------------------------------------------


def check(
    kind: Kind,
    raw: bytes,
    *,
    keys: list[signing.TrustedKey],
    manifest: Manifest,
    labels: dict[str, str],
) -> tuple[signing.Verified, Any]:
    """Verify one envelope: trusted signature, a statement of ``kind`` about exactly this
    digest, and what its predicate must say. Returns it and the parsed predicate."""
    verified = signing.verify(raw, keys)
    body = verified.statement
    if body.get("predicateType") != kind.predicate_type:
        raise EvidenceError(f"its predicate type is {body.get('predicateType')!r}")
    subjects = signing.subject_digests(body)
    if manifest.digest not in subjects:
        raise EvidenceError(f"it is about {subjects}, not {manifest.digest} (replayed?)")
    predicate = body.get("predicate")
    config_digest = str(manifest.body["config"]["digest"])
    if kind is CONTRACT:
        try:
            report = artifacts.parse_report(predicate, where="the signed report")
        except ArtifactError as exc:
            raise EvidenceError(str(exc)) from None
        problem = report_problem(report, config_digest=config_digest, labels=labels)
        if problem:
            raise EvidenceError(problem)
        return verified, report
    if kind is SBOM_KIND:
        if sbom_image_id(predicate) != config_digest:
            raise EvidenceError(f"the SBOM describes image {sbom_image_id(predicate)}")
        return verified, predicate
    revision = labels.get("org.opencontainers.image.revision")
    deps = ((predicate or {}).get("buildDefinition") or {}).get("resolvedDependencies") or []
    commits = [(d.get("digest") or {}).get("gitCommit") for d in deps if isinstance(d, dict)]
    if revision not in commits:
        raise EvidenceError(f"the provenance names commits {commits}, the image {revision}")
    return verified, predicate


def find_evidence(
    registry: Registry, manifest: Manifest, *, keys: list[signing.TrustedKey]
) -> Evidence:
    """The verified contract, SBOM and provenance statements for exactly ``manifest``'s digest,
    or EvidenceError naming what is missing and why each candidate was refused."""
    labels = image_labels(registry, manifest)
    found: dict[str, tuple[str, signing.Verified, Any]] = {}
    for kind in KINDS:
        candidates = registry.referrers(manifest.digest, artifact_type=kind.artifact_type) or []
        tagged = registry.digest_of(kind.tag(manifest.digest))
        candidates += [tagged] if tagged and tagged not in candidates else []
        problems = []
        for digest in candidates:
            artifact = registry.manifest(digest)
            if artifact is None:
                continue
            subject = (artifact.body.get("subject") or {}).get("digest")
            if subject != manifest.digest:
                problems.append(f"{digest[:19]}… is attached to {subject}")
                continue
            try:
                raw = registry.artifact_content(artifact, max_bytes=signing.MAX_ENVELOPE_BYTES)
                verified, predicate = check(kind, raw, keys=keys, manifest=manifest, labels=labels)
            except (EvidenceError, RegistryError) as exc:
                problems.append(f"{digest[:19]}…: {exc}")
                continue
            found[kind.name] = (digest, verified, predicate)
            break
        if kind.name not in found:
            why = "; ".join(problems) if problems else "none found"
            raise EvidenceError(
                f"no valid signed {kind.name} evidence for {registry.ref(manifest.digest)} "
                f"({why}): the release job signs and attaches it (`pipeline sign`, then "
                "`pipeline attest`)"
            )
    digest, verified, report = found[CONTRACT.name]
    return Evidence(
        digest=digest,
        subject=registry.ref(manifest.digest),
        report=report,
        signer=verified.signer,
        artifacts={name: entry[0] for name, entry in found.items()},
    )


def image_manifest(registry: Registry, reference: str) -> Manifest:
    manifest = registry.manifest(reference)
    if manifest is None:
        raise RegistryError(f"{registry.ref(reference)} does not exist: `pipeline push` it first")
    if manifest.media_type not in IMAGE_TYPES:
        raise RegistryError(f"{registry.ref(reference)} is a {manifest.media_type}, not an image")
    return manifest


def image_labels(registry: Registry, manifest: Manifest) -> dict[str, str]:
    config = registry.image_config(manifest)
    return dict((config.get("config") or {}).get("Labels") or {})


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
