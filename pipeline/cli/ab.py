"""`pipeline ab ...`: A/B experiments (pipeline/ab; docs/ab-experiments.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline import config
from pipeline.cli.common import environment as _environment
from pipeline.cli.common import report_release as _report
from pipeline.cli.common import run as _run
from pipeline.console import out, setup_logging
from pipeline.errors import ConfigError
from pipeline.release.state import Environment

app = typer.Typer(
    no_args_is_help=True,
    help="A/B experiments: a candidate on a sticky share of users, and a decision to gate on.",
)
AbEnv = Annotated[str, typer.Option("--env", help="staging or production")]
Note = Annotated[str, typer.Option(help="why, recorded in the experiment's history")]
OutcomesFile = Annotated[
    Path | None, typer.Option("--outcomes", help="CSV/Parquet: variant, outcome[, user, ts, share]")
]
AbTopology = Annotated[Path, typer.Option("--topology", help="for --swarm: the stack's name")]
AbSince = Annotated[
    str, typer.Option(help="for --swarm: logs since (RFC 3339); default the experiment's start")
]
LogFiles = Annotated[
    list[Path] | None,
    typer.Option("--logs", help="JSON log lines of the model services (exposures + feedback)"),
]


@app.command("start")
def ab_start(
    env: AbEnv,
    image: Annotated[str, typer.Option(help="the candidate: tag or digest in IMAGE_REPOSITORY")],
    share: Annotated[int, typer.Option(help="% of users on the candidate, 1..99")] = 10,
    experiment_id: Annotated[
        str, typer.Option("--id", help="the hashing salt; default <env>-<date>-<random>")
    ] = "",
    metric: Annotated[str, typer.Option(help="the primary metric's name")] = "conversion",
    source: Annotated[
        str, typer.Option(help="outcome (0/1 per user) or label (true labels vs predictions)")
    ] = "outcome",
    method: Annotated[str, typer.Option(help="msprt (any look) or fixed (one look)")] = "msprt",
    baseline: Annotated[float, typer.Option(help="the champion's expected rate")] = 0.1,
    mde: Annotated[float, typer.Option(help="smallest absolute difference worth finding")] = 0.01,
    alpha: Annotated[float, typer.Option(help="false-winner rate")] = 0.05,
    power: Annotated[float, typer.Option(help="fixed: chance to find the mde")] = 0.8,
    sample_size: Annotated[
        int | None, typer.Option(help="fixed: users per arm; default computed")
    ] = None,
    min_users: Annotated[int, typer.Option(help="msprt: users per arm before deciding")] = 200,
    max_users: Annotated[
        int | None, typer.Option(help="msprt: budget per arm; reached = keep")
    ] = None,
    user_header: Annotated[str, typer.Option(help="header naming the user")] = "X-User-Id",
    cookie: Annotated[str, typer.Option(help="cookie set for anonymous callers")] = "ab_uid",
    max_5xx_increase: Annotated[float, typer.Option(help="guardrail, absolute")] = 0.005,
    max_p95_increase: Annotated[float, typer.Option(help="guardrail, relative")] = 0.25,
    max_p95_increase_ms: Annotated[float, typer.Option(help="guardrail slack, ms")] = 5.0,
    aa: Annotated[bool, typer.Option("--aa", help="allow the champion as candidate")] = False,
    note: Note = "",
) -> None:
    """Start an experiment: the candidate (tested, verified evidence) on SHARE % of users."""
    from pipeline.ab import lifecycle, record

    setup_logging()
    settings = _run(config.load_settings)
    name = _run(lambda: _environment(env))
    plan = lifecycle.MetricPlan(
        name=metric,
        source=source,  # type: ignore[arg-type]  # validated by the record
        method=method,  # type: ignore[arg-type]
        baseline_rate=baseline,
        mde=mde,
        alpha=alpha,
        power=power,
        sample_size_per_arm=sample_size,
        min_users_per_arm=min_users,
        max_users_per_arm=max_users,
    )
    split = _run(lambda: record.validated(record.Split, user_header=user_header, cookie=cookie))
    guard = _run(
        lambda: record.validated(
            record.Guardrails,
            max_5xx_rate_increase=max_5xx_increase,
            max_p95_latency_increase=max_p95_increase,
            max_p95_latency_increase_ms=max_p95_increase_ms,
        )
    )
    started = _run(
        lambda: lifecycle.start(
            settings,
            env=name,
            ref=image,
            share=share,
            plan=plan,
            experiment_id=experiment_id or None,
            split=split,
            guardrails=guard,
            allow_same_image=aa,
            note=note,
        )
    )
    m = started.metric
    horizon = f", horizon {m.sample_size_per_arm:,} users per arm" if m.method == "fixed" else ""
    out.print(
        f"experiment {started.id} started in {env}: {started.share} % of users on "
        f"{started.candidate.image.digest} (model {started.candidate.model.name} version "
        f"{started.candidate.model.version}); {m.name} by {m.method}{horizon}; wrote "
        f"{settings.deploy_dir / env}.yaml (commit it, then `pipeline reconcile --env {env}`)",
        soft_wrap=True,
    )


@app.command("ramp")
def ab_ramp(
    env: AbEnv,
    share: Annotated[int, typer.Option(help="the new % of users on the candidate (only up)")],
    note: Note = "",
) -> None:
    """Raise the candidate's share; users already on the candidate stay there."""
    from pipeline.ab import lifecycle

    setup_logging()
    settings = _run(config.load_settings)
    name = _run(lambda: _environment(env))
    done = _run(lambda: lifecycle.ramp(settings, env=name, share=share, note=note))
    out.print(f"experiment {done.id} in {env}: {done.share} % of users on the candidate")


