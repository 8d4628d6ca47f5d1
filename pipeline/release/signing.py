"""Release signing keys and DSSE envelopes: the only module that touches a signature.

The cryptography is securesystemslib's (its ``CryptoSigner``, ``SSlibKey`` and DSSE
``Envelope``); nothing here computes or checks a signature by hand. Keys are ECDSA P-256 with
SHA-256 (``ecdsa-sha2-nistp256``), the kind cosign and sigstore-python verify, and a key's id is
the sha256 of its DER SubjectPublicKeyInfo, so a signature names the key that made it.

Who can sign: whoever holds a private key whose public half is in ``RELEASE_SIGNERS_DIR``
(default ``release/signers/``, committed: changing the trusted keys is a reviewed commit). In CI
that is the release job alone (the ``RELEASE_SIGNING_KEY`` secret of the ``release``
environment); locally, `pipeline keygen` writes a key outside the repository.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import Settings
from pipeline.errors import ConfigError, EvidenceError

PAYLOAD_TYPE = "application/vnd.in-toto+json"  # DSSE payload type of an in-toto Statement
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SCHEME = "ecdsa-sha2-nistp256"
MAX_ENVELOPE_BYTES = 8 * 1024 * 1024  # an SBOM of a few hundred packages is ~100 KB
PUBLIC_SUFFIX = ".pub"


@dataclass(frozen=True)
class Signer:
    """A loaded private key and the id of its public half."""

    keyid: str
    _signer: Any  # securesystemslib CryptoSigner


@dataclass(frozen=True)
class TrustedKey:
    name: str  # the file's stem in RELEASE_SIGNERS_DIR: what a state file records as signer
    keyid: str
    key: Any  # securesystemslib SSlibKey


@dataclass(frozen=True)
class Verified:
    statement: dict[str, Any]
    signer: str  # TrustedKey.name


def _keyid(public_key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def generate() -> tuple[bytes, bytes]:
    """A new key pair: (private key PEM, PKCS#8 unencrypted; public key PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private = ec.generate_private_key(ec.SECP256R1())
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def keygen(*, name: str, private_path: Path, signers_dir: Path) -> tuple[Path, Path]:
    """Write a new private key to ``private_path`` (mode 0600, never inside a git work tree)
    and its public key to ``signers_dir/<name>.pub``. Refuses to overwrite either."""
    public_path = signers_dir / f"{name}{PUBLIC_SUFFIX}"
    for path in (private_path, public_path):
        if path.exists():
            raise ConfigError(f"{path} exists: choose another --name or remove it first")
    inside = _work_tree_of(private_path.parent)
    if inside is not None:
        raise ConfigError(
            f"{private_path} is inside the git work tree {inside}: a private key never goes "
            "into a repository; choose a path outside it (default: ~/.config/gitops-ml-pipeline/)"
        )
    private_pem, public_pem = generate()
    private_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_pem)
    signers_dir.mkdir(parents=True, exist_ok=True)
    public_path.write_bytes(public_pem)
    return private_path, public_path


def _work_tree_of(folder: Path) -> Path | None:
    for parent in [folder.resolve(), *folder.resolve().parents]:
        if (parent / ".git").exists():
            return parent
    return None


