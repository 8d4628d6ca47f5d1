"""Targets (ratios from the same run) and the two result files: results.json, results.md."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tools.bench.plan import KEY_CONCURRENCY
from tools.bench.stats import ratio

PEER = "mlflow-container"
ENTRY = "ours-haproxy"  # ours behind the deploy's HAProxy entry (tools/bench/entry.py)
# Promotions take tens of ms: below this, a difference is scheduling noise, not image size.
FLAT_SLACK_S = 0.02


@dataclass(frozen=True)
class Target:
    name: str
    wanted: str
    measured: float | None
    limit: float | None  # None: reported, no target
    higher_is_better: bool
    unit: str  # "x" for ratios, "%" for shares, "s"
    met_anyway: bool = False  # e.g. a ratio of two tiny times, within an absolute slack

    @property
    def met(self) -> bool | None:
        if self.measured is None or self.limit is None:
            return None
        if self.met_anyway:
            return True
        if self.higher_is_better:
            return self.measured >= self.limit
        return self.measured <= self.limit

    @property
    def shortfall(self) -> str:
        """By how much a missed target is missed ('' when met or not measured)."""
        if self.met is not False or self.measured is None or self.limit is None:
            return ""
        off = self.limit / self.measured if self.higher_is_better else self.measured / self.limit
        return f"{off:.2f}x off ({_fmt(self.measured, self.unit)} vs {_fmt(self.limit, self.unit)})"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "met": self.met, "shortfall": self.shortfall}


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "%":
        return f"{value * 100:.1f} %"
    if unit == "x":
        return f"{value:.1f}x" if value >= 1 else f"1/{1 / value:.1f}" if value else "0"
    return f"{value:.3g} {unit}".strip()


def cell(table: list[dict[str, Any]], **where: Any) -> dict[str, Any] | None:
    for row in table:
        if all(row.get(k) == v for k, v in where.items()):
            return row
    return None


def _median(row: dict[str, Any] | None, key: str) -> float | None:
    return None if row is None else float(row[key]["median"])


def add_ratios(serving: dict[str, Any]) -> None:
    """Each row: ours/MLflow-container for req/s and p99 (the peer's row of the same cell), and
    req/s as a share of the uvicorn hello ceiling (same rows and concurrency); the HAProxy
    row also against ours (container) in the same cell: the proxy's cost."""
    rows = serving["rows"]
    for row in rows:
        same = {"rows": row["rows"], "concurrency": row["concurrency"]}
        peer = cell(rows, model=row["model"], server=PEER, **same)
        hello = cell(rows, model=row["model"], server="hello", **same)
        if row["server"] != PEER and peer is not None:
            row["rps_vs_mlflow_container"] = _round(
                ratio(_median(row, "rps"), _median(peer, "rps"))
            )
            row["p99_vs_mlflow_container"] = _round(
                ratio(_median(row, "p99_ms"), _median(peer, "p99_ms")), 4
            )
            row["rss_vs_mlflow_container"] = _round(ratio(row["rss_mb"], peer["rss_mb"]), 3)
        ours = cell(rows, model=row["model"], server="ours", **same)
        if row["server"] == ENTRY and ours is not None:
            row["rps_vs_ours"] = _round(ratio(_median(row, "rps"), _median(ours, "rps")), 3)
            row["p99_vs_ours"] = _round(ratio(_median(row, "p99_ms"), _median(ours, "p99_ms")), 3)
            added = float(row["p50_ms"]["median"]) - float(ours["p50_ms"]["median"])
            row["p50_added_ms"] = round(added, 3)
        if row["server"] != "hello" and hello is not None:
            row["share_of_ceiling"] = _round(ratio(_median(row, "rps"), _median(hello, "rps")), 3)


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


#: Issue 18's goals, each a ratio (or a time) from the same run.
SHARE_OF_CEILING = 0.5  # ours (container), 1 row at c=8, over the uvicorn hello ceiling
RPS_1_ROW = 80.0  # x MLflow's container, 1 row at c=8
RPS_100_ROWS = 30.0  # x MLflow's container, 100 rows at c=8
P99 = 1 / 40  # of MLflow's container, at c=8, 1 and 100 rows
RSS = 1 / 3  # peak under load, of MLflow's container
READY_S = 1.0  # ours: container start to ready
SIZE = 1 / 4  # the ONNX image, of MLflow's image on the same base
NOOP_S = 5.0  # no-op dvc repro
CLI_S = 2.0  # whole-process `pipeline promote` / `pipeline rollback`, small image


def targets(results: dict[str, Any]) -> list[Target]:
    serving = _section(results, "serving") or {"rows": []}
    rows = serving["rows"]
    found: list[Target] = []
    for model in sorted({r["model"] for r in rows}):
        one = cell(rows, model=model, server="ours", rows=1, concurrency=KEY_CONCURRENCY)
        hundred = cell(rows, model=model, server="ours", rows=100, concurrency=KEY_CONCURRENCY)
        found.append(
            Target(
                f"{model}: 1-row req/s at c=8, ours (container) / uvicorn hello ceiling",
                f">= {SHARE_OF_CEILING:.0%}".replace("%", " %"),
                (one or {}).get("share_of_ceiling"),
                SHARE_OF_CEILING,
                True,
                "%",
            )
        )
        found.append(
            Target(
                f"{model}: 1-row req/s at c=8, ours/MLflow",
                f">= {RPS_1_ROW:.0f}x",
                (one or {}).get("rps_vs_mlflow_container"),
                RPS_1_ROW,
                True,
                "x",
            )
        )
        found.append(
            Target(
                f"{model}: 100-row req/s at c=8, ours/MLflow",
                f">= {RPS_100_ROWS:.0f}x",
                (hundred or {}).get("rps_vs_mlflow_container"),
                RPS_100_ROWS,
                True,
                "x",
            )
        )
        for label, row in (("1-row", one), ("100-row", hundred)):
            found.append(
                Target(
                    f"{model}: {label} p99 at c=8, ours/MLflow",
                    f"<= 1/{1 / P99:.0f}",
                    (row or {}).get("p99_vs_mlflow_container"),
                    P99,
                    False,
                    "x",
                )
            )
        peak = _peak_rss(rows, model)
        found.append(
            Target(f"{model}: peak RSS under load, ours/MLflow", "<= 1/3", peak, RSS, False, "x")
        )
    startup = _section(results, "startup")
    if startup and "ready_s" in startup:
        ours = startup["ready_s"].get("ours")
        found.append(
            Target(
                "ours: container start to ready",
                f"<= {READY_S:g} s",
                ours and ours["median"],
                READY_S,
                False,
                "s",
            )
        )
        size = startup["size"]
        if PEER in size:
            found.append(
                Target(
                    "image size (ONNX serves), ours/MLflow's (same base)",
                    f"<= 1/{1 / SIZE:.0f}",
                    ratio(size["ours"]["bytes"], size[PEER]["bytes"]),
                    SIZE,
                    False,
                    "x",
                )
            )
            if "sklearn-fallback" in size:
                found.append(
                    Target(
                        "image size (scikit-learn fallback), ours/MLflow's (same base)",
                        "no target (reported)",
                        ratio(size["sklearn-fallback"]["bytes"], size[PEER]["bytes"]),
                        None,
                        False,
                        "x",
                    )
                )
    pipeline = _section(results, "pipeline")
    if pipeline and "noop" in pipeline:
        found.append(
            Target(
                "no-op dvc repro", f"< {NOOP_S:g} s", pipeline["noop"]["median"], NOOP_S, False, "s"
            )
        )
    promotion = _section(results, "promotion")
    if promotion and "promote_s" in promotion.get("large", {}):
        large, small = (promotion[k]["promote_s"]["median"] for k in ("large", "small"))
        found.append(
            Target(
                "promotion time, large/small image",
                f"flat: <= 1.2x or within {FLAT_SLACK_S * 1000:.0f} ms",
                ratio(large, small),
                1.2,
                False,
                "x",
                met_anyway=large - small <= FLAT_SLACK_S,
            )
        )
    for command in ("promote", "rollback"):
        timed = (promotion or {}).get("cli", {}).get(command)
        if timed:
            found.append(
                Target(
                    f"`pipeline {command}` wall time (whole process, cold, local registry)",
                    f"<= {CLI_S:g} s",
                    timed["median"],
                    CLI_S,
                    False,
                    "s",
                )
            )
    return found


def _peak_rss(rows: list[dict[str, Any]], model: str) -> float | None:
    def peak(server: str) -> float | None:
        values = [r["rss_mb"] for r in rows if r["model"] == model and r["server"] == server]
        return max(values) if values else None

    return ratio(peak("ours"), peak(PEER))


def write(results: dict[str, Any], *, json_path: Path, md_path: Path) -> None:
    if _section(results, "serving"):
        add_ratios(results["serving"])
    found = targets(results)
    results["targets"] = [t.as_dict() for t in found]
    json_path.write_text(json.dumps(results, indent=1) + "\n")
    md_path.write_text("\n".join(markdown(results, found)) + "\n")


def _section(results: dict[str, Any], name: str) -> dict[str, Any] | None:
    """A section's figures, or None when it is absent or failed (its error is listed apart)."""
    found = results.get(name)
    return None if not found or "error" in found else dict(found)


def _spread(value: dict[str, Any] | None, digits: int = 1) -> str:
    if not value:
        return "n/a"
    med, low, high = value["median"], value["min"], value["max"]
    if value["n"] == 1:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def _table(header: list[str], body: Iterable[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return lines


def markdown(results: dict[str, Any], found: list[Target]) -> list[str]:
    meta = results["meta"]
    out = [
        "# Benchmark results",
        "",
        f"Written by `make bench` ({meta['mode']} plan) on {meta['finished']}; total wall time "
        f"**{meta['wall_s'] / 60:.1f} min**. {meta['machine']}. See tools/bench/README.md for what "
        "is "
        "measured and how. Figures: median (min-max) over the runs given.",
        "",
        f"**The machine is shared**: {meta['shared_note']} Load average before/after: "
        f"{meta['load_before']} / {meta['load_after']}. Read the ratios, not the absolute numbers.",
        "",
        "## Targets (ratios from this run)",
        "",
    ]
    out += _table(
        ["target", "wanted", "measured", "met", "missed by"],
        (
            [
                t.name,
                t.wanted,
                _fmt(t.measured, t.unit),
                "-" if t.limit is None else {True: "yes", False: "**no**", None: "n/a"}[t.met],
                t.shortfall,
            ]
            for t in found
        ),
    )
    serving = _section(results, "serving")
    if serving:
        plan = meta["plan"]
        out += ["", "## Serving", ""]
        out += [
            f"wrk pinned to core 0, every server on core 1; c=8 cells {plan['key_runs']} runs x "
            f"{plan['key_seconds']} s, others {plan['other_runs']} x {plan['other_seconds']} s, "
            "servers interleaved run by run. RSS: sum over the "
            "server's processes (whole container, or the host process tree) after the cell.",
            "",
        ]
        out += _table(
            ["server", "workers"], ([v["title"], v["workers"]] for v in serving["servers"].values())
        )
        for model in dict.fromkeys(r["model"] for r in serving["rows"] if r["server"] != "hello"):
            out += ["", f"### {model}", ""]
            body = []
            for row in serving["rows"]:
                if row["model"] != model:
                    continue
                body.append(
                    [
                        row["title"],
                        str(row["rows"]),
                        str(row["concurrency"]),
                        _spread(row["rps"], 0),
                        _spread(row["p50_ms"], 2),
                        _spread(row["p99_ms"], 2),
                        f"{row['errors']}/{row['requests']}",
                        f"{row['rss_mb']:.0f}",
                        _fmt(row.get("rps_vs_mlflow_container"), "x"),
                        _fmt(row.get("p99_vs_mlflow_container"), "x"),
                        _pct(row.get("share_of_ceiling")),
                    ]
                )
            out += _table(
                [
                    "server",
                    "rows",
                    "c",
                    "req/s",
                    "p50 ms",
                    "p99 ms",
                    "errors/requests",
                    "RSS MB",
                    "req/s vs MLflow ctr",
                    "p99 vs MLflow ctr",
                    "share of ceiling",
                ],
                body,
            )
            entry_rows = [r for r in serving["rows"] if r["model"] == model and "rps_vs_ours" in r]
            if entry_rows:
                out += [
                    "",
                    "The entry's cost: ours behind HAProxy / ours (container), same cells, "
                    "same run (RSS: the model container plus HAProxy's):",
                    "",
                ]
                out += _table(
                    ["rows", "c", "req/s", "p50 added, ms", "p99", "RSS MB"],
                    (
                        [
                            str(r["rows"]),
                            str(r["concurrency"]),
                            _pct(r["rps_vs_ours"]),
                            f"{r['p50_added_ms']:+.2f}",
                            _fmt(r["p99_vs_ours"], "x"),
                            f"{r['rss_mb']:.0f}",
                        ]
                        for r in entry_rows
                    ),
                )
        entry = serving.get("entry")
        if entry:
            out += ["", f"HAProxy entry: {entry}"]
        for model, notes in serving.get("notes", {}).items():
            for name, note in notes.items():
                out.append(f"\n- {model}, {name}: {note}")
    startup = _section(results, "startup")
    if startup:
        out += ["", "## Startup and size", ""]
        body = []
        for name in startup["ready_s"]:
            size = startup["size"][name]
            body.append(
                [
                    name,
                    _spread(startup["ready_s"][name], 2),
                    _spread(startup["idle_rss_mb"][name], 0),
                    f"{size['mb']:.0f}",
                    f"{size['above_base_mb']:.0f}",
                ]
            )
        fallback = startup["size"].get("sklearn-fallback")
        if fallback:
            body.append(
                [
                    "ours, scikit-learn fallback (size only)",
                    "",
                    "",
                    f"{fallback['mb']:.0f}",
                    f"{fallback['above_base_mb']:.0f}",
                ]
            )
        out += _table(
            ["image", "start to ready, s", "idle RSS MB", "size MB", "above the base, MB"], body
        )
        out += [
            "",
            f"Base: `{startup['size']['base']['image']}`, {startup['size']['base']['mb']:.0f} MB. "
            "The scikit-learn fallback is the image `containerize` builds for a model without a "
            "verified ONNX graph (full serving.lock, SERVING_RUNTIME=sklearn), built here from "
            "the same copy with the stage's own context"
            + (f" in {fallback['build_s']:.0f} s." if fallback else "."),
        ]
        if "fallback_error" in startup:
            out += ["", f"- {startup['fallback_error']}"]
    pipeline = _section(results, "pipeline")
    if pipeline:
        out += ["", "## Pipeline (`dvc repro`, seconds)", ""]
        out += _table(
            ["case", "seconds"],
            [
                ["cold (fresh copy, built-in set)", _spread(pipeline["cold"])],
                ["no-op", _spread(pipeline["noop"], 2)],
                ["code-only change (serving code: image rebuilt)", _spread(pipeline["code_only"])],
                [
                    "params-only change (train.logistic_regression.C)",
                    _spread(pipeline["params_only"]),
                ],
            ],
        )
        out += ["", "Cold time against data size:", ""]
        out += _table(
            ["rows", "data", "cold dvc repro, s"],
            ([f"{s['rows']:,}", s["source"], _spread(s["cold_s"])] for s in pipeline["data_size"]),
        )
    promotion = _section(results, "promotion")
    if promotion and "small" in promotion:
        out += [
            "",
            "## Promotion (`pipeline.release.promotion.promote` to staging, local registry)",
            "",
        ]
        body = []
        for name in ("small", "large"):
            p = promotion[name]
            body.append(
                [
                    name,
                    f"{p['size_mb']:.0f}",
                    f"{p['push_s']:.1f}",
                    _spread(p.get("promote_s"), 3),
                    _spread(p.get("tag_move_ms"), 0),
                ]
            )
        out += _table(["image", "size MB", "push once, s", "promote, s", "tag move, ms"], body)
        cli = promotion.get("cli")
        if cli:
            out += [
                "",
                "Whole process, as typed (a cold interpreter each time), each landing on the "
                "small image: `pipeline promote --image <small digest>`, and `pipeline rollback` "
                "back to it, each after an untimed in-process promotion of the large image:",
                "",
            ]
            out += _table(
                ["command", "wall time, s"],
                ([f"`pipeline {name}`", _spread(value, 2)] for name, value in cli.items()),
            )
    failed = {
        name: section["error"]
        for name, section in results.items()
        if name != "meta" and isinstance(section, dict) and "error" in section
    }
    if failed:
        out += ["", "## Sections that failed", ""]
        out += [f"- {name}: `{error.splitlines()[0][:400]}`" for name, error in failed.items()]
    out += ["", "## Setup of this run", ""]
    out += [f"- {k}: {v}" for k, v in meta["setup"].items()]
    return out


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value * 100:.1f} %"
