"""A real OCI registry for tests: Debian's docker-registry (CNCF distribution) on a free
loopback port, its storage in a temp folder, optionally behind HTTP Basic auth (htpasswd) or
bearer tokens from a small token server (`TokenServer`), as ghcr.io uses.

`scripts/registry.sh install` installs the package when the binary is missing (root Debian).
The registry can be stopped and started again on the same port and storage, to test what a
release step does while it is down.
"""

from __future__ import annotations

import base64
import crypt
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parents[2]  # the repository


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def ensure_installed() -> str:
    if shutil.which("docker-registry") is None:
        subprocess.run([str(ROOT / "scripts/registry.sh"), "install"], check=True)
    binary = shutil.which("docker-registry")
    assert binary, "docker-registry is not installed and scripts/registry.sh could not install it"
    return binary


class LocalRegistry:
    """One docker-registry process: `start()`, `stop()`, `address` (127.0.0.1:PORT)."""

    def __init__(self, root: Path, *, auth: dict[str, Any] | None = None) -> None:
        self.binary = ensure_installed()
        self.root = root
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.config = root / "config.yml"
        self.log = root / "registry.log"
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(root / "storage")},
                "delete": {"enabled": True},
            },
            "http": {"addr": self.address},
        }
        if auth:
            config["auth"] = auth
        root.mkdir(parents=True, exist_ok=True)
        self.config.write_text(yaml.safe_dump(config))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> LocalRegistry:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "serve", str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://{self.address}/v2/", timeout=1).close()
                return self
            except urllib.error.HTTPError:  # 401: up, and asking for credentials
                return self
            except OSError:
                assert self.process.poll() is None, self.log.read_text()[-2000:]
                time.sleep(0.05)
        raise AssertionError(f"docker-registry did not answer at {self.address}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


def htpasswd(path: Path, user: str, password: str) -> dict[str, Any]:
    """An htpasswd file (bcrypt, as the registry requires) and the registry's auth section."""
    path.write_text(f"{user}:{crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))}\n")
    return {"htpasswd": {"realm": "test-registry", "path": str(path)}}


class TokenServer:
    """The token endpoint of the Docker registry token protocol: GET /token?service=&scope=
    with HTTP Basic credentials returns a JWT (RS256, its certificate in ``x5c``) granting the
    requested scope. `auth()` is the registry's matching ``auth.token`` section."""

    service, issuer = "test-registry", "test-token-issuer"

    def __init__(self, root: Path, *, user: str, password: str) -> None:
        self.user, self.password = user, password
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test token issuer")])
        now = datetime.now(UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.bundle = root / "token-ca.pem"
        root.mkdir(parents=True, exist_ok=True)
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.issued: list[str] = []  # scopes, in order
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.answer(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.http.server_address[1]}/token"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def auth(self) -> dict[str, Any]:
        return {
            "token": {
                "realm": self.realm,
                "service": self.service,
                "issuer": self.issuer,
                "rootcertbundle": str(self.bundle),
            }
        }

    def close(self) -> None:
        self.http.shutdown()

    def answer(self, request: BaseHTTPRequestHandler) -> None:
        expected = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {expected}":
            request.send_response(401)
            request.end_headers()
            return
        query = parse_qs(urlparse(request.path).query)
        access = []
        for scope in query.get("scope", []):
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
            self.issued.append(scope)
        body = json.dumps({"token": self.token(access), "expires_in": 300}).encode()
        request.send_response(200)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    def token(self, access: list[dict[str, Any]]) -> str:
        der = self.cert.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": self.user,
            "aud": self.service,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": f"{now}-{len(self.issued)}",
            "access": access,
        }
        signing = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        signature = self.key.sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing}.{_b64(signature)}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
