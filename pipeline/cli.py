"""`pipeline`: the command line. The only module that imports the CLI framework; thin.

Each command parses its options and calls one function of the package. A `PipelineError`
becomes one line on stderr and its exit code (see :mod:`pipeline.errors`); anything else is a
bug and keeps its traceback. The DVC stages do not go through here (see pipeline/stages).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline import artifacts, config
from pipeline.console import gate_table, guarded, out, setup_logging
from pipeline.errors import ConfigError
from pipeline.release.state import ENVIRONMENTS, Environment

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)
ParamsFile = Annotated[Path, typer.Option("--params", help="the params file")]
_run = guarded


@app.command()
def prepare(params_file: ParamsFile = Path("params.yaml")) -> None:
    """Load the raw data, run the Great Expectations suite, write the stratified split."""
    from pipeline.stages.prepare import prepare as step

    setup_logging()
    params = _run(lambda: config.load_params(params_file))
    _run(lambda: step(params))


@app.command()
def train(params_file: ParamsFile = Path("params.yaml")) -> None:
    """Fit the model, log it to MLflow and register a new version."""
    from pipeline.stages.train import train as step

    setup_logging()
    params = _run(lambda: config.load_params(params_file))
    settings = _run(config.load_settings)
    _run(lambda: step(params, settings))


@app.command()
def validate(params_file: ParamsFile = Path("params.yaml")) -> None:
    """Holdout metrics, plots, quality gates, champion comparison; @candidate on success."""
    from pipeline.stages.validate import validate as step

    setup_logging()
    params = _run(lambda: config.load_params(params_file))
    settings = _run(config.load_settings)
    verdict = _run(lambda: step(params, settings))
    gate_table(verdict.rows, console=out)


@app.command()
def containerize(params_file: ParamsFile = Path("params.yaml")) -> None:
    """Build the serving image (Docker Engine API), check its size, smoke-test it."""
    from pipeline.stages.containerize import containerize as step

    setup_logging()
    params = _run(lambda: config.load_params(params_file))
    _run(lambda: step(params))


@app.command()
def serve(
    model_dir: Annotated[
        Path, typer.Option(help="folder with model.json, model.pkl, model.onnx")
    ] = Path("models"),
    port: Annotated[int, typer.Option(help="TCP port")] = 8080,
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
) -> None:
    """Serve the model over HTTP (MLflow scoring protocol + Open Inference Protocol).

    Other settings (workers, max rows, runtime, log level) come from SERVING_* variables.
    """
    from serving import server
    from serving.errors import SettingsError

    def start() -> None:
        try:
            server.serve(model_dir=model_dir, host=host, port=port)
        except SettingsError as exc:
            raise ConfigError(f"environment: {exc}") from None

    _run(start)


@app.command("contract-test")
def contract_test(
    image: Annotated[
        str, typer.Option(help="image to test; default: the one build/image.json names")
    ] = "",
    out_dir: Annotated[Path, typer.Option(help="where the report, JUnit and log go")] = Path(
        "build"
    ),
    params_file: ParamsFile = Path("params.yaml"),
) -> None:
    """Run the contract suite against the image in a container; write build/contract-report.json."""
    from pipeline.release import contract_runner

    setup_logging()
    params = _run(lambda: config.load_params(params_file))
    ref = image or _run(lambda: artifacts.read_image().image)
    report = _run(
        lambda: contract_runner.contract_test(
            image_ref=ref, params=params, params_file=params_file, out_dir=out_dir
        )
    )
    tests = sum(sum(c.values()) for c in report.checks.values())
    out.print(
        f"contract: pass — {tests} tests, {report.fuzz_cases} fuzz cases, ready in "
        f"{report.time_to_ready_s} s, p95 {report.latency_ms.get('p95')} ms; report: "
        f"{out_dir / artifacts.CONTRACT_REPORT.name}"
    )


@app.command()
def wheels() -> None:
    """Download the wheels requirements/serving.lock pins for the image into build/wheels."""
    from pipeline.image.wheels import resolve_wheels

    setup_logging()
    out.print(f"{_run(resolve_wheels)} matches requirements/serving.lock")


@app.command("suggest-expectations")
def suggest_expectations(
    output: Annotated[Path, typer.Option(help="where to write the suite")],
    force: Annotated[bool, typer.Option(help="overwrite an existing suite")] = False,
    params_file: ParamsFile = Path("params.yaml"),
) -> None:
    """Write a starter Great Expectations suite from the configured data (review, then commit).

    It passes on the data it came from; the table shows what it inferred per column."""
    from rich.table import Table

    from pipeline.ml import data, data_checks

    if output.exists() and not force:
        _run(lambda: _refuse(output))
    params = _run(lambda: config.load_params(params_file, suite_optional=True))
    raw = _run(lambda: data.load_raw(params.data))
    suite, inferred = data_checks.suggest_suite(raw, target=params.data.target, name=output.stem)
    table = Table(title=f"{params.data.source}: {len(raw)} rows")
    for column in ("column", "kind", "missing", "expected"):
        table.add_column(column)
    for row in inferred:
        table.add_row(row.column, row.kind, row.nulls, "; ".join(row.checks) or "-")
    out.print(table)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(data_checks.render_suite(suite))
    out.print(
        f"wrote {len(suite['expectations'])} expectations to {output}: review it, then set "
        f"data.expectations: {output} in params.yaml"
    )


def _refuse(output: Path) -> None:
    raise ConfigError(f"{output} exists: pass --force to overwrite it (then review the diff)")


@app.command()
def push() -> None:
    """Push the built image (build/image.json) as sha-<git sha> and its content tag; record
    the digest. Registry and auth: REGISTRY, IMAGE_REPOSITORY, REGISTRY_* (docs/release.md)."""
    from pipeline.release.push import push as push_image

    setup_logging()
    settings = _run(config.load_settings)
    pushed = _run(lambda: push_image(settings)).registry
    assert pushed is not None  # push() records it or raises
    out.print(
        f"pushed {pushed.ref} ({', '.join(pushed.tags)}) in {pushed.seconds} s; "
        f"digest recorded in {artifacts.IMAGE}",
        soft_wrap=True,
    )


@app.command()
def keygen(
    name: Annotated[str, typer.Option(help="the key's name: release/signers/NAME.pub")] = "release",
    private_key: Annotated[
        Path | None,
        typer.Option(
            help="where the private key goes, outside git "
            "(default ~/.config/gitops-ml-pipeline/NAME.key)"
        ),
    ] = None,
) -> None:
    """Make a release signing key: the private key outside git, the public key among the
    trusted signers (commit it; put the private key in the release environment's secret)."""
    from pipeline.release import signing

    settings = _run(config.load_settings)
    target = private_key or Path.home() / ".config" / "gitops-ml-pipeline" / f"{name}.key"
    private, public = _run(
        lambda: signing.keygen(
            name=name, private_path=target, signers_dir=settings.release_signers_dir
        )
    )
    out.print(
        f"private key: {private} (mode 0600; never commit it; CI: the RELEASE_SIGNING_KEY secret "
        f"of the `release` environment)\npublic key: {public} (commit it: promote trusts it)",
        soft_wrap=True,
    )


@app.command()
def sbom(
    image: Annotated[str, typer.Option(help="image; default: the one build/image.json names")] = "",
    output: Annotated[Path, typer.Option(help="where the SBOM goes")] = Path("build/sbom.cdx.json"),
) -> None:
    """Write a CycloneDX SBOM of the Python environment inside the image."""
    from pipeline.image.engine import Engine
    from pipeline.release.sbom import write_sbom

    setup_logging()
    ref = image or _run(lambda: artifacts.read_image().image)
    document = _run(lambda: write_sbom(Engine.connect(), ref, output))
    out.print(f"SBOM of {ref}: {len(document.get('components', []))} packages in {output}")


@app.command()
def sign(
    report: Annotated[Path, typer.Option(help="the contract report")] = artifacts.CONTRACT_REPORT,
    sbom: Annotated[Path, typer.Option(help="the image's SBOM")] = Path("build/sbom.cdx.json"),
) -> None:
    """Sign the contract report, SBOM and build provenance as in-toto statements about the
    pushed digest (DSSE, the release key: RELEASE_SIGNING_KEY[_FILE]); no registry needed."""
    from pipeline.release import evidence as release

    setup_logging()
    settings = _run(config.load_settings)
    written = _run(lambda: release.sign(settings, report_path=report, sbom_path=sbom))
    out.print(f"signed: {', '.join(str(p) for p in written.values())}", soft_wrap=True)


@app.command()
def attest(
    image: Annotated[
        str, typer.Option(help="tag or digest; default: the digest build/image.json records")
    ] = "",
) -> None:
    """Attach the signed statements of `pipeline sign` to the image digest (OCI referrers);
    each is verified against release/signers/ first."""
    from pipeline.release import evidence as release

    setup_logging()
    settings = _run(config.load_settings)
    evidence = _run(lambda: release.attest(settings, image=image or None))
    kinds = ", ".join(f"{k} {d}" for k, d in evidence.artifacts.items())
    out.print(
        f"evidence attached to {evidence.subject}, signed by {evidence.signer}: {kinds}",
        soft_wrap=True,
    )


Env = Annotated[str, typer.Option("--to", help="staging or production")]


@app.command()
def promote(
    image: Annotated[str, typer.Option(help="tag or digest (sha256:...) in IMAGE_REPOSITORY")],
    to: Env,
) -> None:
    """Move an environment's tag to a tested digest (no rebuild); write deploy/<env>.yaml."""
    from pipeline.release import promotion

    setup_logging()
    settings = _run(config.load_settings)
    env = _run(lambda: _environment(to))
    _report(_run(lambda: promotion.promote(settings, ref=image, env=env)), settings)


@app.command()
def rollback(
    env: Annotated[str, typer.Option("--env", help="staging or production")],
    to: Annotated[
        str,
        typer.Option(
            "--to", help="a digest from deploy/<env>.yaml's history; default: the previous one"
        ),
    ] = "",
    reason: Annotated[
        str, typer.Option(help="why, recorded in deploy/<env>.yaml (e.g. the failed rollout)")
    ] = "",
) -> None:
    """Go back to an earlier digest of deploy/<env>.yaml's history (evidence re-checked); a
    second rollback goes further back, never to the digest the first one left."""
    from pipeline.release import promotion

    setup_logging()
    settings = _run(config.load_settings)
    name = _run(lambda: _environment(env))
    outcome = _run(
        lambda: promotion.rollback(settings, env=name, to=to or None, reason=reason or None)
    )
    for message in outcome.skipped:
        out.print(message, soft_wrap=True)
    _report(outcome, settings)


def _environment(name: str) -> Environment:
    for env in ENVIRONMENTS:
        if name == env:
            return env
    raise ConfigError(f"unknown environment {name!r}: use {' or '.join(ENVIRONMENTS)}")


def _report(outcome: Any, settings: config.Settings) -> None:
    state = outcome.state
    what = f"{state.environment} = {state.image.repository}@{state.image.digest}"
    model = f"{state.model.name} version {state.model.version}"
    if not outcome.changed:
        out.print(f"{what} already ({model}): nothing changed", soft_wrap=True)
        return
    signer = state.evidence.signer or "?"
    out.print(
        f"{state.action}: {what} ({model}, @{state.environment} in MLflow; evidence signed by "
        f"{signer}); tag moved in "
        f"{outcome.seconds * 1000:.0f} ms; wrote {settings.deploy_dir / state.environment}.yaml "
        "(commit it)",
        soft_wrap=True,
    )


# --- A/B experiments: pipeline ab ... (pipeline/ab; docs/ab-experiments.md) -------------------

ab_app = typer.Typer(
    no_args_is_help=True,
    help="A/B experiments: a candidate on a sticky share of users, and a decision to gate on.",
)
app.add_typer(ab_app, name="ab")
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


@ab_app.command("start")
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


@ab_app.command("ramp")
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


@ab_app.command("stop")
def ab_stop(env: AbEnv, note: Note = "") -> None:
    """Share 0: the next reconcile removes the candidate's service (the record stays)."""
    from pipeline.ab import lifecycle

    setup_logging()
    settings = _run(config.load_settings)
    name = _run(lambda: _environment(env))
    done = _run(lambda: lifecycle.stop(settings, env=name, note=note))
    out.print(f"experiment {done.id} in {env}: stopped; everyone gets the champion")


@ab_app.command("conclude")
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


@ab_app.command("decide")
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


@ab_app.command("report")
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


@app.command()
def summary(
    metrics_diff: Annotated[
        Path | None, typer.Option(help="`dvc metrics diff --json` output to show")
    ] = None,
    diff_base: Annotated[
        str, typer.Option(help="the revision that diff compared against (shown)")
    ] = "",
    release: Annotated[
        Path | None,
        typer.Option(help="a deploy/<env>.yaml: summarise that promotion instead of a run"),
    ] = None,
    evidence: Annotated[
        Path | None,
        typer.Option(help="build/evidence: summarise a release job (digest, signed statements)"),
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="append here (e.g. $GITHUB_STEP_SUMMARY); default: stdout")
    ] = None,
) -> None:
    """Markdown job summary of a run (metrics, diff, gates, image, contract) or a promotion."""
    from pipeline.release import summary as render

    if release is not None:
        text = _run(lambda: render.release_summary(release))
    elif evidence is not None:
        text = _run(lambda: render.release_run_summary(artifacts.IMAGE, evidence))
    else:
        files = render.RunFiles(metrics_diff=metrics_diff)
        text = _run(lambda: render.ci_summary(files, diff_base=diff_base))
    if output is None:
        typer.echo(text, nl=False)
        return
    with output.open("a") as handle:
        handle.write(text)


