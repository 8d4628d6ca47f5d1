"""Where a serving image spends its CPU under load: py-spy sampling the server while wrk drives it.

    .venv/bin/python -m tools.bench.profile [IMAGE ...] [--rows 1] [--seconds 15] [--rounds 3]

Each image (default: the one `dvc repro` built, build/image.json) runs pinned to the server core
with load from the generator core (as in `make bench`), c=8, the 1- or 100-row body. Printed
per image, as Markdown: CPU microseconds per request (the container's cgroup ``usage_usec``
over wrk's request count: less sensitive to a shared machine than req/s), req/s, and the top of
a py-spy profile (self time, and inclusive time of the app's own frames). Several images are
measured interleaved, round by round, so they see the same load. Run as root (py-spy attaches
to the container's process); py-spy comes from requirements/dev.lock.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from tools.bench import containers, load
from tools.bench.serving import write_bodies

PORT = 8080
#: frames whose inclusive share is listed: the app and what it calls on the request path
OURS = ("serving/", "uvicorn/", "onnxruntime", "sklearn/", "logging/", "prometheus_client/")


def cpu_usec(container: str) -> int:
    """The container's CPU time so far (cgroup v2), in microseconds."""
    full = containers.docker("inspect", "-f", "{{.Id}}", container)
    for stat in Path("/sys/fs/cgroup").rglob(f"*{full}*/cpu.stat"):
        for line in stat.read_text().splitlines():
            if line.startswith("usage_usec"):
                return int(line.split()[1])
    raise containers.EngineError(f"no cgroup cpu.stat for {full[:12]}")


def wait_ready(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).is_success:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise containers.EngineError(f"not ready in {timeout:.0f} s")


def py_spy() -> str | None:
    return shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))


def measure(image: str, *, script: Path, seconds: int, spy: Path | None) -> dict[str, object]:
    """One round: start, warm up, measure CPU per request (and sample with py-spy), remove."""
    container = containers.run(image, port=PORT)
    try:
        wait_ready(containers.host_port(container, PORT))
        target = load.Target("http://127.0.0.1:8080/invocations", containers.main_pid(container))
        load.run_wrk(target, script=script, connections=8, seconds=2)  # warm-up
        sampler = None
        if spy is not None:
            sampler = subprocess.Popen(
                [str(py_spy()), "record", "--pid", str(containers.main_pid(container)),
                 "--subprocesses", "--nonblocking", "--rate", "250", "--format", "raw",
                 "--duration", str(max(1, seconds - 2)), "--output", str(spy)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        before = cpu_usec(container)
        sample = load.run_wrk(target, script=script, connections=8, seconds=seconds)
        used = cpu_usec(container) - before
        if sampler is not None:
            sampler.wait(timeout=60)
        return {
            "rps": sample.rps,
            "p99_ms": sample.p99_ms,
            "requests": sample.requests,
            "cpu_us_per_request": used / max(1, sample.requests),
            "errors": sample.errors,
        }
    finally:
        containers.remove(container)


def top(raw: Path, *, limit: int = 15) -> list[str]:
    """Markdown rows: the frames with the most self time, then our frames' inclusive time."""
    own, inclusive, total = Counter[str](), Counter[str](), 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames, n = stack.split(";"), int(count)
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    if total == 0:
        return ["(py-spy recorded no samples)"]
    rows = ["| self % | frame |", "|---|---|"]
    rows += [f"| {100 * n / total:.1f} | `{f[:110]}` |" for f, n in own.most_common(limit)]
    rows += ["", "| inclusive % | frame (the request path) |", "|---|---|"]
    ours = [(f, n) for f, n in inclusive.most_common() if any(k in f for k in OURS)]
    rows += [f"| {100 * n / total:.1f} | `{f[:110]}` |" for f, n in ours[: limit * 2]]
    return [*rows, "", f"{total} samples"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="*")
    parser.add_argument("--rows", type=int, choices=(1, 100), default=1)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    images = args.images or [json.loads(Path("build/image.json").read_text())["image"]]
    if py_spy() is None:
        parser.error("py-spy is not installed: `make install` (requirements/dev.lock)")
    with tempfile.TemporaryDirectory(prefix="profile-") as scratch:
        bodies = write_bodies(Path(scratch))
        script = bodies[args.rows][1]
        rounds: dict[str, list[dict[str, object]]] = {image: [] for image in images}
        for r in range(args.rounds):
            for i, image in enumerate(images):
                spy = Path(scratch) / f"spy-{i}.txt" if r == args.rounds - 1 else None
                rounds[image].append(measure(image, script=script, seconds=args.seconds, spy=spy))
        for i, image in enumerate(images):
            cpu = [float(str(m["cpu_us_per_request"])) for m in rounds[image]]
            rps = [float(str(m["rps"])) for m in rounds[image]]
            print(f"### {image}, {args.rows} row(s), c=8, {args.rounds} x {args.seconds} s\n")
            print(
                f"CPU per request: median {statistics.median(cpu):.0f} us "
                f"({min(cpu):.0f}-{max(cpu):.0f}); req/s median {statistics.median(rps):.0f} "
                f"({min(rps):.0f}-{max(rps):.0f}); errors "
                f"{sum(int(str(m['errors'])) for m in rounds[image])}\n"
            )
            print("\n".join(top(Path(scratch) / f"spy-{i}.txt")) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
