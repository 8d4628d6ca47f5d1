"""Run the app under uvicorn with uvloop and httptools.

uvloop + httptools rather than asyncio + h11: measured here they carry about twice the requests
per second, and with ``--workers`` the asyncio/h11 pair loses TCP_NODELAY on accepted sockets
(uvicorn #3149), adding ~40 ms per keep-alive request. SIGTERM (and SIGINT) stop accepting,
let in-flight requests finish within ``SERVING_GRACEFUL_TIMEOUT`` seconds, run the lifespan
shutdown, and exit 0.

Connections are bounded here, where uvicorn leaves them open (:class:`GuardedProtocol`):

* a request's line and headers must arrive within ``SERVING_HEADER_TIMEOUT_S`` (+1 s) of the
  connection or of the request's first byte, and its body within ``SERVING_BODY_TIMEOUT_S``
  (+1 s) of its headers, else 408 and the connection is closed (closed quietly if it never
  sent a byte): uvicorn has no such deadlines, and its keep-alive timer restarts on every
  byte, so a client dripping a byte a second held a connection forever;
* the request line and headers may hold :data:`MAX_HEAD_BYTES`, else 431: uvicorn keeps
  every header, and 110 MB of headers cost the process 255 MB;
* past ``SERVING_MAX_CONNECTIONS`` open connections a request answers 503 with
  ``Retry-After`` (uvicorn's ``limit_concurrency``, in the JSON envelope), except the health
  routes, which cost microseconds and must answer an orchestrator; past that plus
  :data:`HEALTH_RESERVE` a new connection is closed at once, before it costs a parser;
* an idle keep-alive connection closes after ``SERVING_KEEPALIVE_TIMEOUT_S``.

A request whose line, headers and whole body arrive in one read (nearly every prediction
request: a 100-row body is ~20 KB) is answered without uvicorn's per-request machinery: no
task, no ASGI ``receive``/``send`` messages, the response written in one ``write``
(:meth:`GuardedProtocol.on_message_complete`, :meth:`ServingApp.whole`). The app answers it
exactly as on the ASGI path (same handlers, errors, headers, access-log line and metrics; a
test holds the two paths' answers equal), and the requests of one wake-up are answered
together at the end of the loop's turn, so they still share micro-batches. Measured, c=8,
1 row: 256 -> 215 us of CPU per request in the container (tools/bench/profile.md). A body
still arriving, a large body (it waits for a slot), ``HEAD``, ``Expect: 100-continue``, a
pipelined request and the 503 of a full server take uvicorn's ASGI path.

A reverse proxy in front is still wise on a public network: it holds slow clients in an
event-driven buffer, limits connections and rates per client address (this server sees only
totals), terminates TLS, and can take request bodies to disk. Set its idle timeout below
``SERVING_KEEPALIVE_TIMEOUT_S``, or raise that, so it never reuses a connection this server is
closing.
"""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, cast

import httptools
import uvicorn
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

from serving.app import TASKS, TIMED_OUT, WAITING, Exchange, ServingApp, create_app
from serving.batching import Outputs
from serving.codec import dumps
from serving.handlers import Deferred, Response
from serving.logs import configure_logging
from serving.settings import Settings

__all__ = ["GuardedProtocol", "app_from_env", "run", "serve"]

#: Request line plus headers, in bytes (nginx takes 4 x 8 KiB by default; h11 16 KiB).
MAX_HEAD_BYTES = 64 * 1024
#: Connections beyond SERVING_MAX_CONNECTIONS kept for health probes before new ones are closed.
HEALTH_RESERVE = 64
_HEALTH = frozenset((b"/v2/health/live", b"/v2/health/ready", b"/ping", b"/health"))
_FRESH = object()


