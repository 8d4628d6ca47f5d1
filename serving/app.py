"""The prediction service as a raw ASGI application: ``create_app(model_dir=..., settings=...)``.

HTTP contract
=============

The routes, their methods and one line each are in :data:`serving.routes.ROUTES` (the same
table dispatches here and generates ``/openapi.json`` and ``/docs``). What they promise:

* MLflow scoring protocol (a client of ``mlflow models serve`` only changes the URL):
  ``POST /invocations`` takes ``application/json`` with exactly one of ``dataframe_split``,
  ``dataframe_records``, ``instances``, ``inputs``, or ``text/csv`` with a header, and answers
  ``{"predictions": [label, ...]}`` (:mod:`.protocols.mlflow`).
* Open Inference Protocol (KServe V2, Triton clients), ``/v2/models/{name}/versions/{version}``
  too: tensors in, ``label`` and ``probabilities`` out (:mod:`.protocols.oip`).
* Liveness (``/v2/health/live``) answers ``200`` while the process runs and never waits for
  the model. Readiness (``/v2/health/ready``, ``/ping``, ``/health``) answers ``200`` only after
  the model file's sha256 matched ``model.json``, the model loaded, the golden rows matched
  within the runtime's tolerance and a warm-up prediction succeeded (:mod:`.loader`); before
  that ``503 {"ready": false, "status": "loading"|"failed", "message": why}``, forever if
  loading failed (the reason is also logged).

Errors: always JSON ``{"error_code": ..., "message": ...}`` (V2 routes add ``"error"``) naming
the offending field, column or row. Invalid JSON, wrong format, missing/unknown/repeated
columns, wrong types, NaN/inf, empty batch -> 400; more than ``SERVING_MAX_ROWS`` rows,
``SERVING_MAX_BODY_BYTES`` bytes or what parsing the body would take -> 413 (so is a request
that runs out of memory: ``MemoryError`` is never a 500); Content-Type other than JSON/CSV ->
415; unknown route -> 404; wrong method -> 405; model not ready -> 503. Bad input never yields
a 5xx.

Hostile and oversized input (:mod:`.limits`): a body is bounded before it is read (413 from
``Content-Length``), while it is read (413 past the limit; 408 past ``SERVING_BODY_TIMEOUT_S``,
kept by :mod:`.server`), and before it is parsed (413 past ``SERVING_MAX_PARSE_BYTES``). A body
larger than ``SERVING_LARGE_BODY_BYTES`` waits for a slot before it is read, and is parsed and
predicted in a thread, so liveness answers meanwhile; with every slot taken and the queue
full, or after ``SERVING_QUEUE_TIMEOUT_S``: 503 with ``Retry-After``. An answer that leaves
part of a body unread closes the connection. Connections, headers and idle keep-alive are
bounded in :mod:`.server`.

Concurrent 1-row requests for labels on an ONNX classifier may share one model call
(:mod:`.batching`, ``SERVING_BATCH_*``); each keeps its own validation, status and answer.

Every response carries ``X-Request-ID`` (the client's, if it sent a sane one, else generated)
and produces one JSON access-log line (``serving.access``): method, path, status,
latency_ms, request_id. Settings come from ``SERVING_*`` variables (:mod:`.settings`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

from serving.batching import Outputs
from serving.codec import dumps
from serving.errors import ServingError
from serving.handlers import (
    JSON,
    Deferred,
    Handler,
    Handlers,
    Request,
    Response,
    Served,
    not_ready,
    prepare,
)
from serving.limits import Gate, Limits, release_memory
from serving.loader import LoadedModel, ModelState
from serving.logs import JsonFormatter, direct_handler
from serving.metrics import Metrics
from serving.routes import Match, Router
from serving.settings import Settings

__all__ = ["Exchange", "ServingApp", "create_app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_log = logging.getLogger("serving")
_access = logging.getLogger("serving.access")
_CLOSE = (b"connection", b"close")
#: Scope keys shared with serving.server's protocol: the body deadline does not run while a
#: request waits for a slot (the server's wait, not the client's); it set the other on expiry.
WAITING = "serving.waiting_for_slot"
TIMED_OUT = "serving.body_timed_out"
#: uvicorn's set of running request tasks: whether a request has company (serving.batching)
TASKS = "serving.tasks"


class _DisconnectedError(Exception):
    """The client went away before sending the whole body."""


def create_app(*, model_dir: Path, settings: Settings | None = None) -> ServingApp:
    """The ASGI app; the model loads in a background thread at lifespan start-up (or on the
    first request when the server runs no lifespan), so liveness answers at once. With
    ``SERVING_WORKERS`` > 1 each worker finishes loading before it accepts connections."""
    return ServingApp(model_dir=Path(model_dir), settings=settings or Settings.from_env())


class ServingApp:
    def __init__(self, *, model_dir: Path, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics(variant=settings.variant, experiment=settings.experiment)

        def ready(loaded: LoadedModel) -> Served:
            return prepare(loaded, settings=settings, metrics=self.metrics)

        self.state = ModelState(model_dir, settings=settings, prepare=ready)
        self.handlers = Handlers(state=self.state, metrics=self.metrics)
        self.router: Router[Handler] = Router(lambda route: getattr(self.handlers, route.handler))
        self.gate = Gate(
            slots=settings.large_requests,
            queue=settings.large_queue,
            wait_s=settings.queue_timeout_s,
        )
        self._pool: ThreadPoolExecutor | None = None
        self._started = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    def start(self) -> None:
        self._started = True
        self.state.start()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.start()
                if self.settings.workers > 1:
                    # Workers share one listening socket: a worker that accepted before its
                    # model loaded would answer 503 while its siblings are ready. It joins the
                    # pool only once its load ended (ready, or failed and saying why).
                    await asyncio.get_running_loop().run_in_executor(None, self.state.wait)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for handler in _access.handlers:  # the access lines before this one
                    handler.flush()
                _log.info("shutting down: in-flight requests have completed")
                batches, rows = self.metrics.batch_totals
                if batches:
                    _log.info("micro-batching: %d rows in %d batches", rows, batches)
                if self._pool is not None:
                    self._pool.shutdown(wait=False)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        head, match, exchange = self._begin(scope)
        method, path, handler = exchange.method, exchange.path, match.handler
        body_read = False
        try:
            if handler is None:
                raise _no_route(method, path, match.allowed)
            body = b""
            large = False
            if method == "POST":
                served = self.state.served
                if served is None:  # not worth reading a body it cannot serve
                    raise not_ready(self.state)
                body, large = await self._read_body(scope, receive, head.length, served.limits)
                body_read = True
            request = head.request(
                method, path, body, match.version, 0 if large else len(scope.get(TASKS, ()))
            )
            if large:  # parse and predict off the loop; the slot was taken to read the body
                try:
                    loop = asyncio.get_running_loop()
                    response = await loop.run_in_executor(
                        self._executor(), _large, handler, request
                    )
                finally:
                    self.gate.release()
            else:
                answer = handler(request)
                if isinstance(answer, Deferred):  # joined a micro-batch (serving.batching)
                    answer = answer.answer(await answer.outputs)
                response = answer
        except _DisconnectedError:  # or cut off by the body deadline, which answered 408
            status = 408 if scope.get(TIMED_OUT) else 499
            self.finish(exchange, status)
            return
        except Exception as exc:
            response = exchange.failed(exc)
        headers = exchange.headers(response)
        if not body_read and (head.chunked or (head.length is not None and head.length != b"0")):
            headers.append(_CLOSE)  # the rest of the body is never read: no keep-alive
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})
        self.finish(exchange, response.status)

    def whole(
        self, scope: Scope, body: bytes, in_flight: int
    ) -> tuple[Exchange, Response | Deferred]:
        """A request whose body has all arrived (``serving.server`` calls this without an ASGI
        task when its head and body came in one read and the body is not large): the answer,
        or a micro-batch's :class:`Deferred` to settle with :meth:`Exchange.settle`. Then
        :meth:`finish`. Answers exactly as :meth:`_http` would."""
        head, match, exchange = self._begin(scope)
        method, path = exchange.method, exchange.path
        try:
            if match.handler is None:
                raise _no_route(method, path, match.allowed)
            if method == "POST" and self.state.served is None:
                raise not_ready(self.state)
            return exchange, match.handler(
                head.request(method, path, body, match.version, in_flight)
            )
        except Exception as exc:
            return exchange, exchange.failed(exc)

    def _begin(self, scope: Scope) -> tuple[_Head, Match[Handler], Exchange]:
        started = time.perf_counter()
        if not self._started:
            self.start()
        method: str = scope["method"]
        path: str = scope["path"]
        head = _Head(scope["headers"])
        match = self.router.match(method, path)
        exchange = Exchange(method, path, match.template, match.allowed, head.request_id, started)
        return head, match, exchange

    def quick_limit(self) -> int:
        """Bodies up to this many bytes may take :meth:`whole` (larger ones wait for a slot
        and are read and predicted off the loop); 0 until the model is served."""
        served = self.state.served
        if served is None:
            return 0
        return min(served.limits.large_body_bytes, served.limits.max_body_bytes)

    async def _read_body(
        self, scope: Scope, receive: Receive, length: bytes | None, limits: Limits
    ) -> tuple[bytes, bool]:
        """The whole body, and whether it is large (then a gate slot is held for the caller
        to release after predicting). Refused before reading from Content-Length, and past
        the byte limit while reading. The body deadline is the server's (serving.server); it
        does not run while the request waits for a slot, which ``WAITING`` tells it."""
        limit = limits.max_body_bytes
        declared = int(length) if length is not None and length.isdigit() else None
        if declared is not None and declared > limit:
            raise _too_large(declared, limits)
        large = declared is not None and declared > limits.large_body_bytes
        if large:
            await self._slot(scope)
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _DisconnectedError
                chunk: bytes = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise _too_large(size, limits)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), large
                if not large and size > limits.large_body_bytes:  # chunked: no length given
                    await self._slot(scope)
                    large = True
        except BaseException:
            if large:
                self.gate.release()
            raise

    async def _slot(self, scope: Scope) -> None:
        scope[WAITING] = True
        try:
            await self.gate.acquire()
        finally:
            scope[WAITING] = False

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=self.settings.large_requests, thread_name_prefix="serving-large"
            )
        return self._pool

    def finish(self, exchange: Exchange, status: int) -> None:
        """The request's metrics and its access-log line."""
        method, path, request_id = exchange.method, exchange.path, exchange.request_id
        seconds = time.perf_counter() - exchange.started
        self.metrics.observe_request(exchange.template, method, status, seconds)
        if not self.settings.access_log:
            return
        handler = direct_handler(_access, logging.INFO)
        if handler is None and not _access.isEnabledFor(logging.INFO):
            return
        fields = {
            "method": method,
            "path": path,
            "status": status,
            "latency_ms": round(seconds * 1000, 3),
            "request_id": request_id,
        }
        if handler is not None:  # as configured by the server: the line, without a record
            formatter = cast(JsonFormatter, handler.formatter)
            line = formatter.line(
                time.time(), "INFO", _access.name, f"{method} {path} {status}", fields
            )
            with handler.lock:  # type: ignore[union-attr]
                handler.add(line)
        else:
            # makeRecord + handle: what Logger.info does, minus walking the stack for the
            # caller's file and line, which an access log line does not need (~30 % cheaper).
            record = _access.makeRecord(
                _access.name, logging.INFO, __file__, 0, "%s %s %d", (method, path, status),
                None, extra={"fields": fields},
            )  # fmt: skip
            _access.handle(record)


