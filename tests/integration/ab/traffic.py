"""Simulated users through the entry port: each request names its user (header or cookie),
and each answer keeps what the caller sees of the split (variant, bucket, version, fallback)."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

_local = threading.local()


@dataclass(frozen=True)
class Answer:
    user: str | None
    status: int
    variant: str | None
    bucket: int | None
    version: str | None
    fallback: bool
    experiment: str | None
    cookie: str | None  # the user key the entry set, for an anonymous caller
    request_id: str | None


def _connection(port: int) -> http.client.HTTPConnection:
    connection = getattr(_local, "connection", None)
    if connection is None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        _local.connection = connection
    return connection


def call(
    port: int,
    path: str,
    body: dict[str, Any],
    *,
    user: str | None = None,
    cookie: str | None = None,
    header: str = "X-User-Id",
) -> Answer:
    headers = {"Content-Type": "application/json"}
    if user is not None:
        headers[header] = user
    if cookie is not None:
        headers["Cookie"] = cookie
    for attempt in (1, 2):  # a keep-alive connection the entry closed: reopen once
        connection = _connection(port)
        try:
            connection.request("POST", path, json.dumps(body), headers)
            response = connection.getresponse()
            response.read()
            break
        except (OSError, http.client.HTTPException):
            connection.close()
            _local.connection = None
            if attempt == 2:
                return Answer(user, 0, None, None, None, False, None, None, None)
    set_cookie = response.getheader("Set-Cookie") or ""
    bucket = response.getheader("X-Experiment-Bucket")
    return Answer(
        user=user,
        status=response.status,
        variant=response.getheader("X-Model-Variant"),
        bucket=int(bucket) if bucket is not None else None,
        version=response.getheader("X-Model-Version"),
        fallback=response.getheader("X-Experiment-Fallback") == "1",
        experiment=response.getheader("X-Experiment"),
        cookie=set_cookie.split(";", 1)[0].split("=", 1)[1] if "=" in set_cookie else None,
        request_id=response.getheader("X-Request-ID"),
    )


def predict_body(golden: dict[str, Any]) -> dict[str, Any]:
    row = golden["rows"][0]
    return {
        "dataframe_split": {
            "columns": golden["features"],
            "data": [[row["inputs"][f] for f in golden["features"]]],
        }
    }


def predict_all(
    port: int, body: dict[str, Any], users: Iterable[str], *, concurrency: int = 4
) -> list[Answer]:
    """One prediction per user (in the order given), ``concurrency`` at a time."""
    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(lambda u: call(port, "/invocations", body, user=u), users))


def feedback_all(
    port: int, outcomes: list[tuple[str, int]], *, concurrency: int = 4
) -> list[Answer]:
    with ThreadPoolExecutor(concurrency) as pool:
        return list(
            pool.map(
                lambda uo: call(port, "/feedback", {"user": uo[0], "outcome": uo[1]}, user=uo[0]),
                outcomes,
            )
        )
