"""Quality gates: absolute thresholds and comparison with the champion.

Pure logic, no I/O: `evaluate` turns metrics and `Gate` settings into rows a person can read.
Semantics follow MLflow's MetricThreshold: for a metric where greater is better, the candidate
passes the champion comparison when `candidate - champion >= min_absolute_change` and
`(candidate - champion) / |champion| >= min_relative_change` (signs flip when lower is better).
Negative changes are tolerated regressions. A champion value of zero makes the relative check
undefined: it is skipped and the row says so. No champion: only thresholds apply.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config import LOWER_IS_BETTER, Gate


@dataclass(frozen=True)
class GateRow:
    gate: str
    metric: str
    requirement: str
    champion: float | None
    candidate: float
    passed: bool
    note: str = ""


def _improvement(candidate: float, champion: float, *, greater_is_better: bool) -> float:
    return candidate - champion if greater_is_better else champion - candidate


def evaluate(
    *,
    gates: dict[str, Gate],
    candidate: dict[str, float],
    champion: dict[str, float] | None,
) -> list[GateRow]:
    rows: list[GateRow] = []
    for metric, gate in gates.items():
        value = candidate[metric]
        greater = gate.greater_is_better
        if greater is None:
            greater = metric not in LOWER_IS_BETTER
        sign = ">=" if greater else "<="
        if gate.threshold is not None:
            ok = value >= gate.threshold if greater else value <= gate.threshold
            rows.append(GateRow("threshold", metric, f"{sign} {gate.threshold:g}", None, value, ok))
        if champion is None or metric not in champion:
            continue
        base = champion[metric]
        gain = _improvement(value, base, greater_is_better=greater)
        if gate.min_absolute_change is not None:
            ok = gain >= gate.min_absolute_change
            rows.append(
                GateRow(
                    "vs champion (abs)",
                    metric,
                    f"change >= {gate.min_absolute_change:+g}",
                    base,
                    value,
                    ok,
                    f"change {gain:+.4g}",
                )
            )
        if gate.min_relative_change is not None:
            requirement = f"change >= {gate.min_relative_change:+.2%}"
            if base == 0:
                rows.append(
                    GateRow(
                        "vs champion (rel)",
                        metric,
                        requirement,
                        base,
                        value,
                        True,
                        "skipped: champion value is 0, relative change undefined",
                    )
                )
                continue
            relative = gain / abs(base)
            rows.append(
                GateRow(
                    "vs champion (rel)",
                    metric,
                    requirement,
                    base,
                    value,
                    relative >= gate.min_relative_change,
                    f"change {relative:+.2%}",
                )
            )
    return rows


def passed(rows: list[GateRow]) -> bool:
    return all(r.passed for r in rows)
