"""``pipeline ab report``: the cumulative lift over time with its confidence band (PNG + HTML).

At each of up to ``points`` moments (the units' first-exposure times), the units seen so far
give the relative lift of B over A and its band: for ``msprt`` the always-valid confidence
sequence (the band a reader may look at every day), for ``fixed`` the pointwise 95 % interval
(meaningful only at the horizon, drawn as a dashed line). The HTML page holds the plot, the
verdict, the per-variant table and every check, in one self-contained file.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.ab import stats
from pipeline.ab.decision import Decision, Observations
from pipeline.ab.record import Experiment

__all__ = ["Curve", "curve", "write_report"]


@dataclass(frozen=True)
class Curve:
    times: list[float]
    lift: list[float]
    low: list[float]
    high: list[float]
    users: list[int]


def curve(experiment: Experiment, obs: Observations, *, points: int = 60) -> Curve:
    """The cumulative lift of B over A (and its band) at up to ``points`` moments."""
    a_times = obs.a.times if obs.a.times is not None else np.arange(obs.a.n, dtype=np.float64)
    b_times = obs.b.times if obs.b.times is not None else np.arange(obs.b.n, dtype=np.float64)
    if not (a_times.size and b_times.size):
        return Curve([], [], [], [], [])
    a_sum, b_sum = np.cumsum(obs.a.outcomes), np.cumsum(obs.b.outcomes)
    start = max(float(a_times[0]), float(b_times[0]))
    end = max(float(a_times[-1]), float(b_times[-1]))
    moments = np.unique(np.linspace(start, end, num=max(points, 2)))
    metric = experiment.metric
    out = Curve([], [], [], [], [])
    for moment in moments:
        n_a = int(np.searchsorted(a_times, moment, side="right"))
        n_b = int(np.searchsorted(b_times, moment, side="right"))
        if not (n_a and n_b):
            continue
        arm_a = stats.Arm(n=n_a, successes=int(a_sum[n_a - 1]))
        arm_b = stats.Arm(n=n_b, successes=int(b_sum[n_b - 1]))
        if metric.method == "msprt":
            test = stats.msprt(arm_a, arm_b, tau=metric.mde, alpha=metric.alpha)
            lift, (low, high) = test.lift, test.lift_ci
        else:
            z = stats.z_test(arm_a, arm_b, alpha=metric.alpha)
            lift, (low, high) = z.lift, z.lift_ci
        if not math.isfinite(lift):
            continue
        out.times.append(float(moment))
        out.lift.append(lift)
        out.low.append(low)
        out.high.append(high)
        out.users.append(n_a + n_b)
    return out


def write_report(
    experiment: Experiment, obs: Observations, decision: Decision, *, out_dir: Path
) -> tuple[Path, Path]:
    """Write ``lift.png`` and ``report.html`` under ``out_dir``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = curve(experiment, obs)
    out_dir.mkdir(parents=True, exist_ok=True)
    png, page = out_dir / "lift.png", out_dir / "report.html"
    real_times = bool(data.times) and data.times[0] > 1e8  # epoch seconds, not row numbers
    xs: list[Any] = (
        [datetime.fromtimestamp(t, UTC) for t in data.times] if real_times else list(data.times)
    )
    figure, axis = plt.subplots(figsize=(8, 4.2), dpi=110)
    if data.times:
        lift = np.asarray(data.lift) * 100
        mde = experiment.metric.mde / experiment.metric.baseline_rate * 100
        limit = max(10.0, 3 * mde, 3 * abs(float(lift[-1])))  # an early band is very wide
        low = np.clip(np.nan_to_num(np.asarray(data.low) * 100, nan=-limit), -limit, limit)
        high = np.clip(np.nan_to_num(np.asarray(data.high) * 100, nan=limit), -limit, limit)
        band = "always-valid" if experiment.metric.method == "msprt" else "pointwise"
        confidence = round((1 - experiment.metric.alpha) * 100)
        axis.fill_between(xs, low, high, alpha=0.25, label=f"{confidence} % {band} interval")
        axis.plot(xs, lift, label="lift of B over A", linewidth=1.8)
        axis.axhline(mde, linestyle=":", color="gray", label=f"minimum effect ({mde:.1f} %)")
        axis.axhline(0, color="black", linewidth=0.8)
        axis.set_ylim(-limit * 1.05, limit * 1.05)
        axis.legend(loc="upper right", fontsize=8)
    else:
        axis.text(0.5, 0.5, "no units in both arms yet", ha="center", transform=axis.transAxes)
    axis.set_ylabel(f"relative lift in {experiment.metric.name} (%)")
    axis.set_xlabel("first exposure (UTC)" if real_times else "units, in arrival order")
    axis.set_title(f"{experiment.id}: {decision.decision} ({experiment.metric.method})")
    figure.autofmt_xdate()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    png.write_bytes(buffer.getvalue())
    page.write_text(_html(experiment, decision, buffer.getvalue()))
    return png, page


def _html(experiment: Experiment, decision: Decision, png: bytes) -> str:
    e = html.escape

    def number(value: float | None, fmt: str = "{:.4f}") -> str:
        return "-" if value is None or not math.isfinite(value) else fmt.format(value)

    rows = "".join(
        f"<tr><td>{e(v.variant.upper())}</td><td>{v.units:,}</td><td>{v.successes:,}</td>"
        f"<td>{number(v.rate, '{:.2%}')}</td><td>{'-' if v.requests is None else v.requests}</td>"
        f"<td>{number(v.error_rate, '{:.2%}')}</td><td>{number(v.p95_ms, '{:.1f}')}</td></tr>"
        for v in decision.variants
    )
    checks = "".join(
        f"<tr><td>{e(c.name)}</td><td>{e(c.status)}</td><td>{e(c.detail)}</td></tr>"
        for c in decision.checks
    )
    notes = "".join(f"<li>{e(n)}</li>" for n in decision.notes)
    low, high = decision.lift_ci
    image = base64.b64encode(png).decode()
    candidate = experiment.candidate
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(experiment.id)}</title>
<style>body{{font-family:sans-serif;max-width:60rem;margin:2rem auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3rem .6rem}}</style>
</head><body>
<h1>Experiment {e(experiment.id)}: {e(decision.decision)}</h1>
<p>{e(decision.reason)}</p>
<p>Champion (A) {e(experiment.champion.digest)}; candidate (B) {e(candidate.image.digest)}
(model {e(candidate.model.name)} version {e(candidate.model.version)}); share {experiment.share} %
({e(experiment.status)}); metric {e(experiment.metric.name)} by {e(experiment.metric.method)}.</p>
<p>Lift {number(decision.lift, "{:+.2%}")} [{number(low, "{:+.2%}")},
{number(high, "{:+.2%}")}]; p {number(decision.p_value, "{:.3g}")}; exit code
{decision.exit_code}.</p>
<img alt="cumulative lift with its confidence band" src="data:image/png;base64,{image}">
<h2>Variants</h2>
<table><tr><th>variant</th><th>units</th><th>successes</th><th>rate</th><th>requests</th>
<th>5xx rate</th><th>p95 ms</th></tr>{rows}</table>
<h2>Checks, in order</h2>
<table><tr><th>check</th><th>status</th><th>detail</th></tr>{checks}</table>
<ul>{notes}</ul>
<p>Source: {e(decision.source)}</p>
</body></html>
"""
