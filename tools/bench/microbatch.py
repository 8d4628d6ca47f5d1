"""Micro-batching (serving/batching.py) against the image before it, interleaved.

    python -m tools.bench.microbatch UNBATCHED_IMAGE BATCHED_IMAGE [--runs 6] [--seconds 3]

Both images serve the same model; build them from one image with only ``serving/`` replaced
(``FROM <image>`` + ``COPY serving/ /opt/app/serving/``, once from branch ``bench``, once from
a branch with batching), so the request path is the only difference. Four servers run side by
side on the server core: the unbatched image; the batched one with batching turned off
(``SERVING_BATCH_MAX_ROWS=1``: what the shipped code costs when it does not batch), with its
defaults (``SERVING_BATCH_WINDOW_MS=0``: dispatch at the end of the event-loop iteration) and
with ``SERVING_BATCH_WINDOW_MS=1`` (wait up to 1 ms). wrk loads the 1-row body at c=1, 8
and 32, every server once per run in turn (order reversed on odd runs), pinned like the bench
(wrk on core 0, in the container's namespace). Per run: req/s, p99, and the container's CPU
time per request (cgroup ``usage_usec`` over wrk's request count: steadier than req/s on a
shared machine). Prints a Markdown table of medians (min-max).
"""

from __future__ import annotations

import argparse
import sys

from tools.bench import load, servers
from tools.bench.profile import cpu_usec
from tools.bench.projects import ROOT
from tools.bench.serving import write_bodies
from tools.bench.stats import Spread


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.microbatch")
    parser.add_argument("unbatched")
    parser.add_argument("batched")
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=3)
    args = parser.parse_args(argv)
    bodies = write_bodies(ROOT / "build/bench/microbatch")
    configs = {
        "unbatched": (args.unbatched, {}),
        "batched, turned off": (args.batched, {"SERVING_BATCH_MAX_ROWS": "1"}),
        "batched, window 0 (default)": (args.batched, {}),
        "batched, window 1 ms": (args.batched, {"SERVING_BATCH_WINDOW_MS": "1"}),
    }
    running = {
        name: servers.start_container(
            name=name,
            title=name,
            image=image,
            ready_path="/v2/health/ready",
            workers="1",
            env=env,
            pinned=False,
        )
        for name, (image, env) in configs.items()
    }
    lines = ["| server | c | req/s | p99 ms | CPU us/request |", "|---|---|---|---|---|"]
    try:
        for server in running.values():
            server.pin()
            load.run_wrk(server.target, script=bodies[1][1], connections=8, seconds=2)
        for connections in (1, 8, 32):
            got: dict[str, list[tuple[load.Sample, float]]] = {name: [] for name in running}
            for run in range(args.runs):
                order = list(running.items())
                for name, server in order if run % 2 == 0 else reversed(order):
                    assert server.container is not None
                    before = cpu_usec(server.container)
                    sample = load.run_wrk(
                        server.target,
                        script=bodies[1][1],
                        connections=connections,
                        seconds=args.seconds,
                    )
                    cpu = (cpu_usec(server.container) - before) / max(sample.requests, 1)
                    got[name].append((sample, cpu))
                    print(
                        f"c={connections} run {run + 1} {name}: {sample.rps:.0f} req/s, "
                        f"p99 {sample.p99_ms:.2f} ms, {cpu:.0f} us/request",
                        file=sys.stderr,
                        flush=True,
                    )
            for name, samples in got.items():
                rps = Spread.of([s.rps for s, _ in samples])
                p99 = Spread.of([s.p99_ms for s, _ in samples])
                per = Spread.of([c for _, c in samples])
                lines.append(
                    f"| {name} | {connections} | {rps.median:.0f} ({rps.min:.0f}-{rps.max:.0f}) "
                    f"| {p99.median:.1f} ({p99.min:.1f}-{p99.max:.1f}) "
                    f"| {per.median:.0f} ({per.min:.0f}-{per.max:.0f}) |"
                )
    finally:
        for server in running.values():
            server.stop()
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