@app.command("stop")
def ab_stop(env: AbEnv, note: Note = "") -> None:
    """Share 0: the next reconcile removes the candidate's service (the record stays)."""
    from pipeline.ab import lifecycle

    setup_logging()
    settings = _run(config.load_settings)
    name = _run(lambda: _environment(env))
    done = _run(lambda: lifecycle.stop(settings, env=name, note=note))
    out.print(f"experiment {done.id} in {env}: stopped; everyone gets the champion")


@app.command("conclude")
def ab_conclude(
    env: AbEnv,
    winner: Annotated[str, typer.Option(help="b promotes the candidate; a keeps the champion")],
    note: Note = "",
) -> None:
    """Record the winner; --winner b promotes the candidate through `pipeline promote`."""
    from pipeline.ab import lifecycle

    setup_logging()
    settings = _run(config.load_settings)
    name = _run(lambda: _environment(env))
    if winner not in ("a", "b"):
        _run(lambda: _bad_option(f"--winner must be a or b (got {winner!r})"))
    done, outcome = _run(
        lambda: lifecycle.conclude(settings, env=name, winner=winner, note=note)  # type: ignore[arg-type]
    )
    if outcome is not None:
        _report(outcome, settings)
    out.print(f"experiment {done.id} in {env}: concluded, winner {winner.upper()}")


@app.command("decide")
def ab_decide(
    env: AbEnv,
    outcomes: OutcomesFile = None,
    logs: LogFiles = None,
    guardrails: Annotated[
        Path | None, typer.Option(help="JSON: requests, errors_5xx, p95_ms per variant")
    ] = None,
    prometheus: Annotated[
        str | None, typer.Option(help="Prometheus URL for the guardrails")
    ] = None,
    waive_guardrails: Annotated[
        bool, typer.Option(help="promote without guardrail measurements")
    ] = False,
    swarm: Annotated[
        bool,
        typer.Option(
            "--swarm", help="read the logs and Prometheus of the environment's Swarm stack"
        ),
    ] = False,
    topology: AbTopology = Path("deploy/topology.yaml"),
    since: AbSince = "",
    as_json: Annotated[bool, typer.Option("--json", help="print the decision as JSON")] = False,
) -> None:
    """SRM check, guardrails, primary metric: promote (exit 0), continue (20), keep (21),
    stopped by SRM or a guardrail (22)."""
    import json

    from pipeline.ab import analysis

    setup_logging("WARNING")
    settings = _run(config.load_settings)
    name = _run(lambda: _environment(env))
    inputs = analysis.Inputs(
        outcomes=outcomes,
        logs=tuple(logs or ()),
        guardrails=guardrails,
        prometheus=prometheus,
        waive_guardrails=waive_guardrails,
    )
    if swarm:
        inputs = _swarm_inputs(settings, name, topology, inputs, since=since)
    decision = _run(lambda: analysis.run(settings, name, inputs))
    if as_json:
        typer.echo(json.dumps(decision.to_json(), indent=2))
    else:
        _decision_table(decision)
    raise typer.Exit(decision.exit_code)