class _Head:
    """What the app reads from a request's headers, in one pass."""

    __slots__ = ("chunked", "content_type", "header_length", "headers", "length", "request_id")

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.headers = headers
        content_type = request_id = header_length = length = None
        chunked = False
        for name, value in headers:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"x-request-id":
                request_id = value.decode("latin-1")
            elif name == b"content-length":
                length = value
            elif name == b"inference-header-content-length":
                header_length = value.decode("latin-1")
            elif name == b"transfer-encoding":
                chunked = True
        if not request_id or len(request_id) > 200 or not request_id.isprintable():
            request_id = os.urandom(16).hex()  # a uuid4's entropy at a quarter of its cost
        self.content_type, self.request_id, self.header_length = (
            content_type,
            request_id,
            header_length,
        )
        self.length: bytes | None = length
        self.chunked = chunked

    def request(
        self, method: str, path: str, body: bytes, version: str | None, in_flight: int
    ) -> Request:
        return Request(
            method, path, body, self.content_type, self.request_id, self.header_length, version,
            self.headers, in_flight,
        )  # fmt: skip


class Exchange:
    """One request as the app's log and metrics see it, from its head to its answer."""

    __slots__ = ("allowed", "method", "path", "request_id", "started", "template")

    def __init__(
        self,
        method: str,
        path: str,
        template: str,
        allowed: tuple[str, ...],
        request_id: str,
        started: float,
    ) -> None:
        self.method, self.path, self.template, self.allowed = method, path, template, allowed
        self.request_id, self.started = request_id, started

    def failed(self, exc: Exception) -> Response:
        """The answer to what a handler raised: its own status for a ServingError, 413 for
        running out of memory (an allocation the bounds let through: the request's fault),
        else 500 with the traceback logged (a bug, not bad input)."""
        oip = self.path.startswith("/v2")
        if isinstance(exc, ServingError):
            return _error(exc, oip=oip, allowed=self.allowed)
        method, path, request_id = self.method, self.path, self.request_id
        if isinstance(exc, MemoryError):
            _log.warning("out of memory on %s %s (request %s)", method, path, request_id)
            return _error(_out_of_memory(), oip=oip, allowed=self.allowed)
        _log.error("unhandled error on %s %s (request %s)", method, path, request_id, exc_info=exc)
        internal = ServingError(500, "INTERNAL_ERROR", f"internal error; request {request_id}")
        return _error(internal, oip=oip, allowed=self.allowed)

    def settle(self, deferred: Deferred, outputs: asyncio.Future[Outputs]) -> Response:
        """A micro-batched answer once its batch has run (``outputs`` is done)."""
        try:
            return deferred.answer(outputs.result())
        except Exception as exc:
            return self.failed(exc)

    def headers(self, response: Response) -> list[tuple[bytes, bytes]]:
        return [
            (b"content-type", response.content_type),
            (b"content-length", str(len(response.body)).encode()),
            (b"x-request-id", self.request_id.encode("latin-1")),
            *response.headers,
        ]


