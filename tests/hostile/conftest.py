"""The hostile-input suite: what a model server must survive, whoever started it and however.

Run with ``pytest tests/hostile --base-url http://HOST:PORT`` (the contract options apply:
``--model-card``, ``--golden``), and ``--container ID`` when the server is a local Docker
container: then each case also checks, with ``docker inspect``, that the container still runs,
was never OOM-killed and never restarted, and records its peak memory (the cgroup's own
high-water mark, reset before each case; the engine's stats API where the cgroup is out of
reach). ``pipeline contract-test`` runs it after tests/contract against the image it started
with the contract memory and CPU limits, and puts what each case recorded in the report's
``hostile`` section.

Every case runs inside the :func:`case` fixture, which watches the server while the case runs
(``/v2/health/live`` every 100 ms must answer within :data:`LIVENESS_BUDGET_S`) and then checks
that the server is still whole: ``/v2/health/ready`` is 200 and a golden row gets the
validated label. No answer may be a 5xx (a case that floods on purpose may get 503 with
``Retry-After``), and no error body may show a traceback or a path of the server.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from pipeline.image.engine import Condition, Container, Engine, MemoryGauge
from serving.runtime import regression_error
from tests.contract import clients
from tests.contract.conftest import base_url, budgets, card, golden, http, infer_path, tolerance
from tests.hostile.wire import Answer, probe_liveness

__all__ = ["base_url", "budgets", "card", "golden", "http", "infer_path", "tolerance"]

#: Liveness must answer within this while any case runs (issue #12: "within 1 s").
LIVENESS_BUDGET_S = 1.0
LEAKS = (b"Traceback (most recent call last)", b'File "/', b"site-packages", b"/opt/venv")


@dataclass(frozen=True)
class ServerLimits:
    """What the server says it takes (``/metadata`` ``limits``), or what a server that does not
    say is assumed to take."""

    max_rows: int
    max_body_bytes: int
    body_timeout_s: float
    header_timeout_s: float
    max_connections: int
    large_requests: int
    large_queue: int
    published: bool


@pytest.fixture(scope="session")
def limits(http: httpx.Client) -> ServerLimits:
    published = http.get("/metadata").json().get("limits")
    if isinstance(published, dict):
        return ServerLimits(
            max_rows=int(published["max_rows"]),
            max_body_bytes=int(published["max_body_bytes"]),
            body_timeout_s=float(published["body_timeout_s"]),
            header_timeout_s=float(published["header_timeout_s"]),
            max_connections=int(published["max_connections"]),
            large_requests=int(published["large_requests"]),
            large_queue=int(published["large_queue"]),
            published=True,
        )
    openapi = http.get("/openapi.json").json()
    rows = openapi["components"]["schemas"]["InvocationsRequest"]
    max_rows = max(_max_items(rows) or [10_000])
    return ServerLimits(max_rows, 64 * 2**20, 60.0, 60.0, 256, 1, 0, published=False)


def _max_items(node: Any) -> list[int]:
    found: list[int] = []
    if isinstance(node, dict):
        found += [node["maxItems"]] if isinstance(node.get("maxItems"), int) else []
        for value in node.values():
            found += _max_items(value)
    elif isinstance(node, list):
        for value in node:
            found += _max_items(value)
    return found


@dataclass
class Case:
    """What one case saw: every answer's status, and anything an answer should not show."""

    name: str
    statuses: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    allow_busy: bool = False  # the case floods on purpose: 503 with Retry-After is an answer

    def saw(self, answer: httpx.Response | Answer) -> int | None:
        """Record an answer; return its status (None: closed or reset without one)."""
        if isinstance(answer, httpx.Response):
            status: int | None = answer.status_code
            body, retry_after = answer.content, answer.headers.get("retry-after")
        else:
            status, body, retry_after = answer.status, answer.body, answer.header("retry-after")
        self.statuses[str(status) if status is not None else "closed"] += 1
        busy = self.allow_busy and status == 503 and retry_after
        if status is not None and status >= 500 and not busy:
            self.problems.append(f"answered {status}: {body[:200]!r}")
        leaked = [marker for marker in LEAKS if marker in body]
        if leaked:
            self.problems.append(f"answer {status} shows {leaked}: {body[:300]!r}")
        return status