# --- deploy: reconcile, status, render (pipeline/deploy; docs/deploy.md) -----------------------

Topology = Annotated[Path, typer.Option("--topology", help="the serving shape per environment")]
DeployEnv = Annotated[str, typer.Option("--env", help="staging or production")]


def _desired(env: str, topology: Path, params_file: Path | None, *, build_entry: bool) -> Any:
    """Settings, the environment's topology, and a function rendering its desired state (with
    ``params_file`` None, the entry image is the rendered or running one: nothing is built)."""
    from pipeline.deploy import reconcile as deploy
    from pipeline.deploy import status as deploy_status
    from pipeline.deploy.swarm import Swarm
    from pipeline.deploy.topology import load_topology

    settings = _run(config.load_settings)
    name = _run(lambda: _environment(env))
    shape = _run(lambda: load_topology(topology).get(name, path=topology))
    if params_file is None:
        swarm = _run(Swarm)

        def known() -> Any:
            entry = deploy_status.rendered_entry_image(
                settings.deploy_dir, name, swarm, shape.stack
            )
            return deploy.desired_state(settings, shape, env=name, image=None, entry_image=entry)

        return settings, shape, known
    params = _run(lambda: config.load_params(params_file))

    def rendered() -> Any:
        return deploy.desired_state(
            settings, shape, env=name, image=params.image, build_entry=build_entry
        )

    return settings, shape, rendered