def _canned(status: int, reason: str, code: str, message: str, *extra: bytes) -> bytes:
    """A whole response, written straight to the socket; the connection closes after it."""
    body = dumps({"error_code": code, "message": message})
    head = [
        f"HTTP/1.1 {status} {reason}".encode(),
        b"content-type: application/json",
        b"content-length: " + str(len(body)).encode(),
        b"connection: close",
        *extra,
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


async def _busy(scope: Any, receive: Any, send: Any) -> None:
    """What a request gets past SERVING_MAX_CONNECTIONS: 503 in the envelope, Retry-After."""
    body = dumps(
        {
            "error_code": "TEMPORARILY_UNAVAILABLE",
            "message": "too many open connections (SERVING_MAX_CONNECTIONS); retry later",
        }
    )
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", b"1"),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline, a header size bound, a hard cap on
    connections and health routes exempt from the concurrency limit (module docstring).
    :meth:`configure` sets the bounds from the settings, in each worker process.

    A well-formed request costs one attribute check more than uvicorn's own: deadlines are
    kept by one sweeper task per server (a check a second over the open connections), not a
    timer per request, and the head is measured per chunk that leaves it incomplete, not per
    header (the parser callbacks run once per header of every request).
    """

    header_timeout_s: ClassVar[float] = 5.0
    body_timeout_s: ClassVar[float] = 10.0
    max_connections: ClassVar[int | None] = None
    _sweepers: ClassVar[dict[int, asyncio.Task[None]]] = {}

    @classmethod
    def configure(cls, settings: Settings) -> None:
        cls.header_timeout_s = settings.header_timeout_s
        cls.body_timeout_s = settings.body_timeout_s
        cls.max_connections = settings.max_connections

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limit_concurrency = None  # applied in on_headers_complete, health routes excepted
        self._refused = False
        self._head_scope: object = None  # the request whose head is being measured
        self._head_bytes = 0  # of reads that left it incomplete
        self._read = 0  # bytes of the read being parsed
        self._watched: tuple[object, float] | None = None  # (state seen, since) by the sweeper
        self._parsing = False  # inside data_received's feed_data
        self._held: RequestResponseCycle | None = None  # its task waits for the read's end

    # -- connection ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        cap = self.max_connections
        if cap is not None and len(self.connections) >= cap + HEALTH_RESERVE:
            self.transport = transport
            self._refuse(
                503,
                "Service Unavailable",
                "TEMPORARILY_UNAVAILABLE",
                "too many open connections (SERVING_MAX_CONNECTIONS); retry later",
                b"retry-after: 1",
            )
            return
        super().connection_made(transport)
        key = id(self.server_state)
        if key not in self._sweepers:
            self._sweepers[key] = self.loop.create_task(_sweep(self.server_state))

    def data_received(self, data: bytes) -> None:
        """uvicorn's, then: a head still incomplete after this read counts against
        :data:`MAX_HEAD_BYTES`, so an endless head is cut off within a read of the bound: the
        part parsed so far when it began in this read (the read may also hold whole requests
        before it: a client pipelining a burst), the whole read when it began in an earlier
        one; a head that completes is measured exactly (:meth:`on_headers_complete`)."""
        if self._refused:
            return
        self._unset_keepalive_if_required()
        self._read = len(data)
        self._parsing = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:  # _Refused, from a callback, arrives wrapped in one
            if self._refused:
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        finally:
            self._parsing = False
            held, self._held = self._held, None
            if held is not None:  # its body is still arriving: the app reads it (ASGI)
                self._start_task(held, self.app)
        if self.scope is not None and (self.cycle is None or self.cycle.scope is not self.scope):
            if self._head_scope is not self.scope:  # the head began in this read
                self._head_scope = self.scope
                self._head_bytes = self._head_size()
            else:  # it was incomplete before this read and still is: all of it is head
                self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse_head()

    def on_headers_complete(self) -> None:
        if self._read > MAX_HEAD_BYTES or self._head_bytes:  # else the head fits in a read
            size = self._head_size()
            self._head_bytes = 0
            if size > MAX_HEAD_BYTES:
                self._refuse_head()
                raise _Refused  # stops the parser before the app is called
        cap = self.max_connections
        if (
            cap is not None
            and (len(self.connections) >= cap or len(self.tasks) >= cap)
            and self.url not in _HEALTH
        ):
            app, self.app = self.app, _busy
            try:
                super().on_headers_complete()
            finally:
                self.app = app
        else:
            super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None:
            cast(dict[str, Any], cycle.scope)[TASKS] = self.tasks

    # -- whole requests, without an ASGI task ------------------------------------------

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        """uvicorn starts a request's task as soon as its head is parsed. A request to the
        app (not the 503 of a full server, not HEAD, not waiting to send ``100 Continue``)
        that arrives during a read waits for the read's end instead: if its body completes
        in that read, :meth:`on_message_complete` answers it without the task."""
        if (
            self._parsing
            and app is self.app
            and isinstance(app, ServingApp)
            and cycle.scope["method"] != "HEAD"
            and not cycle.waiting_for_100_continue
        ):
            self._held = cycle
        else:
            self._start_task(cycle, app)

    def _start_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        """uvicorn's start of a request's task, its cycle writing through :class:`_OneWrite`
        (except HEAD: its response writes no body to carry the head)."""
        if cycle.scope["method"] != "HEAD" and not isinstance(cycle.transport, _OneWrite):
            cycle.transport = _OneWrite(self.transport, cycle)  # type: ignore[assignment]
        super()._start_asgi_task(cycle, app)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        cycle = self._held
        if cycle is None or cycle is not self.cycle or cycle.response_complete:
            return
        app = cast(ServingApp, self.app)
        if len(cycle.body) > app.quick_limit():
            return  # a large body is read and predicted off the loop, in a slot (ASGI)
        self._held = None
        _Whole.of(self.server_state, self.loop).add(self, cycle, app)

    def answer(self, cycle: RequestResponseCycle, app: ServingApp, in_flight: int) -> None:
        """Answer a request whose body has all arrived (from :class:`_Whole`)."""
        try:
            exchange, answer = app.whole(cast(Any, cycle.scope), bytes(cycle.body), in_flight)
            cycle.body = bytearray()
            if isinstance(answer, Deferred):  # joined a micro-batch (serving.batching)
                deferred = answer
                deferred.outputs.add_done_callback(
                    lambda outputs: self._settle(cycle, app, exchange, deferred, outputs)
                )
            else:
                self._reply(cycle, app, exchange, answer)
        except Exception:
            self._failed(cycle)

    def _settle(
        self,
        cycle: RequestResponseCycle,
        app: ServingApp,
        exchange: Exchange,
        deferred: Deferred,
        outputs: asyncio.Future[Outputs],
    ) -> None:
        try:
            self._reply(cycle, app, exchange, exchange.settle(deferred, outputs))
        except Exception:
            self._failed(cycle)

    def _failed(self, cycle: RequestResponseCycle) -> None:
        """What uvicorn does when an ASGI app raises: log it, then 500 if no response has
        started (the connection closes), else close the connection. The app answers its own
        errors; this is for a bug outside its handlers (the log line, the write)."""
        self.logger.exception("error answering a request")
        started, cycle.response_complete = cycle.response_started, True
        if self.transport.is_closing():
            return
        if started:
            self.transport.close()
        else:
            self._refuse(500, "Internal Server Error", "INTERNAL_ERROR", "internal server error")

    def _reply(
        self, cycle: RequestResponseCycle, app: ServingApp, exchange: Exchange, response: Response
    ) -> None:
        """Write the response in one ``write`` as uvicorn's cycle would (status line, the
        app's headers, ``connection: close`` when the connection will not be kept), then
        what uvicorn does when a response completes (a pipelined request starts, or the
        keep-alive timer)."""
        keep = cycle.keep_alive  # a graceful shutdown may have turned it off meanwhile
        if not cycle.disconnected and not self.transport.is_closing():
            out = [STATUS_LINE[response.status]]
            for name, value in exchange.headers(response):
                out += (name, b": ", value, b"\r\n")
            out.append(b"\r\n" if keep else b"connection: close\r\n\r\n")
            out.append(response.body)
            self.transport.write(b"".join(out))
        cycle.response_started = cycle.response_complete = True
        cycle.more_body = False
        if not keep:
            self.transport.close()
        app.finish(exchange, response.status)
        cycle.on_response()

    # -- bounds --------------------------------------------------------------------------

    def _head_size(self) -> int:
        """The request line and the headers parsed so far, in bytes (a header still arriving
        is held by the parser until it ends: at most one read more)."""
        return len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)

    def sweep(self, now: float) -> None:
        """Called about once a second: close a connection that has waited too long for what
        its client owes: a request's line and headers, or (fresh) anything, for
        SERVING_HEADER_TIMEOUT_S; a body the app is reading, for SERVING_BODY_TIMEOUT_S
        (not while the app waits for a slot to read it: that wait is the server's)."""
        if self._refused or self.transport is None or self.transport.is_closing():
            return
        cycle = self.cycle
        state: object
        if cycle is not None and not cycle.response_complete:
            if not cycle.more_body or cycle.response_started or cycle.scope.get(WAITING):
                self._watched = None  # not waiting for the client
                return
            state, timeout = cycle, self.body_timeout_s
        elif self.scope is None:
            state, timeout = _FRESH, self.header_timeout_s  # connected, not a byte yet
        elif cycle is None or cycle.scope is not self.scope:
            state, timeout = self.scope, self.header_timeout_s  # inside a request's head
        else:
            self._watched = None  # idle between requests: uvicorn's keep-alive timer
            return
        if self._watched is None or self._watched[0] is not state:
            self._watched = (state, now)
            return
        if now - self._watched[1] < timeout:
            return
        if state is _FRESH:  # never sent a byte: close quietly, as nginx does
            self._refused = True
            self.transport.close()
        elif state is cycle and cycle is not None:
            cast(dict[str, Any], cycle.scope)[TIMED_OUT] = True  # for the app's log and metrics
            cycle.disconnected = True  # the app's next receive() says so, and it stops
            cycle.message_event.set()
            self._refuse(
                408,
                "Request Timeout",
                "REQUEST_TIMEOUT",
                f"the body did not arrive within {timeout:g} s (SERVING_BODY_TIMEOUT_S)",
            )
        else:
            self._refuse(
                408,
                "Request Timeout",
                "REQUEST_TIMEOUT",
                f"the request line and headers did not arrive within {timeout:g} s "
                "(SERVING_HEADER_TIMEOUT_S)",
            )

    def _refuse_head(self) -> None:
        self._refuse(
            431,
            "Request Header Fields Too Large",
            "HEADERS_TOO_LARGE",
            f"the request line and headers passed {MAX_HEAD_BYTES} bytes, the most this "
            "server reads before a body",
        )

    def _refuse(self, status: int, reason: str, code: str, message: str, *extra: bytes) -> None:
        """Answer ``status`` straight on the socket and close the connection."""
        self._refused = True
        self.transport.write(_canned(status, reason, code, message, *extra))
        self.transport.close()


class _OneWrite:
    """The transport a (non-HEAD) request's cycle writes through: the response's head, which
    uvicorn writes on its own, waits for the first body write (every non-HEAD response makes
    one, empty or not) and goes out with it in one ``write``: one syscall and one loopback
    delivery fewer per request (tools/bench/profile.md). What is written before the response
    starts (``100 Continue``) goes out at once; :meth:`close` sends a head still waiting."""

    __slots__ = ("_cycle", "_head", "_headed", "_transport")

    def __init__(self, transport: asyncio.Transport, cycle: Any) -> None:
        self._transport, self._cycle = transport, cycle
        self._head: bytes | None = None
        self._headed = False

    def write(self, data: bytes) -> None:
        if self._transport.is_closing():  # the client reset the connection: nobody to tell
            return  # (uvloop raises on a write to a closed handle; asyncio would drop it)
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head + data)
        elif not self._headed and self._cycle.response_started:
            self._head, self._headed = data, True  # the head; the body follows in this task
        else:
            self._transport.write(data)

    def close(self) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            self._transport.write(head)
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()


class _Whole:
    """The requests answered without an ASGI task (:meth:`GuardedProtocol.on_message_complete`),
    one list per event loop. They are answered together at the end of the loop's turn, so every
    request whose bytes arrived in the same wake-up is counted in flight and may join one
    micro-batch, as they do on uvicorn's path (where each is a task run on the next turn)."""

    _by_state: ClassVar[dict[int, _Whole]] = {}

    def __init__(self, state: ServerState, loop: asyncio.AbstractEventLoop) -> None:
        self._state, self._loop = state, loop
        self._pending: list[tuple[GuardedProtocol, RequestResponseCycle, ServingApp]] = []

    @classmethod
    def of(cls, state: ServerState, loop: asyncio.AbstractEventLoop) -> _Whole:
        whole = cls._by_state.get(id(state))
        if whole is None or whole._state is not state or whole._loop is not loop:
            whole = cls._by_state[id(state)] = cls(state, loop)
        return whole

    def add(self, protocol: GuardedProtocol, cycle: RequestResponseCycle, app: ServingApp) -> None:
        if not self._pending:
            self._loop.call_soon(self._run)
        self._pending.append((protocol, cycle, app))

    def _run(self) -> None:
        pending, self._pending = self._pending, []
        in_flight = len(pending) + len(self._state.tasks)
        for protocol, cycle, app in pending:
            protocol.answer(cycle, app, in_flight)


class _Refused(Exception):
    """Raised in a parser callback to stop parsing a request already answered."""


async def _sweep(state: ServerState) -> None:
    """One per server: the deadlines of every connection, once a second."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(1.0)
        now = loop.time()
        for connection in list(state.connections):
            if isinstance(connection, GuardedProtocol):
                connection.sweep(now)


def serve(*, model_dir: Path, host: str, port: int) -> None:
    """Entry point for ``pipeline serve``: other settings come from ``SERVING_*`` variables."""
    run(replace(Settings.from_env(), model_dir=Path(model_dir), host=host, port=port))


def run(settings: Settings) -> None:
    configure_logging(settings.log_level)
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "lifespan": "on",
        "access_log": False,  # the app writes its own structured access log
        "log_config": None,
        "server_header": False,
        "date_header": False,
        # uvicorn's X-Forwarded-* rewrite of the client address and scheme: nothing here
        # reads either, and the middleware cost every request a header scan.
        "proxy_headers": False,
        "timeout_graceful_shutdown": settings.graceful_timeout,
        "log_level": settings.log_level,
        "http": GuardedProtocol,
        "timeout_keep_alive": settings.keepalive_timeout_s,
    }
    # uvicorn re-raises the signal it shut down on; with these handlers that is a no-op and
    # the process exits 0 after a graceful shutdown instead of dying by SIGTERM.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _ignore)
    if settings.workers == 1:
        GuardedProtocol.configure(settings)
        app = create_app(model_dir=settings.model_dir, settings=settings)
        uvicorn.Server(uvicorn.Config(app, **options)).run()
        return
    # Worker processes rebuild the app from the environment: hand them the resolved settings.
    os.environ.update(
        SERVING_MODEL_DIR=str(settings.model_dir),
        SERVING_HOST=settings.host,
        SERVING_PORT=str(settings.port),
    )
    uvicorn.run("serving.server:app_from_env", factory=True, workers=settings.workers, **options)


def app_from_env() -> ServingApp:
    """App factory each worker process calls (``SERVING_WORKERS`` > 1)."""
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    GuardedProtocol.configure(settings)
    return create_app(model_dir=settings.model_dir, settings=settings)


def _ignore(signum: int, frame: object) -> None:
    """Placeholder handler: uvicorn installs its own while serving."""
