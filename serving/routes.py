"""THE route table: dispatch (:mod:`.app`), ``/openapi.json`` (:mod:`.openapi`) and ``/docs``
(:mod:`.docs`) are all generated from :data:`ROUTES`, so a route cannot exist in one and be
missing from another.

Paths under ``/v2/models/{name}`` also answer as ``/v2/models/{name}/versions/{version}/...``
(Open Inference Protocol); the router handles that prefix for every such route.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

__all__ = ["MODEL_PREFIX", "ROUTES", "Route", "Router"]

MODEL_PREFIX = "/v2/models/{name}"
H = TypeVar("H")


@dataclass(frozen=True)
class Route:
    method: Literal["GET", "POST"]
    path: str
    #: name of the :class:`serving.handlers.Handlers` method that answers it
    handler: str
    summary: str
    #: component schema of the JSON request body (None: no body)
    request: str | None = None
    #: component schema of the 200 answer (None: described in words only)
    response: str | None = None
    response_description: str = "OK"
    #: error statuses the route documents (the envelope is the same for all)
    errors: tuple[int, ...] = ()
    #: also takes ``text/csv`` (MLflow scoring protocol)
    csv: bool = False


ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/invocations",
        "invocations",
        "MLflow scoring protocol: JSON (4 formats) or CSV in, labels out",
        request="InvocationsRequest",
        response="Predictions",
        response_description="class labels",
        errors=(400, 413, 415, 503),
        csv=True,
    ),
    Route(
        "POST",
        "/feedback",
        "feedback",
        "A/B experiments: the outcome or true label of a prediction (request id) or a user",
        request="FeedbackRequest",
        response="FeedbackAccepted",
        response_description="logged for the experiment's analysis",
        errors=(400, 413, 415, 503),
    ),
    Route("GET", "/ping", "ping", "MLflow health check: 200 once ready, 503 before"),
    Route("GET", "/health", "ping", "same as /ping"),
    Route("GET", "/version", "version", "the model version, as plain text"),
    Route(
        "GET",
        "/metadata",
        "metadata",
        "model name, version, run id, git commit, data hash, metrics, schema",
    ),
    Route("GET", "/metrics", "prometheus", "Prometheus metrics"),
    Route(
        "GET",
        "/v2/health/live",
        "live",
        "Open Inference Protocol liveness: 200 while the process runs",
    ),
    Route(
        "GET",
        "/v2/health/ready",
        "ready",
        "Open Inference Protocol readiness: 200 once ready, 503 before",
    ),
    Route("GET", "/v2", "server_metadata", "server metadata"),
    Route("GET", MODEL_PREFIX, "model_metadata", "model metadata: input and output tensors"),
    Route("GET", MODEL_PREFIX + "/ready", "model_ready", "model readiness"),
    Route(
        "POST",
        MODEL_PREFIX + "/infer",
        "infer",
        "inference: tensors in, label and probabilities out",
        request="InferenceRequest",
        response="InferenceResponse",
        response_description="label and probabilities",
        errors=(400, 404, 413, 503),
    ),
    Route("GET", "/openapi.json", "openapi", "this API as OpenAPI 3.0"),
    Route("GET", "/docs", "docs", "this page"),
)


@dataclass(frozen=True)
class Match(Generic[H]):
    #: the route template (a bounded label for metrics, whatever the path was)
    template: str
    handler: H | None
    #: methods the path takes (empty: no such path)
    allowed: tuple[str, ...]
    #: ``{version}`` of a ``/versions/{version}`` path
    version: str | None


class Router(Generic[H]):
    """Resolves (method, path) to a handler in two dictionary look-ups."""

    def __init__(self, bind: Callable[[Route], H]) -> None:
        self._static: dict[str, dict[str, H]] = {}
        self._model: dict[str, dict[str, H]] = {}
        for route in ROUTES:
            if route.path.startswith(MODEL_PREFIX):
                table, key = self._model, route.path[len(MODEL_PREFIX) :]
            else:
                table, key = self._static, route.path
            table.setdefault(key, {})[route.method] = bind(route)

    def match(self, method: str, path: str) -> Match[H]:
        methods = self._static.get(path)
        template, version = path, None
        if methods is None and path.startswith("/v2/models/"):
            tail = path[len("/v2/models/") :].partition("/")[2]
            template = MODEL_PREFIX
            if tail.startswith("versions/"):
                version, _, tail = tail[len("versions/") :].partition("/")
                template += "/versions/{version}"
            suffix = "/" + tail if tail else ""
            methods = self._model.get(suffix)
            template += suffix
        if methods is None:
            return Match("unmatched", None, (), None)
        return Match(template, methods.get(method), tuple(methods), version)
