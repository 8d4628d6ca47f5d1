"""The OCI registry: the only module that talks to it (the engine pushes the layers:
pipeline.image.engine).

Built on oras-py: its ``Registry`` keeps the authenticated session (anonymous, HTTP Basic, or
bearer tokens exchanged at the registry's token realm, plus docker login credentials), uploads
and downloads blobs. Manifests are read and written as raw bytes through the same session
(``do_request``), because a manifest's digest is the sha256 of its exact bytes: oras-py's
``upload_manifest`` re-serialises JSON and always declares an OCI manifest, which would turn a
Docker manifest copied to a new tag into a different digest. The OCI 1.1 referrers query has no
oras-py helper either; it is one GET through the same session.

Promises: a tag moves by copying the manifest bytes inside the registry (no layer is read or
written, so the time does not depend on the image's size), and is read back before it counts.
Every failure is a :class:`RegistryError` that says what to do.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path
from typing import Any

import oras.auth  # type: ignore[import-untyped]
import oras.provider  # type: ignore[import-untyped]
import requests

from pipeline.config import Settings
from pipeline.errors import ConfigError, RegistryError

log = logging.getLogger("pipeline.release.registry")
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
OCI_MANIFEST, OCI_INDEX = MANIFEST_TYPES[0], MANIFEST_TYPES[2]
EMPTY_CONFIG = {  # the OCI 1.1 empty descriptor: an artifact with no config
    "mediaType": "application/vnd.oci.empty.v1+json",
    "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
    "size": 2,
    "data": "e30=",
}
MAX_BLOB_BYTES = 16 * 1024 * 1024  # configs and evidence; layers never pass through here
START = "start it (`make registry` for a local one) or check REGISTRY"
# oras-py retries every failed request 5 times over about two minutes; a release step should
# fail fast and say why, so requests go through its undecorated method (see _Client).
_UNRETRIED = oras.provider.Registry.do_request.__wrapped__


@dataclass(frozen=True)
class Manifest:
    digest: str
    media_type: str
    raw: bytes

    @property
    def body(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.raw)
        return data

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.raw)}


class _Session(requests.Session):
    """A session whose requests time out: a hung registry must not hang a promotion."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout
        self.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))  # as oras-py does

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        return super().request(*args, **kwargs)


class _Client(oras.provider.Registry):  # type: ignore[misc]
    static_token = False  # REGISTRY_TOKEN: sent as is, never exchanged

    def do_request(self, url: str, method: str = "GET", **kwargs: Any) -> requests.Response:
        """One try (see _UNRETRIED); a 401 after a token exchange means the cached token is for
        another scope (pull, not push): oras-py would resend it, so fetch a fresh one once."""
        headers = dict(kwargs.pop("headers", None) or {})
        response: requests.Response = _UNRETRIED(self, url, method, headers=dict(headers), **kwargs)
        exchanged = isinstance(self.auth, oras.auth.TokenAuth) and not self.static_token
        if response.status_code == 401 and exchanged and self.auth.token is not None:
            self.auth.token = None
            response = _UNRETRIED(self, url, method, headers=dict(headers), **kwargs)
        return response


