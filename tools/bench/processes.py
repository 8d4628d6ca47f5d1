"""Host processes: start one pinned to the server core, find its tree, add up its memory."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tools.bench.load import SERVER_CORE


def rss_bytes(pids: Sequence[int]) -> int:
    """Sum of VmRSS over ``pids`` (pages shared between forked workers count once per process,
    as `ps` shows them); processes that have gone are skipped."""
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def tree(root: int) -> list[int]:
    """``root`` and every process descended from it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def start(
    command: Sequence[str], *, cwd: Path, env: Mapping[str, str], log: Path, pinned: bool = True
) -> subprocess.Popen[bytes]:
    """Start ``command`` in its own session (so its whole tree can be stopped by its
    process-group id), on the server core when ``pinned`` (else see :func:`pin`), output to
    ``log``."""
    taskset = ["taskset", "-c", str(SERVER_CORE)] if pinned else []
    with log.open("ab") as out:
        return subprocess.Popen(
            [*taskset, *command],
            cwd=cwd,
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def pin(root: int) -> None:
    """Move ``root``'s process tree, every thread, onto the server core (children it starts
    later inherit that)."""
    for pid in tree(root):
        subprocess.run(
            ["taskset", "-a", "-p", "-c", str(SERVER_CORE), str(pid)],
            capture_output=True,
            check=False,
        )


def stop(process: subprocess.Popen[bytes], *, grace: float = 10.0) -> None:
    """SIGTERM the process group we started, SIGKILL what is left after ``grace`` seconds."""
    if process.poll() is not None:
        return
    group = process.pid  # start_new_session: the group id is the leader's pid
    try:
        os.killpg(group, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
    process.wait(timeout=10)
