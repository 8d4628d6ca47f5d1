"""The load generator: Debian's `wrk`, pinned to one core, optionally inside a container's
network namespace (``nsenter -n``), so that containers are measured on their own loopback with
no docker-proxy or NAT between them and the generator, exactly as the host servers are."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

GENERATOR_CORE = 0
SERVER_CORE = 1

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}
_PERCENTILE = re.compile(r"^\s*(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)
_REQUESTS = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)", re.MULTILINE)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


class LoadError(RuntimeError):
    """wrk could not run or printed something we cannot read."""


@dataclass(frozen=True)
class Target:
    """Where to send load: a URL, seen from the host or from a container's namespace."""

    url: str
    netns_pid: int | None = None  # a process in the namespace to enter; None: the host's


@dataclass(frozen=True)
class Sample:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # non-2xx responses plus socket errors (connect, read, write, timeout)


def post_script(*, body: Path, script: Path) -> Path:
    """A wrk Lua script that POSTs ``body`` as JSON on every request."""
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'local f = assert(io.open("{body.resolve()}", "rb"))\n'
        'wrk.body = f:read("*a")\n'
        "f:close()\n"
    )
    return script


def wrk_command(target: Target, *, script: Path, connections: int, seconds: int) -> list[str]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise LoadError("wrk is not installed: `apt-get install wrk` (make bench does this)")
    command = ["taskset", "-c", str(GENERATOR_CORE), wrk, "-t1", f"-c{connections}"]
    command += [f"-d{seconds}s", "--timeout", "10s", "--latency", "-s", str(script), target.url]
    if target.netns_pid is not None:
        command = ["nsenter", "-t", str(target.netns_pid), "-n", *command]
    return command


def run_wrk(target: Target, *, script: Path, connections: int, seconds: int) -> Sample:
    command = wrk_command(target, script=script, connections=connections, seconds=seconds)
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    if done.returncode != 0:
        raise LoadError(f"wrk exited {done.returncode}: {done.stderr.strip()[:300]}")
    return parse(done.stdout)


def parse(output: str) -> Sample:
    """Read wrk's summary (run with --latency)."""
    percentiles = {int(p): float(v) * _UNITS[u] for p, v, u in _PERCENTILE.findall(output)}
    requests, rps = _REQUESTS.search(output), _RPS.search(output)
    if requests is None or rps is None or set(percentiles) != {50, 99}:
        raise LoadError(f"cannot read wrk's output:\n{output[-800:]}")
    errors = sum(int(n) for n in _NON_2XX.findall(output))
    socket = _SOCKET.search(output)
    if socket:
        errors += sum(int(n) for n in socket.groups())
    return Sample(
        rps=float(rps.group(1)),
        p50_ms=percentiles[50],
        p99_ms=percentiles[99],
        requests=int(requests.group(1)),
        errors=errors,
    )
