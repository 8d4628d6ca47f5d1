"""Release keys, DSSE envelopes and redaction, without a registry: what `pipeline keygen` writes,
what a signature binds, what the verifier refuses, and that an independent DSSE implementation
(sigstore-python's) verifies what we produce."""

from __future__ import annotations

import base64
import json
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from pydantic import SecretStr

from pipeline.config import Settings
from pipeline.errors import ConfigError, EvidenceError, redact, redact_text
from pipeline.release import signing

DIGEST = "sha256:" + "a" * 64


@pytest.fixture(autouse=True)
def _no_release_key_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read the environment: a key the caller happens to hold must not leak in."""
    for name in ("RELEASE_SIGNING_KEY", "RELEASE_SIGNING_KEY_FILE", "RELEASE_SIGNERS_DIR"):
        monkeypatch.delenv(name, raising=False)


def make_key(tmp_path: Path, name: str = "release") -> tuple[Settings, Path]:
    """A throwaway key pair: private outside any git tree, public in a signers folder."""
    private = tmp_path / "keys" / f"{name}.key"
    signing.keygen(name=name, private_path=private, signers_dir=tmp_path / "signers")
    settings = Settings(release_signers_dir=tmp_path / "signers", release_signing_key_file=private)
    return settings, private


def envelope(settings: Settings, predicate: object = None, digest: str = DIGEST) -> bytes:
    payload = signing.statement(
        subject="127.0.0.1:5000/acme/model",
        digest=digest,
        predicate_type="https://example.test/v1",
        predicate=predicate or {"verdict": "pass"},
    )
    return signing.sign(signing.load_signer(settings), payload)


def test_keygen_writes_a_private_key_only_its_owner_reads_and_the_public_key_to_trust(
    tmp_path: Path,
) -> None:
    settings, private = make_key(tmp_path)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in private.read_bytes()
    public = (tmp_path / "signers/release.pub").read_bytes()
    assert public.startswith(b"-----BEGIN PUBLIC KEY-----") and b"PRIVATE" not in public
    [trusted] = signing.trusted_keys(settings)
    assert trusted.name == "release" and trusted.keyid == signing.load_signer(settings).keyid
    with pytest.raises(ConfigError, match="exists"):
        signing.keygen(name="release", private_path=private, signers_dir=tmp_path / "signers")


def test_keygen_refuses_to_put_a_private_key_inside_a_git_work_tree(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path / "repo")], check=True)
    with pytest.raises(ConfigError, match="inside the git work tree"):
        signing.keygen(
            name="k",
            private_path=tmp_path / "repo" / "secrets" / "k.key",
            signers_dir=tmp_path / "repo" / "release/signers",
        )
    assert not (tmp_path / "repo/secrets/k.key").exists()


def test_the_key_can_come_from_an_environment_secret_as_pem_text(tmp_path: Path) -> None:
    settings, private = make_key(tmp_path)
    from_env = Settings(
        release_signers_dir=settings.release_signers_dir,
        release_signing_key=SecretStr(private.read_text()),
    )
    raw = envelope(from_env)
    assert signing.verify(raw, signing.trusted_keys(settings)).signer == "release"
    with pytest.raises(ConfigError, match="not an unencrypted PEM private key"):
        signing.load_signer(Settings(release_signing_key=SecretStr("not a key")))
    with pytest.raises(ConfigError, match="no signing key"):
        signing.load_signer(Settings())


def test_a_signed_statement_verifies_and_names_its_subject_digest_and_signer(
    tmp_path: Path,
) -> None:
    settings, _ = make_key(tmp_path)
    verified = signing.verify(envelope(settings), signing.trusted_keys(settings))
    assert verified.signer == "release"
    assert verified.statement["_type"] == signing.STATEMENT_TYPE
    assert signing.subject_digests(verified.statement) == [DIGEST]


def test_an_envelope_signed_by_a_key_outside_the_signers_folder_is_refused(
    tmp_path: Path,
) -> None:
    trusted, _ = make_key(tmp_path / "ours")
    attacker, _ = make_key(tmp_path / "theirs")
    with pytest.raises(EvidenceError, match="untrusted key"):
        signing.verify(envelope(attacker), signing.trusted_keys(trusted))


def test_a_payload_altered_after_signing_is_refused(tmp_path: Path) -> None:
    settings, _ = make_key(tmp_path)
    data = json.loads(envelope(settings, {"verdict": "fail"}))
    body = json.loads(base64.b64decode(data["payload"]))
    body["predicate"]["verdict"] = "pass"
    data["payload"] = base64.b64encode(json.dumps(body).encode()).decode()
    with pytest.raises(EvidenceError, match="does not verify"):
        signing.verify(json.dumps(data).encode(), signing.trusted_keys(settings))


def test_unsigned_evidence_is_refused_whatever_it_says(tmp_path: Path) -> None:
    settings, _ = make_key(tmp_path)
    keys = signing.trusted_keys(settings)
    plain = json.dumps({"schema": "gitops-ml-pipeline/contract-report/v1", "verdict": "pass"})
    with pytest.raises(EvidenceError, match="not a DSSE envelope"):
        signing.verify(plain.encode(), keys)
    data = json.loads(envelope(settings))
    data["signatures"] = []
    with pytest.raises(EvidenceError, match="no signature"):
        signing.verify(json.dumps(data).encode(), keys)
    with pytest.raises(EvidenceError, match="larger than"):
        signing.verify(b" " * (signing.MAX_ENVELOPE_BYTES + 1), keys)


def test_no_trusted_key_is_a_configuration_error_not_a_pass(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no trusted release keys"):
        signing.trusted_keys(Settings(release_signers_dir=tmp_path / "empty"))


def test_an_independent_dsse_implementation_verifies_our_envelope(tmp_path: Path) -> None:
    """sigstore-python's DSSE code (its own PAE and ECDSA check, not securesystemslib's) accepts
    what `pipeline sign` writes, and its in-toto Statement model parses our payload."""
    from sigstore import dsse  # an independent implementation of the same format

    settings, _ = make_key(tmp_path)
    raw = envelope(settings, {"verdict": "pass"})
    public = serialization.load_pem_public_key((tmp_path / "signers/release.pub").read_bytes())
    theirs = dsse.Envelope._from_json(raw)
    payload = dsse._verify(public, theirs)  # type: ignore[arg-type]
    statement = dsse.Statement(payload)
    assert statement._matches_digest(_hashed(DIGEST))
    make_key(tmp_path / "other")
    wrong = serialization.load_pem_public_key((tmp_path / "other/signers/release.pub").read_bytes())
    with pytest.raises(dsse.VerificationError):  # and it does check the key
        dsse._verify(wrong, theirs)  # type: ignore[arg-type]


def _hashed(digest: str) -> object:
    from sigstore.hashes import Hashed
    from sigstore_models.common.v1 import HashAlgorithm

    return Hashed(algorithm=HashAlgorithm.SHA2_256, digest=bytes.fromhex(digest.split(":")[1]))


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        ("postgresql://mlflow:s3cret@db:5432/mlflow", "postgresql://***@db:5432/mlflow"),
        (
            "API request to https://user:tok@mlflow.example/api failed",
            "API request to https://***@mlflow.example/api failed",
        ),
        ("store 'http://a:b@h' and 'http://c:d@i/x'", "store 'http://***@h' and 'http://***@i/x'"),
        ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),
        ("user@example.com wrote it", "user@example.com wrote it"),
    ],
)
def test_credentials_in_any_uri_of_a_message_are_redacted(text: str, clean: str) -> None:
    assert redact_text(text) == clean
    assert "s3cret" not in redact("postgresql://mlflow:s3cret@db/mlflow")
