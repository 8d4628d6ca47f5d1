"""HAProxy's runtime API on the entry's stats socket: the only module that speaks it.

The socket (``/tmp/haproxy.sock``, level admin) stays inside the entry container; a small
Python client runs there through ``docker exec`` (:meth:`.swarm.Swarm.run_in_tasks`).
A ramp replaces the split's map in one transaction: ``prepare map`` opens a new version,
``add map @<version>`` fills it with all 100 lines, ``commit map @<version>`` swaps it in
atomically (requests see the old map or the new one, never a mix), and ``show map`` reads it
back. No reload, no restart: connections and other state survive.

The autoscaler reads request counters the same way (``show stat``, one CSV line per proxy and
server): :func:`backend_counters`.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass

from pipeline.ab.assignment import BUCKETS, bucket_map
from pipeline.deploy.split import MAP_PATH
from pipeline.deploy.swarm import Swarm
from pipeline.errors import SwarmError

__all__ = [
    "CLIENT",
    "Counters",
    "apply_share",
    "backend_counters",
    "expected",
    "live_maps",
    "parse_map",
    "parse_stat",
]

log = logging.getLogger("pipeline.deploy")
SOCKET = "/tmp/haproxy.sock"
CLIENT = f"""
import re, socket, sys

def ask(command):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect({SOCKET!r})
    s.sendall(command.encode() + b"\\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    return data.decode()

mode, path = sys.argv[1], sys.argv[2]
if mode == "set":
    payload = sys.stdin.read().rstrip("\\n")
    answer = ask("prepare map " + path)
    found = re.search(r"New version created: (\\d+)", answer)
    if not found:
        sys.exit("prepare map: " + answer.strip())
    version = found.group(1)
    answer = ask("add map @%s %s <<\\n%s\\n" % (version, path, payload))
    if answer.strip():
        sys.exit("add map: " + answer.strip())
    answer = ask("commit map @%s %s" % (version, path))
    if answer.strip():
        sys.exit("commit map: " + answer.strip())
sys.stdout.write(ask(path if mode == "ask" else "show map " + path))
"""


def parse_map(text: str) -> dict[int, str]:
    """``show map`` lines (``0x55d0... <bucket> <value>``) as bucket -> value."""
    entries = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1].isdigit():
            entries[int(parts[1])] = parts[2]
    return entries


def expected(share: int) -> dict[int, str]:
    """The map at ``share`` %, as :func:`parse_map` reads it back."""
    return {int(k): v for k, v in (line.split(" ") for line in bucket_map(share).splitlines())}


def live_maps(swarm: Swarm, entry_service: str) -> list[dict[int, str]]:
    """The split's map as each running entry task holds it."""
    outputs = swarm.run_in_tasks(entry_service, ["python3", "-c", CLIENT, "show", MAP_PATH])
    return [parse_map(text) for text in outputs]


def apply_share(swarm: Swarm, entry_service: str, share: int) -> bool:
    """Make every running entry task split at ``share`` %; True when one had to change."""
    want = expected(share)
    changed = False
    for found in live_maps(swarm, entry_service):
        if found == want:
            continue
        before = sum(v.startswith("b") for v in found.values())
        log.info(
            "the entry splits %d of %d buckets to B; moving it to %d %% (runtime API, no reload)",
            before,
            BUCKETS,
            share,
        )
        changed = True
        break
    if not changed:
        return False
    outputs = swarm.run_in_tasks(
        entry_service, ["python3", "-c", CLIENT, "set", MAP_PATH], stdin=bucket_map(share)
    )
    for text in outputs:
        if parse_map(text) != want:
            raise SwarmError(
                f"the entry's map did not take the share {share} % (read back: "
                f"{sum(v.startswith('b') for v in parse_map(text).values())} buckets on B)"
            )
    return True


@dataclass(frozen=True)
class Counters:
    """Cumulative request counters of one backend in one HAProxy process (they restart at 0
    when the entry restarts)."""

    total: int  # the backend's requests (``req_tot``; ``stot`` where req_tot is empty)
    servers: dict[str, int]  # per server slot (task1, task2, ..., spare1, ...), same counter


def parse_stat(text: str, backend: str) -> Counters | None:
    """``show stat`` CSV (a ``# pxname,svname,...`` header) as :class:`Counters` of
    ``backend``; None when the answer has no such backend."""
    lines = text.lstrip("# ").splitlines()
    total: int | None = None
    servers: dict[str, int] = {}

    def count(row: dict[str, str]) -> int:
        value = (row.get("req_tot") or "").strip() or (row.get("stot") or "").strip()
        return int(value) if value.isdigit() else 0

    for row in csv.DictReader(lines):
        if row.get("pxname") != backend:
            continue
        name = row.get("svname") or ""
        if name == "BACKEND":
            total = count(row)
        elif name != "FRONTEND":
            servers[name] = count(row)
    return None if total is None else Counters(total=total, servers=servers)


def backend_counters(swarm: Swarm, entry_service: str, backend: str = "model") -> Counters:
    """The request counters of ``backend`` in the entry's HAProxy (its running task on this
    node; with several, their sum)."""
    outputs = swarm.run_in_tasks(entry_service, ["python3", "-c", CLIENT, "ask", "show stat"])
    found = [c for c in (parse_stat(text, backend) for text in outputs) if c is not None]
    if not found:
        raise SwarmError(
            f"no running task of {entry_service} on this node reports a backend {backend!r} "
            "(is the stack deployed, and is this node the one running the entry?)"
        )
    servers: dict[str, int] = {}
    for counters in found:
        for name, value in counters.servers.items():
            servers[name] = servers.get(name, 0) + value
    return Counters(total=sum(c.total for c in found), servers=servers)
