"""Prometheus metrics for ``GET /metrics``, one registry per app (tests build many apps).

=======================================  =========  ===========================================
name                                     type       labels
=======================================  =========  ===========================================
``serving_requests_total``               counter    ``route`` (template), ``method``, ``status``
``serving_request_duration_seconds``     histogram  ``route``
``serving_predictions_total``            counter    ``class``: one per predicted row
                                                    (a regressor: ``class="value"``)
``serving_unknown_categories_total``     counter    ``column``: values a categorical column
                                                    never saw in training (served, ignored)
``serving_rows_per_request``             histogram  -
``serving_batches_total``                counter    - (model calls shared by concurrent 1-row
                                                    requests, :mod:`serving.batching`)
``serving_batched_rows_total``           counter    - (the rows, one per request, in those)
``serving_model_info``                   info       name, version, run id, runtime, git commit
``serving_ready``                        gauge      1 once the model is verified and warm
=======================================  =========  ===========================================

In an A/B experiment (``SERVING_VARIANT`` set) the three above also carry ``variant`` and
``experiment`` (``SERVING_EXPERIMENT``), so one query compares the arms
(:mod:`pipeline.ab.prometheus`); outside one their labels are exactly those listed.

With ``SERVING_WORKERS`` > 1 each worker counts its own requests (a scrape sees one worker).
Label children are cached, so the hot path costs two dictionary look-ups and two increments.
"""

from __future__ import annotations

from collections import Counter as Tally
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
_ROW_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


class Metrics:
    def __init__(self, *, variant: str = "", experiment: str = "") -> None:
        self._arm = (variant, experiment) if variant else ()
        arm = ["variant", "experiment"] if variant else []
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter(
            "serving_requests_total",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status", *arm],
            registry=self.registry,
        )
        self._latency = Histogram(
            "serving_request_duration_seconds",
            "Time from request received to response sent, by route template.",
            ["route", *arm],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._predictions = Counter(
            "serving_predictions_total",
            "Rows predicted, by predicted class.",
            ["class", *arm],
            registry=self.registry,
        )
        self._unknown = Counter(
            "serving_unknown_categories_total",
            "Values of categorical columns never seen in training: served, the model ignores them.",
            ["column"],
            registry=self.registry,
        )
        self._rows = Histogram(
            "serving_rows_per_request",
            "Rows in each successful prediction request.",
            buckets=_ROW_BUCKETS,
            registry=self.registry,
        )
        self._batches = Counter(
            "serving_batches_total",
            "Model calls that served concurrent 1-row requests together (serving.batching).",
            registry=self.registry,
        )
        self._batched_rows = Counter(
            "serving_batched_rows_total",
            "Rows predicted in those calls (one per request).",
            registry=self.registry,
        )
        #: (batches, rows in them) so far, for the shutdown log line
        self.batch_totals = (0, 0)
        self._info = Info("serving_model", "The model being served.", registry=self.registry)
        self._ready = Gauge("serving_ready", "1 when the model is ready.", registry=self.registry)
        self._request_children: dict[tuple[str, str, int], Any] = {}
        self._latency_children: dict[str, Any] = {}
        self._class_children: dict[Any, Any] = {}

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        child = self._request_children.get(key)
        if child is None:
            child = self._requests.labels(route, method, str(status), *self._arm)
            self._request_children[key] = child
        child.inc()
        latency = self._latency_children.get(route)
        if latency is None:
            latency = self._latency_children[route] = self._latency.labels(route, *self._arm)
        latency.observe(seconds)

    def observe_unknown(self, unknown: tuple[tuple[str, int], ...]) -> None:
        for column, count in unknown:
            self._unknown.labels(column).inc(count)

    def observe_predictions(self, labels: list[Any], *, by_class: bool = True) -> None:
        self._rows.observe(len(labels))
        if not by_class:  # a regressor's values would make one series per value
            labels = ["value"] * len(labels)
        counts = {labels[0]: 1} if len(labels) == 1 else Tally(labels)
        for label, count in counts.items():
            child = self._class_children.get(label)
            if child is None:
                child = self._predictions.labels(str(label), *self._arm)
                self._class_children[label] = child
            child.inc(count)

    def observe_batch(self, rows: int) -> None:
        self._batches.inc()
        self._batched_rows.inc(rows)
        self.batch_totals = (self.batch_totals[0] + 1, self.batch_totals[1] + rows)

    def set_model(self, info: dict[str, str], *, ready: bool) -> None:
        self._info.info(info)
        self._ready.set(1 if ready else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
