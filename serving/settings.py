"""Serving settings, read once from the environment and validated at start-up.

===============================  ============  =====================================================
variable                         default       meaning
===============================  ============  =====================================================
``SERVING_MODEL_DIR``            ``models``    holds model.json, model.pkl, model.onnx
``SERVING_HOST``                 ``0.0.0.0``   interface to bind
``SERVING_PORT``                 ``8080``      TCP port
``SERVING_WORKERS``              ``1``         worker processes, each with its own model copy
``SERVING_MAX_ROWS``             ``10000``     rows per request; more answers 413
``SERVING_MAX_BODY_BYTES``       (derived)     request body bytes; more answers 413. Default: what
                                               MAX_ROWS rows of the model's columns take in the most
                                               verbose format (records, full float64 precision,
                                               indented), plus 64 KiB (:mod:`serving.limits`)
``SERVING_MAX_PARSE_BYTES``      (derived)     memory parsing one JSON body may take, estimated
                                               before it is parsed; more answers 413. Default:
                                               twice a full batch's, at least 128 MiB
``SERVING_LARGE_BODY_BYTES``     ``65536``     a larger body is read, parsed and predicted off the
                                               event loop, in one of LARGE_REQUESTS slots
``SERVING_LARGE_REQUESTS``       ``2``         slots: large requests served at once
``SERVING_LARGE_QUEUE``          ``16``        large requests that may wait for a slot; one more
                                               answers 503 with Retry-After
``SERVING_QUEUE_TIMEOUT_S``      ``10``        longest wait for a slot, then 503 with Retry-After
``SERVING_BODY_TIMEOUT_S``       ``10``        seconds a client has to send the whole body; then
                                               408 and the connection is closed
``SERVING_HEADER_TIMEOUT_S``     ``5``         seconds from a connection (or a request's first
                                               byte) to its last header; then 408 and closed
``SERVING_KEEPALIVE_TIMEOUT_S``  ``5``         an idle keep-alive connection is closed after this
``SERVING_MAX_CONNECTIONS``      ``512``       open connections; a request beyond answers 503
                                               (health routes excepted); a connection beyond this
                                               plus 64 is closed at once
``SERVING_LOG_LEVEL``            ``info``      debug, info, warning, error, critical
``SERVING_ACCESS_LOG``           ``true``      one JSON access-log line per request
``SERVING_RUNTIME``              ``auto``      auto (ONNX if it passes the golden check,
                                               else scikit-learn), onnx, sklearn
``SERVING_GRACEFUL_TIMEOUT``     ``30``        seconds in-flight requests get after SIGTERM
``SERVING_GOLDEN``               (searched)    golden rows; default MODEL_DIR/golden.json,
                                               then MODEL_DIR/../reports/golden.json
``SERVING_HOLDOUT_METRICS``      (searched)    holdout metrics file; default MODEL_DIR/holdout.json,
                                               then MODEL_DIR/../metrics/holdout.json
``SERVING_VARIANT``              (none)        ``a`` or ``b``: this service is one arm of an A/B
                                               experiment (metrics labelled, exposures logged)
``SERVING_EXPERIMENT``           (none)        the experiment's id (its hashing salt)
``SERVING_USER_HEADER``          ``X-User-Id`` the header naming the user (logged hashed)
``SERVING_BATCH_WINDOW_MS``      ``0``         micro-batching (:mod:`serving.batching`): how long
                                               a 1-row request that has company waits for more;
                                               0: until the end of the current event-loop turn
``SERVING_BATCH_MAX_ROWS``       ``32``        rows in one micro-batch; ``1`` turns batching off
===============================  ============  =====================================================

A bad value is an error that names the variable, raised before anything listens.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast, overload

from serving.errors import SettingsError

__all__ = ["Runtime", "Settings", "SettingsError"]

Runtime = Literal["auto", "onnx", "sklearn"]
_RUNTIMES = ("auto", "onnx", "sklearn")
_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_VARIANTS = ("", "a", "b")
_EXPERIMENT_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")


@dataclass(frozen=True)
class Settings:
    """Everything about how to serve; nothing about what the model is (that is model.json)."""

    model_dir: Path = Path("models")
    host: str = "0.0.0.0"
    port: int = 8080
    workers: int = 1
    max_rows: int = 10_000
    #: None: derived from the model's columns and ``max_rows`` (:mod:`serving.limits`)
    max_body_bytes: int | None = None
    #: None: derived from the model's columns and ``max_rows`` (:mod:`serving.limits`)
    max_parse_bytes: int | None = None
    large_body_bytes: int = 64 * 1024
    large_requests: int = 2
    large_queue: int = 16
    queue_timeout_s: int = 10
    body_timeout_s: int = 10
    header_timeout_s: int = 5
    keepalive_timeout_s: int = 5
    max_connections: int = 512
    log_level: str = "info"
    access_log: bool = True
    runtime: Runtime = "auto"
    graceful_timeout: int = 30
    holdout_metrics: Path | None = None
    golden: Path | None = None
    variant: str = ""
    experiment: str = ""
    user_header: str = "X-User-Id"
    batch_window_ms: float = 0.0
    #: 1: no micro-batching
    batch_max_rows: int = 32

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``SERVING_*`` variables; unset ones keep the defaults above."""
        env = os.environ if environ is None else environ
        default = cls()
        runtime = _choice(env, "SERVING_RUNTIME", default.runtime, _RUNTIMES)
        holdout = env.get("SERVING_HOLDOUT_METRICS")
        golden = env.get("SERVING_GOLDEN")
        return cls(
            model_dir=Path(env.get("SERVING_MODEL_DIR", str(default.model_dir))),
            host=env.get("SERVING_HOST", default.host),
            port=_integer(env, "SERVING_PORT", default.port, low=0, high=65535),
            workers=_integer(env, "SERVING_WORKERS", default.workers, low=1, high=256),
            max_rows=_integer(env, "SERVING_MAX_ROWS", default.max_rows, low=1, high=10**8),
            max_body_bytes=_integer(env, "SERVING_MAX_BODY_BYTES", None, low=1, high=2**40),
            max_parse_bytes=_integer(env, "SERVING_MAX_PARSE_BYTES", None, low=2**20, high=2**44),
            large_body_bytes=_integer(
                env, "SERVING_LARGE_BODY_BYTES", default.large_body_bytes, low=0, high=2**40
            ),
            large_requests=_integer(
                env, "SERVING_LARGE_REQUESTS", default.large_requests, low=1, high=256
            ),
            large_queue=_integer(
                env, "SERVING_LARGE_QUEUE", default.large_queue, low=0, high=10**5
            ),
            queue_timeout_s=_integer(
                env, "SERVING_QUEUE_TIMEOUT_S", default.queue_timeout_s, low=1, high=3600
            ),
            body_timeout_s=_integer(
                env, "SERVING_BODY_TIMEOUT_S", default.body_timeout_s, low=1, high=3600
            ),
            header_timeout_s=_integer(
                env, "SERVING_HEADER_TIMEOUT_S", default.header_timeout_s, low=1, high=3600
            ),
            keepalive_timeout_s=_integer(
                env, "SERVING_KEEPALIVE_TIMEOUT_S", default.keepalive_timeout_s, low=1, high=3600
            ),
            max_connections=_integer(
                env, "SERVING_MAX_CONNECTIONS", default.max_connections, low=1, high=10**6
            ),
            log_level=_choice(env, "SERVING_LOG_LEVEL", default.log_level, _LOG_LEVELS),
            access_log=_boolean(env, "SERVING_ACCESS_LOG", default.access_log),
            runtime=cast(Runtime, runtime),
            graceful_timeout=_integer(
                env, "SERVING_GRACEFUL_TIMEOUT", default.graceful_timeout, low=0, high=3600
            ),
            holdout_metrics=Path(holdout) if holdout else None,
            golden=Path(golden) if golden else None,
            variant=_choice(env, "SERVING_VARIANT", default.variant, _VARIANTS),
            experiment=_pattern(env, "SERVING_EXPERIMENT", default.experiment, _EXPERIMENT_ID),
            user_header=_pattern(env, "SERVING_USER_HEADER", default.user_header, _HEADER_NAME),
            batch_window_ms=_number(
                env, "SERVING_BATCH_WINDOW_MS", default.batch_window_ms, low=0, high=1000
            ),
            batch_max_rows=_integer(
                env, "SERVING_BATCH_MAX_ROWS", default.batch_max_rows, low=1, high=10_000
            ),
        )

    @property
    def batching(self) -> bool:
        """Whether concurrent 1-row requests may share one model call."""
        return self.batch_max_rows > 1


@overload
def _integer(env: Mapping[str, str], name: str, default: int, *, low: int, high: int) -> int: ...
@overload
def _integer(
    env: Mapping[str, str], name: str, default: None, *, low: int, high: int
) -> int | None: ...
def _integer(
    env: Mapping[str, str], name: str, default: int | None, *, low: int, high: int
) -> int | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}={value} is outside {low}..{high}")
    return value


def _number(env: Mapping[str, str], name: str, default: float, *, low: float, high: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw[:80]!r} is not a number") from None
    if not low <= value <= high:  # NaN compares False: rejected too
        raise SettingsError(f"{name}={raw.strip()[:80]} is outside {low:g}..{high:g}")
    return value


def _boolean(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean (use true or false)")


def _pattern(env: Mapping[str, str], name: str, default: str, pattern: re.Pattern[str]) -> str:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip()
    if not pattern.fullmatch(value):
        raise SettingsError(f"{name}={raw[:80]!r} does not match {pattern.pattern}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value not in allowed:
        raise SettingsError(f"{name}={raw!r} is not one of {', '.join(allowed)}")
    return value
