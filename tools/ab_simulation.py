"""Simulated experiments through the shipped decision rule: how often does it name a winner?

``python -m tools.ab_simulation [--experiments 2000 --looks 20 --effect 0 --seed 7]``

Each simulated experiment draws users one look at a time (each user lands in B with the
experiment's share, converts with the arm's true rate) and runs :func:`pipeline.ab.decision.decide`
at every look, exactly as a CI job calling ``pipeline ab decide`` on a schedule would; the
experiment ends at the first verdict that is not ``continue``. With ``--effect 0`` (an A/A
experiment) every winner is a false one. The same data also goes through the rule the
decision does *not* ship, a z-test read at every look ("peeking"), for comparison.

The figures in docs/ab-experiments.md come from this module with its defaults.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from pipeline.ab import stats
from pipeline.ab.decision import EXIT_CODES, ArmData, Observations, decide
from pipeline.ab.record import Candidate, EvidenceRef, Experiment, ImageRef, Metric, ModelRef

DIGEST = "sha256:" + "0" * 64


@dataclass(frozen=True)
class Result:
    method: str
    experiments: int
    winners: int  # a significant difference either way
    promoted: int
    stopped: int  # by the SRM check
    undecided: int  # still "continue" at the last look
    mean_users_per_arm: float  # at the verdict (or at the last look)

    @property
    def winner_rate(self) -> float:
        return self.winners / self.experiments


def experiment(method: Literal["fixed", "msprt"], *, baseline: float, mde: float) -> Experiment:
    horizon = stats.sample_size_per_arm(baseline=baseline, mde=mde)
    image = ImageRef(repository="sim", digest=DIGEST)
    return Experiment(
        id="simulation",
        status="running",
        share=50,
        champion=image,
        candidate=Candidate(
            image=image,
            model=ModelRef(name="sim", version="1", mlflow_run_id=""),
            evidence=EvidenceRef(digest=DIGEST, tag="sim"),
        ),
        metric=Metric(
            method=method,
            baseline_rate=baseline,
            mde=mde,
            sample_size_per_arm=horizon,
            max_users_per_arm=horizon,
        ),
    )


def simulate(
    *,
    experiments: int,
    looks: int,
    baseline: float,
    mde: float,
    effect: float,
    seed: int,
) -> list[Result]:
    """Run each rule on the same simulated users; ``effect``: B's true rate minus A's."""
    rng = np.random.default_rng(seed)
    rules = {m: experiment(m, baseline=baseline, mde=mde) for m in ("fixed", "msprt")}
    horizon = rules["fixed"].metric.sample_size_per_arm
    per_look = int(np.ceil(2 * horizon * 1.05 / looks))  # the horizon falls inside the last look
    tallies = {name: [0, 0, 0, 0, 0.0] for name in ("peeking z-test", "fixed", "msprt")}
    for _ in range(experiments):
        total = per_look * looks
        in_b = rng.random(total) < 0.5
        rates = np.where(in_b, baseline + effect, baseline)
        converted = (rng.random(total) < rates).astype(np.int8)
        a_all, b_all = converted[~in_b], converted[in_b]
        a_seen = np.cumsum(~in_b)[per_look - 1 :: per_look]
        b_seen = np.cumsum(in_b)[per_look - 1 :: per_look]
        # the rule nobody should ship: a z-test read at every look
        peek = tallies["peeking z-test"]
        xa, xb = np.cumsum(a_all)[a_seen - 1], np.cumsum(b_all)[b_seen - 1]
        _, p = stats.z_test_arrays(a_seen, xa, b_seen, xb)
        hits = np.flatnonzero(p < 0.05)
        if hits.size:
            peek[0] += 1
            peek[1] += int(xb[hits[0]] / b_seen[hits[0]] > xa[hits[0]] / a_seen[hits[0]])
            peek[4] += min(a_seen[hits[0]], b_seen[hits[0]])
        else:
            peek[3] += 1
            peek[4] += min(a_seen[-1], b_seen[-1])
        for method, rule in rules.items():
            tally = tallies[method]
            for look in range(looks):
                obs = Observations(
                    a=ArmData(a_all[: a_seen[look]]), b=ArmData(b_all[: b_seen[look]]), source=""
                )
                verdict = decide(rule, obs, guardrails=None, waive_guardrails=True)
                if verdict.decision != "continue" or look == looks - 1:
                    break
            tally[0] += verdict.winner is not None
            tally[1] += verdict.decision == "promote"
            tally[2] += verdict.exit_code == EXIT_CODES["stop"]
            tally[3] += verdict.decision == "continue"
            tally[4] += min(obs.a.n, obs.b.n)
    return [
        Result(
            method=name,
            experiments=experiments,
            winners=int(t[0]),
            promoted=int(t[1]),
            stopped=int(t[2]),
            undecided=int(t[3]),
            mean_users_per_arm=float(t[4]) / experiments,
        )
        for name, t in tallies.items()
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=2000)
    parser.add_argument("--looks", type=int, default=20)
    parser.add_argument("--baseline", type=float, default=0.10)
    parser.add_argument("--mde", type=float, default=0.01)
    parser.add_argument("--effect", type=float, default=0.0, help="B's rate minus A's (0: A/A)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    started = time.monotonic()
    results = simulate(
        experiments=args.experiments,
        looks=args.looks,
        baseline=args.baseline,
        mde=args.mde,
        effect=args.effect,
        seed=args.seed,
    )
    if args.json:
        print(json.dumps([r.__dict__ | {"winner_rate": r.winner_rate} for r in results]))
        return 0
    kind = "A/A" if args.effect == 0 else f"effect {args.effect:+g}"
    print(
        f"{args.experiments} {kind} experiments, {args.looks} looks, baseline {args.baseline:g}, "
        f"mde {args.mde:g}, seed {args.seed} ({time.monotonic() - started:.0f} s)\n"
    )
    print("| rule | winner declared | B promoted | SRM stops | undecided | users/arm at stop |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r.method} | {r.winner_rate:.1%} ({r.winners}) | {r.promoted} | {r.stopped} | "
            f"{r.undecided} | {r.mean_users_per_arm:,.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