class Registry:
    """One repository (``REGISTRY/IMAGE_REPOSITORY``) in one registry, authenticated."""

    def __init__(self, settings: Settings) -> None:
        if not settings.image_repository:
            raise ConfigError(
                "IMAGE_REPOSITORY is not set: export it (e.g. acme/breast-cancer-classifier; "
                "on GitHub: the repository's owner/name) and REGISTRY (default ghcr.io)"
            )
        self.host, self.path = settings.registry, settings.image_repository
        self.repository = f"{self.host}/{self.path}"
        scheme = "http" if settings.registry_insecure else "https"
        self._base = f"{scheme}://{self.host}/v2/{self.path}"
        session = _Session(settings.registry_timeout_s)
        challenge = self._ping(session, f"{scheme}://{self.host}/v2/")
        backend = "basic" if challenge.lower().startswith("basic") else "token"
        self._client = _Client(
            hostname=self.host, insecure=settings.registry_insecure, auth_backend=backend
        )
        self._client.session = self._client.auth.session = session
        token, user = settings.registry_token, settings.registry_username
        if token is not None and backend == "token":
            self._client.auth.set_token_auth(token.get_secret_value())
            self._client.static_token = True
        elif user and settings.registry_password is not None:
            self._client.auth.set_basic_auth(user, settings.registry_password.get_secret_value())
        else:
            container = self._client.get_container(self.repository)
            self._client.auth.load_configs(container)  # `docker login` credentials
        if backend == "basic" and not getattr(self._client.auth, "_basic_auth", None):
            raise RegistryError(
                f"{self.host} asks for a user name and password: set REGISTRY_USERNAME and "
                "REGISTRY_PASSWORD, or `docker login` to it"
            )

    def _ping(self, session: requests.Session, url: str) -> str:
        """The registry's auth challenge at /v2/ ('' when it lets anyone in)."""
        try:
            response = session.get(url)
        except requests.exceptions.SSLError as exc:
            raise RegistryError(
                f"TLS to {self.host} failed ({_first_line(exc)}); a registry speaking plain "
                "HTTP (e.g. on loopback) needs REGISTRY_INSECURE=true"
            ) from None
        except requests.RequestException as exc:
            raise RegistryError(
                f"registry {self.host} does not answer ({_first_line(exc)}): {START}"
            ) from None
        if response.status_code not in (200, 401):
            raise RegistryError(f"{url} answered {response.status_code}: is it a registry?")
        return "" if response.status_code == 200 else response.headers.get("Www-Authenticate", "")

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = f"{self._base}/{path}"
        try:
            response: requests.Response = self._client.do_request(url, method, **kwargs)
        except requests.RequestException as exc:
            raise RegistryError(
                f"registry {self.host} does not answer ({_first_line(exc)}): {START}"
            ) from None
        except ValueError as exc:  # oras-py: no way to answer the auth challenge
            why = f"{self.host} refused to authenticate us ({exc})"
            raise RegistryError(why + AUTH_HINT) from None
        if response.status_code in (401, 403):
            raise RegistryError(
                f"{self.host} refused {method} {self.path}/{path} ({response.status_code})"
                + AUTH_HINT
            )
        return response

    def ref(self, reference: str) -> str:
        sep = "@" if reference.startswith("sha256:") else ":"
        return f"{self.repository}{sep}{reference}"

    def reference(self, ref: str) -> str:
        """The tag or digest in ``ref``: a tag, a digest, or this repository's tag/digest."""
        for sep in ("@", ":"):
            if ref.startswith(self.repository + sep):
                return ref[len(self.repository) + 1 :]
        if "/" in ref:
            raise RegistryError(f"{ref} is not in {self.repository} (REGISTRY/IMAGE_REPOSITORY)")
        return ref

    def manifest(self, reference: str) -> Manifest | None:
        """The manifest a tag or digest names, its exact bytes and digest; None if absent."""
        response = self._request("GET", f"manifests/{reference}", headers=_ACCEPT)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise RegistryError(f"GET {self.ref(reference)}: {_why(response)}")
        digest = "sha256:" + hashlib.sha256(response.content).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise RegistryError(f"{self.ref(reference)} returned content with digest {digest}")
        media_type = response.headers.get("Content-Type", "").split(";")[0]
        return Manifest(digest=digest, media_type=media_type, raw=response.content)

    def digest_of(self, tag: str) -> str | None:
        """What ``tag`` resolves to now (a HEAD: nothing is downloaded), None if absent."""
        response = self._request("HEAD", f"manifests/{tag}", headers=_ACCEPT)
        if response.status_code == 404:
            return None
        digest = response.headers.get("Docker-Content-Digest")
        if response.status_code != 200 or not digest:
            raise RegistryError(f"HEAD {self.ref(tag)}: {_why(response)}")
        return digest

    def put_manifest(self, manifest: Manifest, tag: str, *, verify: bool = True) -> None:
        """Point ``tag`` at ``manifest`` (same bytes, so the same digest), then (``verify``)
        read it back."""
        headers = {"Content-Type": manifest.media_type}
        response = self._request("PUT", f"manifests/{tag}", data=manifest.raw, headers=headers)
        if response.status_code not in (200, 201):
            raise RegistryError(f"PUT {self.ref(tag)}: {_why(response)}")
        if not verify:
            return
        now = self.digest_of(tag)
        if now != manifest.digest:
            raise RegistryError(f"{self.ref(tag)} resolves to {now}, not {manifest.digest}")

    def image_config(self, manifest: Manifest) -> dict[str, Any]:
        """An image's config blob (labels, ...): a few KB, no layer is read."""
        return dict(json.loads(self._blob(str(manifest.body["config"]["digest"]))))

    def _blob(self, digest: str, *, max_bytes: int = MAX_BLOB_BYTES) -> bytes:
        """A blob, at most ``max_bytes``, whose content must hash to ``digest``: what the
        registry answers is trusted only as far as the digest we asked for."""
        response = self._request("GET", f"blobs/{digest}", stream=True)
        if response.status_code != 200:
            raise RegistryError(f"blob {digest} of {self.repository}: {_why(response)}")
        content = bytearray()
        try:
            for chunk in response.iter_content(chunk_size=65536):
                content += chunk
                if len(content) > max_bytes:
                    break
        except requests.RequestException as exc:
            raise RegistryError(f"blob {digest}: the download broke ({_first_line(exc)})") from None
        finally:
            response.close()
        if len(content) > max_bytes:
            raise RegistryError(f"blob {digest} is larger than {max_bytes} bytes: refused")
        if "sha256:" + hashlib.sha256(content).hexdigest() != digest:
            raise RegistryError(f"blob {digest} of {self.repository} does not match its digest")
        return bytes(content)

    def push_artifact(
        self,
        *,
        subject: Manifest,
        artifact_type: str,
        content: bytes,
        filename: str,
        annotations: dict[str, str],
        tag: str,
        layer_type: str | None = None,
    ) -> str:
        """Push ``content`` as an OCI 1.1 artifact whose ``subject`` is the image, tagged
        ``tag`` too (for registries without the referrers API). Returns its digest."""
        layer: dict[str, Any] = {
            "mediaType": layer_type or artifact_type,
            "digest": "sha256:" + hashlib.sha256(content).hexdigest(),
            "size": len(content),
            "annotations": {"org.opencontainers.image.title": filename},
        }
        container = self._client.get_container(self.ref(tag))
        with tempfile.TemporaryDirectory() as tmp:
            for blob, descriptor in ((content, layer), (b"{}", EMPTY_CONFIG)):
                path = Path(tmp) / str(descriptor["digest"]).split(":")[1]
                path.write_bytes(blob)
                try:
                    response = self._client.upload_blob(str(path), container, descriptor)
                except requests.RequestException as exc:
                    raise RegistryError(
                        f"registry {self.host} does not answer ({_first_line(exc)}): {START}"
                    ) from None
                except ValueError as exc:  # oras-py: the upload session was refused
                    why = f"{self.host} refused an upload ({exc})"
                    raise RegistryError(why + AUTH_HINT) from None
                if response.status_code not in (200, 201, 202):
                    raise RegistryError(f"upload of {descriptor['digest']}: {_why(response)}")
        body = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": EMPTY_CONFIG,
            "layers": [layer],
            "subject": subject.descriptor(),
            "annotations": annotations,
        }
        raw = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        artifact = Manifest("sha256:" + hashlib.sha256(raw).hexdigest(), OCI_MANIFEST, raw)
        self.put_manifest(artifact, tag)
        return artifact.digest

    def referrers(self, digest: str, *, artifact_type: str) -> list[str] | None:
        """Digests of the artifacts referring to ``digest`` (OCI 1.1 referrers API), or None
        when the registry does not offer that API (then use the tag scheme)."""
        response = self._request(
            "GET", f"referrers/{digest}?artifactType={artifact_type}", headers={"Accept": OCI_INDEX}
        )
        if response.status_code == 404 or "json" not in response.headers.get("Content-Type", ""):
            return None
        if response.status_code != 200:
            raise RegistryError(f"referrers of {digest}: {_why(response)}")
        found = response.json().get("manifests") or []
        return [str(m["digest"]) for m in found if m.get("artifactType") == artifact_type]

    def artifact_content(self, manifest: Manifest, *, max_bytes: int = MAX_BLOB_BYTES) -> bytes:
        """The single layer of an artifact made by :meth:`push_artifact`, at most ``max_bytes``."""
        layers = manifest.body.get("layers") or []
        if len(layers) != 1:
            raise RegistryError(f"{manifest.digest} has {len(layers)} layers, not one")
        size = layers[0].get("size")
        if not isinstance(size, int) or size > max_bytes:
            raise RegistryError(f"{manifest.digest}'s layer declares {size!r} bytes: refused")
        return self._blob(str(layers[0]["digest"]), max_bytes=max_bytes)


_ACCEPT = {"Accept": ", ".join(MANIFEST_TYPES)}
AUTH_HINT = (
    ": set REGISTRY_USERNAME and REGISTRY_PASSWORD (on GitHub: the actor and GITHUB_TOKEN "
    "with packages: write), or REGISTRY_TOKEN, or `docker login` to it"
)


def _first_line(exc: BaseException) -> str:
    """The part of a requests error a person needs ('Connection refused'), not the URL pool."""
    text = str(exc)
    for reason in _REASONS:
        if reason in text:
            return reason
    return (text.splitlines() or [type(exc).__name__])[0][:160]


_REASONS = (
    "Connection refused",
    "Name or service not known",
    "Temporary failure in name resolution",
    "timed out",
    "WRONG_VERSION_NUMBER",
    "CERTIFICATE_VERIFY_FAILED",
    "Connection reset by peer",
    "Connection aborted",
)


def _why(response: requests.Response) -> str:
    try:
        errors = response.json().get("errors") or []
        detail = "; ".join(str(e.get("message", e)) for e in errors)
    except ValueError:
        detail = response.text[:200]
    return f"{response.status_code} {response.reason}" + (f" ({detail})" if detail else "")