@app.command()
def reconcile(
    env: DeployEnv,
    dry_run: Annotated[bool, typer.Option(help="show what would change; apply nothing")] = False,
    watch: Annotated[bool, typer.Option(help="keep reconciling (drift is reverted)")] = False,
    interval: Annotated[float, typer.Option(help="seconds between --watch passes")] = 30.0,
    topology: Topology = Path("deploy/topology.yaml"),
    report: Annotated[
        Path | None, typer.Option(help="outcome JSON; default build/deploy/<env>.reconcile.json")
    ] = None,
    params_file: ParamsFile = Path("params.yaml"),
) -> None:
    """Make the Swarm stack run deploy/<env>.yaml: render, diff, `docker stack deploy`, verify.

    Exit 10 when Swarm rolled the update back (then `pipeline rollback --env E`), 9 when it did
    not converge otherwise; the table says which service runs what."""
    from pipeline.console import err, explain, print_table
    from pipeline.deploy import reconcile as deploy
    from pipeline.deploy import watch as deploy_watch
    from pipeline.deploy.swarm import Swarm
    from pipeline.errors import PipelineError, RolloutFailed

    setup_logging()
    settings, shape, render = _desired(env, topology, params_file, build_entry=not dry_run)
    swarm = _run(Swarm)
    path = report or Path("build/deploy") / f"{env}.reconcile.json"
    failed_file = Path("build/deploy") / f"{env}.failed.json"

    def show(result: Any) -> None:
        outcome = result.outcome if isinstance(result, RolloutFailed) else result
        deploy.write_report(outcome, path)
        rows = [
            (r.service, r.desired, r.running, r.state if r.ok else f"[red]{r.state}[/red]", r.error)
            for r in outcome.rows
        ]
        columns = ("service", "desired", "running", "state", "task error")
        print_table("rollout", columns, rows, console=out if outcome.ok else err)
        code = outcome.deploy_exit_code
        verdict = "ok" if outcome.ok else ("ROLLED BACK" if outcome.rolled_back else "FAILED")
        out.print(
            f"reconcile {env}: {verdict} in {outcome.seconds:.1f} s; docker stack deploy exit "
            f"code {code if code is not None else '- (not run)'}; report {path}",
            soft_wrap=True,
        )

    if watch:
        if dry_run:
            explain(ConfigError("--watch applies what it finds: drop --dry-run"))
            raise typer.Exit(ConfigError.exit_code)
        out.print(f"watching {env} every {interval:g} s (Ctrl-C stops)")
        try:
            deploy_watch.watch(
                lambda: _run(render),
                swarm,
                deploy_dir=settings.deploy_dir,
                timeout=shape.update.timeout_s,
                interval=interval,
                report=show,
                failed_file=failed_file,
            )
        except KeyboardInterrupt:
            return
        return
    desired = _run(render)
    try:
        with deploy_watch.exclusive(env):
            outcome = deploy.reconcile(
                swarm,
                desired,
                deploy_dir=settings.deploy_dir,
                timeout=shape.update.timeout_s,
                dry_run=dry_run,
            )
    except RolloutFailed as exc:
        show(exc)
        deploy_watch.record_failed(failed_file, desired, exc.outcome.reason() or str(exc))
        explain(exc)
        raise typer.Exit(exc.exit_code) from None
    except PipelineError as exc:
        explain(exc)
        raise typer.Exit(exc.exit_code) from None
    plan_rows = [
        (
            desired.service(c.service),
            c.action,
            ", ".join(c.fields),
            deploy.short_image(c.live_image) if c.live_image else "-",
            deploy.short_image(c.desired_image),
        )
        for c in outcome.changes
    ]
    columns = ("service", "action", "fields", "live", "desired")
    print_table(f"{env}: desired (git) vs live", columns, plan_rows, console=out)
    if dry_run:
        out.print(f"dry run: nothing applied; would write {outcome.stack_file}", soft_wrap=True)
        return
    if not outcome.applied:
        deploy.write_report(outcome, path)
        out.print(f"reconcile {env}: in sync ({desired.model_digest}); nothing applied")
        return
    show(outcome)