class Prober:
    """Liveness asked every 100 ms by a process of its own for the whole session (a thread
    here would wait for this process's GIL while a case builds a 40 MB payload, and report
    the suite's own stall as the server's); :meth:`reset` starts a case's account."""

    def __init__(self, base_url: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.slowest = ctx.Value("d", 0.0)
        self.probes = ctx.Value("i", 0)
        self.failures = ctx.Value("i", 0)
        self.stop = ctx.Event()
        args = (base_url, self.slowest, self.probes, self.failures, self.stop)
        self.process = ctx.Process(target=probe_liveness, args=args, daemon=True)
        self.process.start()

    def reset(self) -> None:
        for value in (self.slowest, self.probes, self.failures):
            with value.get_lock():
                value.value = 0

    def account(self) -> tuple[float, int, int]:
        """Slowest answer (s), probes and failed probes since :meth:`reset`."""
        if not self.process.is_alive():
            raise RuntimeError("the liveness prober process died")
        return self.slowest.value, self.probes.value, self.failures.value

    def close(self) -> None:
        self.stop.set()
        self.process.join(15)


class Monitor:
    """Watches the server across cases: its container (when there is one), its memory, its
    liveness, and whether it still gives the validated answer."""

    def __init__(
        self,
        *,
        base_url: str,
        golden: dict[str, Any],
        container: Container | None,
        regression: bool = False,
        tolerance: float = 0.0,
    ) -> None:
        self.base_url = base_url
        self.row = golden["rows"][0]
        #: a regressor's answer matches within the declared relative tolerance, a class exactly
        self.regression, self.tolerance = regression, tolerance
        self.container = container
        self.gauge: MemoryGauge | None = container.memory() if container else None
        self.first: Condition | None = container.condition() if container else None
        self.oom_kills = self.gauge.oom_kills() if self.gauge else None

    def _matches(self, answer: Any) -> bool:
        expected = self.row["label"]
        if not self.regression:
            return bool(answer == [expected])
        if not isinstance(answer, list) or len(answer) != 1 or not isinstance(answer[0], float):
            return False
        return regression_error(answer, [expected]) <= self.tolerance

    def after(self, case: Case, prober: Prober, *, seconds: float, reset: bool) -> dict[str, Any]:
        """Check the server is whole; return what the report records for ``case``."""
        slowest, probes, failures = prober.account()
        record: dict[str, Any] = {
            "statuses": dict(sorted(case.statuses.items())),
            "seconds": round(seconds, 2),
            "liveness_max_ms": round(slowest * 1000, 1),
            "liveness_probes": probes,
        }
        if failures:
            case.problems.append(f"{failures} of {probes} liveness probes failed")
        if slowest > LIVENESS_BUDGET_S:
            case.problems.append(
                f"liveness took {slowest:.2f} s, more than {LIVENESS_BUDGET_S:g} s"
            )
        if self.container is not None and self.gauge is not None:
            peak = self.gauge.peak()
            record["peak_mb"] = None if peak is None else round(peak / 2**20, 1)
            record["peak_since"] = "case start" if reset else "container start"
            record["memory_source"] = self.gauge.source
            limit = self.container.memory_limit()
            record["memory_limit_mb"] = None if limit is None else round(limit / 2**20, 1)
            now = self.container.condition()
            record["container"] = {
                "status": now.status,
                "oom_killed": now.oom_killed,
                "restarts": now.restarts,
            }
            assert self.first is not None
            if (
                not now.running
                or now.oom_killed
                or now.restarts
                or now.started_at != (self.first.started_at)
            ):
                case.problems.append(f"the container did not survive: {now}")
            kills = self.gauge.oom_kills()
            if kills is not None and self.oom_kills is not None and kills > self.oom_kills:
                case.problems.append(f"the OOM killer ended {kills - self.oom_kills} process(es)")
                self.oom_kills = kills
        with clients.client(self.base_url, timeout=30) as client:
            try:
                ready = client.get("/v2/health/ready").status_code
                predicted = client.post(
                    "/invocations", json={"dataframe_records": [self.row["inputs"]]}
                )
                answer = predicted.json().get("predictions") if predicted.is_success else None
            except httpx.HTTPError as exc:
                ready, answer = 0, repr(exc)
        record["ready"] = ready
        record["golden"] = self._matches(answer)
        if ready != 200:
            case.problems.append(f"/v2/health/ready answered {ready} after the case")
        if not record["golden"]:
            case.problems.append(f"the golden row got {answer}, not [{self.row['label']!r}]")
        record["survived"] = not case.problems
        record["problems"] = case.problems
        return record


@pytest.fixture(scope="session")
def monitor(
    pytestconfig: pytest.Config,
    base_url: str,
    golden: dict[str, Any],
    card: dict[str, Any],
    tolerance: float,
) -> Monitor:
    ref = pytestconfig.getoption("--container")
    container = None
    if ref:
        container = Engine.connect().container(str(ref))
        if container is None:
            pytest.exit(f"--container {ref}: no such container", returncode=4)
    return Monitor(
        base_url=base_url,
        golden=golden,
        container=container,
        regression=card.get("task") == "regression",
        tolerance=tolerance,
    )


@pytest.fixture(scope="session")
def prober(base_url: str) -> Iterator[Prober]:
    prober = Prober(base_url)
    yield prober
    prober.close()


@pytest.fixture
def case(
    request: pytest.FixtureRequest,
    monitor: Monitor,
    prober: Prober,
    record_property: Callable[[str, object], None],
) -> Iterator[Case]:
    """One hostile case: the server watched while it runs, then checked whole (module doc)."""
    name = request.node.name.removeprefix("test_")
    current = Case(name)
    reset = monitor.gauge.reset_peak() if monitor.gauge else False
    prober.reset()
    started = time.monotonic()
    yield current
    record = monitor.after(current, prober, seconds=time.monotonic() - started, reset=reset)
    record_property(f"hostile:{name}", json.dumps(record))
    print(f"{name}: {json.dumps(record)}")
    assert not current.problems, f"{name}: {current.problems}"
