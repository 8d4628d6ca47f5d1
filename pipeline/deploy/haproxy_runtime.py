"""HAProxy's runtime API on the entry's stats socket: the only module that speaks it.

The socket (``/tmp/haproxy.sock``, level admin) stays inside the entry container; a small
Python client runs there through ``docker exec`` (:meth:`.swarm.Swarm.run_in_tasks`).
A ramp replaces the split's map in one transaction: ``prepare map`` opens a new version,
``add map @<version>`` fills it with all 100 lines, ``commit map @<version>`` swaps it in
atomically (requests see the old map or the new one, never a mix), and ``show map`` reads it
back. No reload, no restart: connections and other state survive.
"""

from __future__ import annotations

import logging

from pipeline.ab.assignment import BUCKETS, bucket_map
from pipeline.deploy.split import MAP_PATH
from pipeline.deploy.swarm import Swarm
from pipeline.errors import SwarmError

__all__ = ["CLIENT", "apply_share", "expected", "live_maps", "parse_map"]

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
sys.stdout.write(ask("show map " + path))
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