@app.command()
def status(
    env: DeployEnv,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object on stdout")] = False,
    markdown: Annotated[
        Path | None, typer.Option(help="also append a Markdown table here ($GITHUB_STEP_SUMMARY)")
    ] = None,
    topology: Topology = Path("deploy/topology.yaml"),
) -> None:
    """Desired (git) vs live (Swarm): digest, model version, replicas, last update, drift.

    Exit 1 when they differ (drift, a pending update, nothing deployed)."""
    import json
    from dataclasses import asdict

    from pipeline.console import print_table
    from pipeline.deploy import status as deploy_status
    from pipeline.deploy.swarm import Swarm

    setup_logging("WARNING")
    _settings, _shape, render = _desired(env, topology, None, build_entry=False)
    swarm = _run(Swarm)
    found = _run(lambda: deploy_status.status(swarm, _run(render)))
    if markdown is not None:
        with markdown.open("a") as handle:
            handle.write(deploy_status.status_markdown(found))
    if as_json:
        typer.echo(json.dumps(asdict(found), indent=2))
        raise typer.Exit(0 if found.in_sync else 1)
    live = found.live_digest or "nothing deployed"
    rows = [
        ("desired (git)", f"{found.desired_digest} (model version {found.desired_version})"),
        ("live (Swarm)", f"{live} (model version {found.live_version or '-'})"),
        ("running", ", ".join(found.running_digests) or "-"),
        ("replicas ready", f"{found.replicas_ready}/{found.replicas_desired}"),
        ("last update", f"{found.update_state or '-'} {found.update_message}".strip()),
        ("drift", "; ".join(found.drift) or "none"),
        ("in sync", "yes" if found.in_sync else f"no: `pipeline reconcile --env {env}`"),
    ]
    title = f"{env} ({found.stack})"
    print_table(title, ("what", "value"), rows, console=out, show_header=False)
    if not found.in_sync:
        raise typer.Exit(1)


