"""`pipeline ab decide` and `pipeline ab report` on fixed fixtures, through the command line:
the known values, the JSON form and the exit codes CI gates on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from tests.unit.ab.conftest import experiment
from tests.unit.ab.test_lifecycle import with_experiment


def table(path: Path, a: tuple[int, int], b: tuple[int, int], *, users: bool = False) -> Path:
    """A CSV of units: ``a = (n, successes)``, successes spread evenly over the arrivals."""
    lines = ["user,variant,outcome,ts" if users else "variant,outcome,ts"]
    for name, (n, k) in (("a", a), ("b", b)):
        for i in range(n):
            success = int((i * k) // n != ((i + 1) * k) // n)
            prefix = f"{name}{i}," if users else ""
            lines.append(f"{prefix}{name},{success},{1767225600 + i}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    with_experiment(tmp_path, experiment(share=50, sample_size_per_arm=10_000))
    monkeypatch.setenv("DEPLOY_DIR", str(tmp_path / "deploy"))
    return tmp_path


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["ab", *args])
    return result.exit_code, result.output


def test_decide_reproduces_z_2_31_p_0_021_and_promotes_with_exit_0(env: Path) -> None:
    outcomes = table(env / "o.csv", (10_000, 1_000), (10_000, 1_100))
    code, output = run(
        "decide", "--env", "staging", "--outcomes", str(outcomes), "--waive-guardrails", "--json"
    )
    assert code == 0, output
    data = json.loads(output)
    assert data["decision"] == "promote"
    assert round(data["z"], 2) == 2.31
    assert round(data["p_value"], 3) == 0.021
    assert [v["units"] for v in data["variants"]] == [10_000, 10_000]
    assert data["lift"] == pytest.approx(0.10)


def test_decide_before_the_horizon_exits_20_and_prints_what_is_missing(env: Path) -> None:
    outcomes = table(env / "o.csv", (4_000, 400), (4_000, 480), users=True)
    code, output = run("decide", "--env", "staging", "--outcomes", str(outcomes))
    assert code == 20, output
    assert "A needs 6,000 more, B needs 6,000 more" in " ".join(output.split())


def test_decide_stops_a_broken_split_with_exit_22(env: Path) -> None:
    outcomes = table(env / "o.csv", (10_000, 1_000), (8_000, 1_100))
    code, output = run("decide", "--env", "staging", "--outcomes", str(outcomes))
    assert code == 22, output
    assert "sample-ratio mismatch" in " ".join(output.split())


def test_decide_keeps_the_champion_when_b_is_no_better_with_exit_21(env: Path) -> None:
    outcomes = table(env / "o.csv", (10_000, 1_000), (10_000, 1_000))
    guard = env / "g.json"
    guard.write_text(
        json.dumps(
            {
                "a": {"requests": 10_000, "errors_5xx": 1, "p95_ms": 9.0},
                "b": {"requests": 10_000, "errors_5xx": 2, "p95_ms": 9.5},
            }
        )
    )
    code, output = run(
        "decide", "--env", "staging", "--outcomes", str(outcomes), "--guardrails", str(guard)
    )
    assert code == 21, output
    assert "no significant difference" in " ".join(output.split())


def test_a_bad_guardrails_file_is_exit_2_naming_the_field(env: Path) -> None:
    outcomes = table(env / "o.csv", (100, 10), (100, 10))
    guard = env / "g.json"
    guard.write_text('{"a": {"requests": 10, "errors_5xx": 20, "p95_ms": 1}, "b": {}}')
    code, output = run(
        "decide", "--env", "staging", "--outcomes", str(outcomes), "--guardrails", str(guard)
    )
    assert code == 2
    assert "errors_5xx <= requests" in output


def test_decide_needs_exactly_one_source_of_outcomes(env: Path) -> None:
    code, output = run("decide", "--env", "staging")
    assert code == 2
    assert "--outcomes FILE or --logs FILE" in output


def test_report_writes_a_png_and_a_self_contained_html_page(env: Path) -> None:
    outcomes = table(env / "o.csv", (10_000, 1_000), (10_000, 1_100))
    code, output = run(
        "report", "--env", "staging", "--outcomes", str(outcomes), "--out-dir", str(env / "out")
    )
    assert code == 0, output
    png, page = env / "out/exp-test/lift.png", env / "out/exp-test/report.html"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = page.read_text()
    assert "data:image/png;base64," in text
    assert "Experiment exp-test: promote" in text
    assert "sample ratio" in text