def load_signer(settings: Settings) -> Signer:
    """The release key from RELEASE_SIGNING_KEY (PEM text) or RELEASE_SIGNING_KEY_FILE."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from securesystemslib.signer import CryptoSigner, SSlibKey  # type: ignore[attr-defined]

    if settings.release_signing_key is not None:
        pem, where = settings.release_signing_key.get_secret_value().encode(), "RELEASE_SIGNING_KEY"
    elif settings.release_signing_key_file is not None:
        where = f"RELEASE_SIGNING_KEY_FILE ({settings.release_signing_key_file})"
        try:
            pem = settings.release_signing_key_file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{where} cannot be read: {exc.strerror}") from None
    else:
        raise ConfigError(
            "no signing key: set RELEASE_SIGNING_KEY (the PEM text; in CI the release "
            "environment's secret) or RELEASE_SIGNING_KEY_FILE; `pipeline keygen` makes one"
        )
    try:
        private = serialization.load_pem_private_key(pem.strip() + b"\n", password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"{where} is not an unencrypted PEM private key") from None
    if not isinstance(private, ec.EllipticCurvePrivateKey) or private.curve.name != "secp256r1":
        raise ConfigError(f"{where} is not an ECDSA P-256 key (`pipeline keygen` makes one)")
    keyid = _keyid(private.public_key())
    public = SSlibKey.from_crypto(private.public_key(), keyid=keyid, scheme=SCHEME)
    return Signer(keyid=keyid, _signer=CryptoSigner(private, public))


def trusted_keys(settings: Settings) -> list[TrustedKey]:
    """Every public key in RELEASE_SIGNERS_DIR; ConfigError when there is none."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from securesystemslib.signer import SSlibKey  # type: ignore[attr-defined]

    folder = settings.release_signers_dir
    keys = []
    for path in sorted(folder.glob(f"*{PUBLIC_SUFFIX}")) if folder.is_dir() else []:
        try:
            public = serialization.load_pem_public_key(path.read_bytes())
        except ValueError:
            raise ConfigError(f"{path} is not a PEM public key: restore it from git") from None
        if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256r1":
            raise ConfigError(f"{path} is not an ECDSA P-256 public key")
        keyid = _keyid(public)
        key = SSlibKey.from_crypto(public, keyid=keyid, scheme=SCHEME)
        keys.append(TrustedKey(name=path.stem, keyid=keyid, key=key))
    if not keys:
        raise ConfigError(
            f"no trusted release keys in {folder}/ (*{PUBLIC_SUFFIX}): nothing can be verified; "
            "`pipeline keygen` writes one there (commit it), or set RELEASE_SIGNERS_DIR"
        )
    return keys


def statement(*, subject: str, digest: str, predicate_type: str, predicate: Any) -> bytes:
    """An in-toto Statement v1 about one image digest (``sha256:<hex>``), as JSON bytes."""
    algorithm, _, value = digest.partition(":")
    body = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": subject, "digest": {algorithm: value}}],
        "predicateType": predicate_type,
        "predicate": predicate,
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def sign(signer: Signer, payload: bytes) -> bytes:
    """``payload`` (a Statement) in a DSSE envelope with one signature, as JSON bytes."""
    from securesystemslib.dsse import Envelope

    envelope = Envelope(payload=payload, payload_type=PAYLOAD_TYPE, signatures={})
    envelope.sign(signer._signer)
    return json.dumps(envelope.to_dict(), indent=2).encode() + b"\n"


def verify(raw: bytes, keys: list[TrustedKey]) -> Verified:
    """The Statement inside a DSSE envelope signed by one of ``keys``; EvidenceError says why
    not (not an envelope, unsigned, signed by an untrusted key, payload altered)."""
    from securesystemslib.dsse import Envelope
    from securesystemslib.exceptions import VerificationError

    if len(raw) > MAX_ENVELOPE_BYTES:
        raise EvidenceError(f"{len(raw)} bytes: larger than any envelope this tool writes")
    try:
        data = json.loads(raw)
        envelope = Envelope.from_dict(data)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise EvidenceError("not a DSSE envelope (unsigned evidence is not evidence)") from None
    if envelope.payload_type != PAYLOAD_TYPE:
        raise EvidenceError(f"payload type {envelope.payload_type!r}, not {PAYLOAD_TYPE!r}")
    if not envelope.signatures:
        raise EvidenceError("the envelope carries no signature")
    by_id = {k.keyid: k for k in keys}
    try:
        accepted = envelope.verify([k.key for k in keys], threshold=1)
    except VerificationError:
        named = ", ".join(sorted(envelope.signatures)) or "none"
        known = [i for i in envelope.signatures if i in by_id]
        why = "does not verify (altered after signing)" if known else "is by an untrusted key"
        raise EvidenceError(f"its signature (key {named[:16]}…) {why}") from None
    try:
        body = json.loads(envelope.payload)
    except ValueError:
        raise EvidenceError("the signed payload is not JSON") from None
    if not isinstance(body, dict) or body.get("_type") != STATEMENT_TYPE:
        raise EvidenceError(f"the signed payload is not an in-toto Statement ({STATEMENT_TYPE})")
    keyid = next(iter(accepted))
    return Verified(statement=body, signer=by_id[keyid].name)


def subject_digests(statement: dict[str, Any]) -> list[str]:
    """``sha256:<hex>`` of every subject of a Statement."""
    found = []
    for subject in statement.get("subject") or []:
        for algorithm, value in ((subject or {}).get("digest") or {}).items():
            found.append(f"{algorithm}:{value}")
    return found
