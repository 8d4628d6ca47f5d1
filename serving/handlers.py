"""Route handlers: each takes a fully read :class:`Request` and returns a :class:`Response`.

Handlers are synchronous on purpose: a 1-row prediction costs microseconds with onnxruntime,
less than a hop to a thread pool would; the app runs them in a thread only for large bodies
(:mod:`serving.limits`), so they must stay thread-safe (onnxruntime sessions are). Everything
derived from the model (schema, limits, metadata, OpenAPI, docs) is computed once, in the
loader thread, before readiness flips.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from serving.batching import MicroBatcher, Outputs
from serving.codec import dumps
from serving.docs import docs_page
from serving.errors import ServingError
from serving.experiment import Exposures
from serving.limits import Limits, container_memory_limit
from serving.loader import LoadedModel, ModelState
from serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from serving.metrics import Metrics
from serving.openapi import openapi_document
from serving.protocols import oip
from serving.protocols.mlflow import parse_invocation, predictions
from serving.runtime import OnnxRuntime
from serving.schema import Batch, Columns, InputSchema
from serving.settings import Settings

__all__ = [
    "Deferred",
    "Handler",
    "Handlers",
    "Request",
    "Response",
    "Served",
    "not_ready",
    "prepare",
]

_log = logging.getLogger("serving")
JSON = b"application/json"
SERVER_NAME = "pipeline-serving"
SERVER_VERSION = "1"


@dataclass(slots=True)
class Request:
    method: str
    path: str
    body: bytes
    content_type: str | None
    request_id: str
    header_length: str | None = None
    version: str | None = None
    #: the raw ASGI headers (read only by the exposure log, during an experiment)
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    #: requests in flight, this one included, when it may join a micro-batch
    #: (:mod:`serving.batching`); 0: predict at once (a large request, in a thread)
    in_flight: int = 0


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    content_type: bytes = JSON
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


@dataclass(frozen=True)
class Served:
    loaded: LoadedModel
    schema: InputSchema
    limits: Limits
    metadata: bytes
    v2_model: bytes
    openapi: bytes
    docs: bytes
    exposures: Exposures
    #: None: every request predicts alone (batching off, or not an ONNX classifier of one
    #: matrix)
    batcher: MicroBatcher | None = None


@dataclass(frozen=True, slots=True)
class Deferred:
    """A handler's answer that waits for a shared model call: the app awaits ``outputs`` on the
    event loop, then ``answer`` turns them into the response exactly as the unbatched path
    would (so errors raised by either are handled as the handler's own)."""

    outputs: asyncio.Future[Outputs]
    answer: Callable[[Outputs], Response]


Handler = Callable[[Request], Response | Deferred]


def prepare(loaded: LoadedModel, *, settings: Settings, metrics: Metrics) -> Served:
    """Everything the handlers need from the loaded model, built once in the loader thread
    before readiness flips."""
    card, runtime = loaded.card, loaded.runtime
    schema = InputSchema(
        card.features, max_rows=settings.max_rows, max_parse_bytes=settings.max_parse_bytes
    )
    limits = Limits.derive(
        card.feature_names,
        text_bytes=schema.text_bytes,
        max_rows=settings.max_rows,
        max_body_bytes=settings.max_body_bytes,
        large_body_bytes=settings.large_body_bytes,
        large_requests=settings.large_requests,
    )
    _check_memory(limits, schema)
    batcher = None
    if (
        settings.batching
        and isinstance(runtime, OnnxRuntime)
        and not schema.mixed
        and not card.regression  # its values, like probabilities, are float32 sums
    ):
        batcher = MicroBatcher(
            run=runtime.session.run,
            window_s=settings.batch_window_ms / 1000,
            max_rows=settings.batch_max_rows,
            observe=metrics.observe_batch,
        )
    facts = asdict(card)
    facts.pop("features")
    metadata = {
        **facts,
        "input_schema": [
            {**asdict(f), "categories": None if f.categories is None else list(f.categories)}
            for f in card.features
        ],
        "holdout_metrics": loaded.holdout_metrics,
        "runtime": {
            "name": runtime.name,
            "probability_tolerance": runtime.tolerance,
            "golden_max_abs_diff": loaded.golden_max_abs_diff,
            "probability_datatype": runtime.probability_datatype,
        },
        # What a client may send and how long it may take (serving.settings, serving.limits).
        "limits": {
            "max_rows": settings.max_rows,
            "max_body_bytes": limits.max_body_bytes,
            "max_body_bytes_derived": limits.body_limit_derived,
            "max_parse_bytes": schema.max_parse_bytes,
            "max_parse_bytes_derived": schema.parse_budget_derived,
            "max_csv_record_chars": schema.max_csv_record_chars,
            "large_body_bytes": settings.large_body_bytes,
            "large_requests": settings.large_requests,
            "large_queue": settings.large_queue,
            "queue_timeout_s": settings.queue_timeout_s,
            "body_timeout_s": settings.body_timeout_s,
            "header_timeout_s": settings.header_timeout_s,
            "keepalive_timeout_s": settings.keepalive_timeout_s,
            "max_connections": settings.max_connections,
        },
        # Concurrent 1-row requests sharing one model call (serving.batching).
        "batching": {
            "enabled": batcher is not None,
            "window_ms": settings.batch_window_ms,
            "max_rows": settings.batch_max_rows,
        },
    }
    v2 = oip.model_metadata(
        card, runtime=runtime.name, probability_datatype=runtime.probability_datatype
    )
    document = openapi_document(
        card, max_rows=settings.max_rows, probability_datatype=runtime.probability_datatype
    )
    first = [(f.categories or ("",))[0] if f.categorical else 0.0 for f in card.features]
    example = {"dataframe_split": {"columns": list(card.feature_names), "data": [first]}}
    metrics.set_model(
        {
            "model_name": card.model_name,
            "model_version": card.model_version,
            "run_id": card.run_id,
            "git_commit": card.git_commit,
            "runtime": runtime.name,
        },
        ready=True,
    )
    return Served(
        loaded=loaded,
        schema=schema,
        limits=limits,
        metadata=dumps(metadata),
        v2_model=dumps(v2),
        openapi=dumps(document),
        docs=docs_page(card, example=example),
        exposures=Exposures(
            variant=settings.variant,
            experiment=settings.experiment,
            user_header=settings.user_header,
            model_version=card.model_version,
            classes=card.classes,
        ),
        batcher=batcher,
    )


def _check_memory(limits: Limits, schema: InputSchema) -> None:
    """Say at start-up when the container's memory cannot hold the worst case the limits let
    in: the fix is a setting, better read in the log than learnt from the OOM killer."""
    need = limits.worst_case_bytes(schema.max_parse_bytes)
    have = container_memory_limit()
    if have is not None and need > have - 96 * 2**20:
        _log.warning(
            "the memory limit (%d MiB) may not hold %d large requests at their limits (%d MiB, "
            "plus ~96 MiB for the server itself): lower SERVING_LARGE_REQUESTS, "
            "SERVING_MAX_BODY_BYTES or SERVING_MAX_PARSE_BYTES, or raise the limit",
            have // 2**20,
            limits.large_requests,
            need // 2**20,
        )


def not_ready(state: ModelState[Served]) -> ServingError:
    return ServingError.not_ready(f"model not ready: {state.error or 'the model is still loading'}")


class Handlers:
    """One method per route of :data:`serving.routes.ROUTES` (the table names them)."""

    def __init__(self, *, state: ModelState[Served], metrics: Metrics) -> None:
        self.state = state
        self.metrics = metrics

    def _served(self) -> Served:
        served = self.state.served
        if served is None:
            raise not_ready(self.state)
        return served

    # -- MLflow scoring protocol -----------------------------------------------------------

    def invocations(self, request: Request) -> Response | Deferred:
        served = self._served()
        x = parse_invocation(request.body, request.content_type, served.schema)

        def answer(outputs: Outputs) -> Response:
            labels = outputs[0]
            self._observe(served, x, labels)
            served.exposures.record(request.request_id, request.headers, labels)
            return Response(200, predictions(labels))

        return self.predict(served, request, x, answer, probabilities=False)

    def predict(
        self,
        served: Served,
        request: Request,
        x: Batch,
        answer: Callable[[Outputs], Response],
        *,
        probabilities: bool,
    ) -> Response | Deferred:
        """The one place a prediction request meets the runtime: at once, or, for a 1-row
        numeric request on ONNX that wants labels only and has company, in a micro-batch
        (:mod:`serving.batching`). Without ``probabilities`` the second output is an empty
        slice of the labels."""
        runtime = served.loaded.runtime
        if probabilities:  # float32 sums depend on the batch's shape: never batched
            return answer(runtime.predict_with_probabilities(x))
        batcher = served.batcher
        if (
            batcher is not None
            and request.in_flight > 1
            and isinstance(runtime, OnnxRuntime)
            and isinstance(x, np.ndarray)
            and len(x) == 1
        ):
            runtime.check(x)  # the request's own 400, before it joins
            future = batcher.submit(x, running=request.in_flight)
            return Deferred(future, lambda outputs: answer((outputs[0], outputs[0][:0])))
        labels = runtime.predict(x)
        return answer((labels, labels[:0]))

    def feedback(self, request: Request) -> Response:
        accepted = self._served().exposures.feedback(request.body, request.content_type)
        return Response(200, dumps({"accepted": accepted}))

    def _observe(self, served: Served, x: Batch, labels: Any) -> None:
        if isinstance(x, Columns) and x.unknown:
            self.metrics.observe_unknown(x.unknown)
        self.metrics.observe_predictions(
            labels.tolist(), by_class=not served.loaded.card.regression
        )

    def ping(self, request: Request) -> Response:
        self._served()
        return Response(200, b"\n")

    def version(self, request: Request) -> Response:
        return Response(200, self._served().loaded.card.model_version.encode(), b"text/plain")

    def metadata(self, request: Request) -> Response:
        return Response(200, self._served().metadata)

    def prometheus(self, request: Request) -> Response:
        return Response(200, self.metrics.render(), METRICS_CONTENT_TYPE.encode())

    def openapi(self, request: Request) -> Response:
        return Response(200, self._served().openapi)

    def docs(self, request: Request) -> Response:
        return Response(200, self._served().docs, b"text/html; charset=utf-8")

    # -- Open Inference Protocol ---------------------------------------------------------

    def server_metadata(self, request: Request) -> Response:
        body = {
            "name": SERVER_NAME,
            "version": SERVER_VERSION,
            "extensions": ["binary_tensor_data"],
        }
        return Response(200, dumps(body))

    def live(self, request: Request) -> Response:
        return Response(200, b'{"live":true}')

    def ready(self, request: Request) -> Response:
        if self.state.served is not None:
            return Response(200, b'{"ready":true}')
        body: dict[str, Any] = {"ready": False, "status": self.state.status}
        if self.state.error:
            body["message"] = self.state.error
        return Response(503, dumps(body))

    def model_metadata(self, request: Request) -> Response:
        return Response(200, self._model(request).v2_model)

    def model_ready(self, request: Request) -> Response:
        served = self._model(request)
        return Response(200, dumps({"name": served.loaded.card.model_name, "ready": True}))

    def infer(self, request: Request) -> Response | Deferred:
        served = self._model(request)
        parsed = oip.parse_infer(
            request.body,
            header_length=request.header_length,
            schema=served.schema,
            outputs=oip.outputs_of(served.loaded.card),
        )
        runtime = served.loaded.runtime

        def answer(outputs: Outputs) -> Response:
            labels, probabilities = outputs
            self._observe(served, parsed.x, labels)
            served.exposures.record(request.request_id, request.headers, labels)
            body = oip.infer_response(
                card=served.loaded.card,
                probability_datatype=runtime.probability_datatype,
                labels=labels,
                probabilities=probabilities,
                outputs=parsed.outputs,
                request_id=parsed.id or request.request_id,
            )
            return Response(200, body)

        return self.predict(
            served, request, parsed.x, answer, probabilities="probabilities" in parsed.outputs
        )

    def _model(self, request: Request) -> Served:
        served = self._served()
        card = served.loaded.card
        name = request.path[len("/v2/models/") :].split("/", 1)[0]
        if name != card.model_name:
            raise ServingError.not_found(
                f"model {name!r} is not served here; {card.model_name!r} is"
            )
        if request.version is not None and request.version != card.model_version:
            raise ServingError.not_found(
                f"version {request.version!r} of {name!r} is not served here; "
                f"{card.model_version!r} is"
            )
        return served
