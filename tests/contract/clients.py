"""The HTTP clients of the contract and hostile suites, on one shared TLS context.

httpx builds a new `ssl.SSLContext` for every client it opens, loading the whole CA bundle each
time: about 0.1 s of CPU per client on these 2-core machines (measured, httpx 0.28), even for a
plain-http server. The hostile suite opens a client per case, so a run spent ~20 s of CPU on
contexts it never used. The context is the one httpx would build (certifi, or SSL_CERT_FILE /
SSL_CERT_DIR when set), built once per process.
"""

from __future__ import annotations

import ssl
from functools import cache

import httpx


@cache
def tls() -> ssl.SSLContext:
    """httpx's default context (`verify=True`, `trust_env=True`), once per process."""
    return httpx.create_ssl_context()


def client(base_url: str, *, timeout: float) -> httpx.Client:
    """An `httpx.Client` for ``base_url`` on the shared context."""
    return httpx.Client(base_url=base_url, timeout=timeout, verify=tls())


def get(url: str, *, timeout: float = 5.0) -> httpx.Response:
    """One GET, as `httpx.get` makes it, on the shared context."""
    return httpx.get(url, timeout=timeout, verify=tls())