render_app = typer.Typer(no_args_is_help=True, help="Render deployment manifests.")
app.add_typer(render_app, name="render")


@render_app.command("k8s")
def render_k8s(
    env: Annotated[
        list[str] | None, typer.Option("--env", help="environment(s); default: every one")
    ] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="where the manifests go")] = Path(
        "deploy/k8s"
    ),
    topology: Topology = Path("deploy/topology.yaml"),
    repo_url: Annotated[
        str, typer.Option(help="git URL Argo CD syncs from (default: the origin remote)")
    ] = "",
) -> None:
    """Kustomize base + per-environment overlays and Argo CD Applications (image by digest)."""
    from pipeline.deploy import k8s
    from pipeline.deploy.topology import load_topology

    setup_logging()
    settings = _run(config.load_settings)
    shapes = _run(lambda: load_topology(topology))
    names: list[str] | None = None
    if env:
        names = [str(_run(lambda n=n: _environment(n))) for n in env]  # type: ignore[misc]
    written = _run(
        lambda: k8s.write(settings, shapes, out_dir=out_dir, envs=names, repo_url=repo_url)
    )
    out.print(f"wrote {len(written)} files under {out_dir}")


@render_app.command("podman")
def render_podman(
    env: DeployEnv,
    out_dir: Annotated[Path, typer.Option("--out", help="where the manifest goes")] = Path(
        "deploy/podman"
    ),
    topology: Topology = Path("deploy/topology.yaml"),
) -> None:
    """A single-host manifest for `podman kube play` (one replica, the entry port; no rollout)."""
    from pipeline.deploy import k8s
    from pipeline.deploy.topology import load_topology

    setup_logging()
    settings = _run(config.load_settings)
    name = _run(lambda: _environment(env))
    shapes = _run(lambda: load_topology(topology))
    path = _run(lambda: k8s.write_podman(settings, shapes, env=name, out_dir=out_dir))
    port = shapes.get(name).entry.port
    out.print(f"wrote {path}: `podman kube play {path}` serves on port {port}")


def main() -> None:
    app(prog_name="pipeline")


if __name__ == "__main__":
    main()
