"""Prometheus' HTTP API (``/api/v1/query``): the guardrail numbers of each variant.

The only module that talks to Prometheus. The model tasks export
``serving_requests_total`` and ``serving_request_duration_seconds`` with a ``variant`` label
(``SERVING_VARIANT``); over the experiment's current period this module reads, per variant,
the prediction requests, those that answered 5xx, and the p95 latency
(``histogram_quantile`` over the summed buckets, so the p95 of all tasks together).
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from pipeline.ab.decision import GuardrailData, Health
from pipeline.errors import ServiceError

__all__ = ["PREDICTION_ROUTES", "guardrails", "query"]

PREDICTION_ROUTES = r"/invocations|/v2/models/.*infer"
MAX_ANSWER_BYTES = 8 * 1024 * 1024


def query(url: str, promql: str, *, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The instant vector ``promql`` evaluates to now; ServiceError if Prometheus fails."""
    target = url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(target, timeout=timeout) as answer:
            body = answer.read(MAX_ANSWER_BYTES + 1)
    except (urllib.error.URLError, OSError) as exc:
        raise ServiceError(f"Prometheus at {url} did not answer {promql!r}: {exc}") from None
    if len(body) > MAX_ANSWER_BYTES:
        raise ServiceError(f"Prometheus at {url} answered more than {MAX_ANSWER_BYTES} bytes")
    try:
        data = json.loads(body)
    except ValueError:
        raise ServiceError(f"Prometheus at {url} answered something that is not JSON") from None
    if not isinstance(data, dict) or data.get("status") != "success":
        raise ServiceError(f"Prometheus at {url} refused {promql!r}: {str(data)[:200]}")
    result = (data.get("data") or {}).get("result")
    if not isinstance(result, list):
        raise ServiceError(f"Prometheus at {url} answered no result list for {promql!r}")
    return result


def guardrails(url: str, *, window_s: int, experiment: str) -> GuardrailData:
    """Requests, 5xx and p95 per variant over the last ``window_s`` seconds."""
    window = f"{max(int(window_s), 60)}s"
    selector = f'route=~"{PREDICTION_ROUTES}",experiment="{experiment}"'
    requests = _by_variant(
        url, f"sum by (variant) (increase(serving_requests_total{{{selector}}}[{window}]))"
    )
    errors = _by_variant(
        url,
        f'sum by (variant) (increase(serving_requests_total{{{selector},status=~"5.."}}'
        f"[{window}]))",
    )
    p95 = _by_variant(
        url,
        "histogram_quantile(0.95, sum by (variant, le) (increase("
        f"serving_request_duration_seconds_bucket{{{selector}}}[{window}])))",
    )
    arms = {}
    for variant in ("a", "b"):
        seconds = p95.get(variant, math.nan)
        arms[variant] = Health(
            requests=round(requests.get(variant, 0.0)),
            errors_5xx=round(errors.get(variant, 0.0)),
            p95_ms=seconds * 1000 if math.isfinite(seconds) else math.nan,
        )
    return GuardrailData(a=arms["a"], b=arms["b"], source=f"Prometheus {url}, last {window}")


def _by_variant(url: str, promql: str) -> dict[str, float]:
    values = {}
    for sample in query(url, promql):
        variant = (sample.get("metric") or {}).get("variant")
        value = sample.get("value")
        if variant in ("a", "b") and isinstance(value, list) and len(value) == 2:
            try:
                values[variant] = float(value[1])
            except (TypeError, ValueError):
                continue
    return values