def _large(handler: Handler, request: Request) -> Response:
    """A large request, in a worker thread; then its freed memory goes back to the system.
    It never joins a micro-batch (``in_flight`` is 0), so the answer is a Response."""
    try:
        response = handler(request)
        assert isinstance(response, Response)
        return response
    finally:
        release_memory()


def _no_route(method: str, path: str, allowed: tuple[str, ...]) -> ServingError:
    if allowed:
        return ServingError(405, "METHOD_NOT_ALLOWED", f"{method} {path}: use {', '.join(allowed)}")
    return ServingError(404, "ENDPOINT_NOT_FOUND", f"no route {path}; see /docs for the routes")


def _too_large(size: int, limits: Limits) -> ServingError:
    why = " (derived from SERVING_MAX_ROWS and the model's columns)" * limits.body_limit_derived
    return ServingError.too_large(
        f"the body has {size} bytes or more; this server takes at most {limits.max_body_bytes}"
        f"{why}: set SERVING_MAX_BODY_BYTES to change it"
    )


def _out_of_memory() -> ServingError:
    return ServingError.too_large(
        "this request needs more memory than the server has left; send fewer rows "
        "(SERVING_MAX_ROWS bounds them), or give the container more memory"
    )


def _error(exc: ServingError, *, oip: bool, allowed: tuple[str, ...]) -> Response:
    body: dict[str, str] = {"error_code": exc.error_code, "message": exc.message}
    if oip:
        body["error"] = exc.message
    response = Response(exc.status, dumps(body), JSON, list(exc.headers))
    if exc.status == 405:
        response.headers.append((b"allow", ", ".join(allowed).encode()))
    return response