@app.command("report")
def ab_report(
    env: AbEnv,
    outcomes: OutcomesFile = None,
    logs: LogFiles = None,
    guardrails: Annotated[Path | None, typer.Option(help="as for decide")] = None,
    swarm: Annotated[bool, typer.Option("--swarm", help="as for decide")] = False,
    topology: AbTopology = Path("deploy/topology.yaml"),
    since: AbSince = "",
    out_dir: Annotated[Path, typer.Option(help="where lift.png and report.html go")] = Path(
        "build/ab"
    ),
) -> None:
    """Plot the cumulative lift with its confidence band: lift.png and report.html."""
    from pipeline.ab import analysis
    from pipeline.ab.report import write_report

    setup_logging("WARNING")
    settings = _run(config.load_settings)
    name = _run(lambda: _environment(env))
    inputs = analysis.Inputs(
        outcomes=outcomes, logs=tuple(logs or ()), guardrails=guardrails, waive_guardrails=True
    )
    if swarm:
        inputs = _swarm_inputs(settings, name, topology, inputs, since=since)
    _, experiment = _run(lambda: analysis.experiment_of(settings, name))
    observations = _run(lambda: analysis.observe(experiment, inputs))
    decision = _run(lambda: analysis.run(settings, name, inputs))
    png, page = write_report(experiment, observations, decision, out_dir=out_dir / experiment.id)
    out.print(f"{decision.decision}: wrote {png} and {page}", soft_wrap=True)


def _bad_option(message: str) -> None:
    raise ConfigError(message)


def _swarm_inputs(
    settings: Any, env: Environment, topology: Path, given: Any, *, since: str
) -> Any:
    """--swarm: the stack's logs (build/ab/<env>/) and Prometheus, unless given explicitly."""
    from dataclasses import replace

    from pipeline.ab import analysis
    from pipeline.deploy.topology import load_topology

    shape = _run(lambda: load_topology(topology).get(env, path=topology))
    found = _run(
        lambda: analysis.swarm_inputs(
            settings,
            env,
            stack=shape.stack,
            stats_port=shape.entry.stats_port,
            out_dir=Path("build/ab") / env,
            since=since or None,
        )
    )
    return replace(
        given,
        logs=given.logs or found.logs,
        prometheus=given.prometheus or (None if given.guardrails else found.prometheus),
    )


def _decision_table(decision: Any) -> None:
    from rich.table import Table

    def fmt(value: float | None, spec: str) -> str:
        return "-" if value is None or value != value else format(value, spec)

    table = Table(title=f"experiment {decision.experiment} ({decision.metric}, {decision.method})")
    for column in ("variant", "units", "successes", "rate", "requests", "5xx", "p95 ms"):
        table.add_column(column)
    for v in decision.variants:
        table.add_row(
            v.variant.upper(),
            f"{v.units:,}",
            f"{v.successes:,}",
            fmt(v.rate, ".2%"),
            "-" if v.requests is None else f"{v.requests:,}",
            fmt(v.error_rate, ".2%"),
            fmt(v.p95_ms, ".1f"),
        )
    out.print(table)
    for c in decision.checks:
        mark = {"pass": "[green]✓[/green]", "fail": "[red]✗[/red]"}.get(c.status, "·")
        out.print(f"  {mark} {c.name}: {c.detail}", soft_wrap=True, highlight=False)
    low, high = decision.lift_ci
    stat = (
        f"z {fmt(decision.z, '.2f')}"
        if decision.z is not None
        else (f"e-value {fmt(decision.e_value, '.3g')}")
    )
    out.print(
        f"lift {fmt(decision.lift, '+.2%')} [{fmt(low, '+.2%')}, {fmt(high, '+.2%')}], "
        f"p {fmt(decision.p_value, '.3g')}, {stat}",
        highlight=False,
    )
    for note in decision.notes:
        out.print(f"  note: {note}", soft_wrap=True, highlight=False)
    out.print(
        f"decision: {decision.decision} (exit {decision.exit_code}): {decision.reason}",
        soft_wrap=True,
        highlight=False,
    )
