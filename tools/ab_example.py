"""The example experiment of docs/ab-experiments.md: 14 days of simulated users, seeded.

``python -m tools.ab_example [--csv build/ab/example.csv] [--plot docs/img/ab-lift.png]``

Users arrive over 14 days (2,000 a day), each in B with the experiment's share (their bucket,
from a made-up user id), converting with the arm's true rate (A 10 %, B 12 %). The table is
written in the format ``pipeline ab decide --outcomes`` reads, and the plot through the same
code as ``pipeline ab report``.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
from pathlib import Path

from pipeline.ab.assignment import bucket, variant
from pipeline.ab.decision import decide
from pipeline.ab.outcomes import from_table
from pipeline.ab.record import Candidate, Event, EvidenceRef, Experiment, ImageRef, Metric, ModelRef
from pipeline.ab.report import write_report

START = 1_796_083_200  # 2026-12-01T00:00:00Z
DAY = 86_400


def example_experiment(share: int = 50) -> Experiment:
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    return Experiment(
        id="staging-20261201-example",
        status="running",
        share=share,
        champion=ImageRef(repository="127.0.0.1:5000/acme/classifier", digest=a),
        candidate=Candidate(
            image=ImageRef(repository="127.0.0.1:5000/acme/classifier", digest=b),
            model=ModelRef(name="breast-cancer-classifier", version="2", mlflow_run_id=""),
            evidence=EvidenceRef(digest="sha256:" + "e" * 64, tag="example"),
        ),
        metric=Metric(baseline_rate=0.10, mde=0.02, sample_size_per_arm=3_841),
        history=[Event(action="start", share=share, at="2026-12-01T00:00:00Z", by="example")],
    )


def rows(*, days: int, per_day: int, rate_a: float, rate_b: float, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    experiment = example_experiment()
    out = []
    for i in range(days * per_day):
        user = f"user-{seed}-{i}"
        arm = variant(bucket(experiment.id, user), experiment.share)
        converted = rng.random() < (rate_b if arm == "b" else rate_a)
        ts = START + (i / per_day) * DAY
        out.append([user, arm, str(int(converted)), f"{ts:.0f}", str(experiment.share)])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=Path("build/ab/example.csv"))
    parser.add_argument("--plot", type=Path, default=Path("docs/img/ab-lift.png"))
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args(argv)
    table = rows(days=14, per_day=2_000, rate_a=0.10, rate_b=0.12, seed=args.seed)
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with args.csv.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user", "variant", "outcome", "ts", "share"])
        writer.writerows(table)
    experiment = example_experiment()
    columns = {
        name: [r[i] for r in table]
        for i, name in enumerate(["user", "variant", "outcome", "ts", "share"])
    }
    observed = from_table(columns, experiment, where=str(args.csv))
    verdict = decide(experiment, observed, guardrails=None, waive_guardrails=True)
    png, _ = write_report(experiment, observed, verdict, out_dir=args.csv.parent / "example")
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    args.plot.write_bytes(png.read_bytes())
    print(f"{verdict.decision}: {verdict.reason}\nwrote {args.csv} and {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
