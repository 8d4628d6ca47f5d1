"""`pipeline`: the command line. The only package that imports the CLI framework; thin.

Each command parses its options and calls one function of the package. A `PipelineError`
becomes one line on stderr and its exit code (see :mod:`pipeline.errors`); anything else is a
bug and keeps its traceback. The DVC stages do not go through here (see pipeline/stages).
This module holds the pipeline and release commands; :mod:`pipeline.cli.deploy` the deploy ones
(`reconcile`, `status`, `render`, `autoscale`) and :mod:`pipeline.cli.ab` the A/B experiment
ones (`ab ...`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline import artifacts, config
from pipeline.cli import ab, deploy
from pipeline.cli.common import ParamsFile
from pipeline.cli.common import environment as _environment
from pipeline.cli.common import report_release as _report
from pipeline.cli.common import run as _run
from pipeline.console import err, gate_table, out, setup_logging
from pipeline.errors import ConfigError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)


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
def sweep(
    grid: Annotated[
        list[str],
        typer.Option(
            "--set", "-S", help="key=value1,value2 (params.yaml key; repeat: the grid's axes)"
        ),
    ],
    jobs: Annotated[
        int | None, typer.Option(help="trials at once (default: the cores, at most 4)")
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option(help="rank by this holdout metric (default: the first of validate.gates)"),
    ] = None,
    sample: Annotated[
        int | None, typer.Option("--random", help="N distinct combinations instead of all")
    ] = None,
    seed: Annotated[int, typer.Option(help="the --random draw's seed")] = 0,
    apply: Annotated[
        str, typer.Option(help="'best': dvc exp apply the winner (then run `dvc repro`)")
    ] = "",
    as_json: Annotated[bool, typer.Option("--json", help="print the ranking as JSON")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the trials")] = 3600,
    params_file: ParamsFile = Path("params.yaml"),
) -> None:
    """Grid or random search as queued DVC experiments up to `validate` (no image), one MLflow
    child run per trial under a parent run; a ranked table with the gates (docs/sweep.md)."""
    import json

    import yaml

    from pipeline.ml import sweep as search

    setup_logging()
    if apply not in ("", "best"):
        _run(lambda: _refuse_apply(apply))
    params = _run(lambda: config.load_params(params_file))
    settings = _run(config.load_settings)
    raw = yaml.safe_load(params_file.read_text())
    result = _run(
        lambda: search.sweep(
            params=params,
            settings=settings,
            raw_params=raw,
            specs=grid,
            jobs=search.default_jobs() if jobs is None else jobs,
            metric=metric,
            sample=sample,
            seed=seed,
            apply_best=apply == "best",
            timeout_s=timeout,
        )
    )
    if as_json:
        typer.echo(json.dumps(result.as_json(), indent=2))
    else:
        _sweep_table(result)
    failed = [t for t in result.trials if t.outcome == "failed"]
    for trial in failed:
        err.print(f"--- trial {trial.name} failed; its log (`dvc queue logs {trial.name}`):")
        err.print(trial.log or "(empty log)", markup=False, highlight=False)
    if result.applied:
        (err if as_json else out).print(
            f"applied {result.applied} to the workspace (params.yaml, dvc.lock, models/); next: "
            "`dvc repro` (re-validates it here, sets @candidate, builds its image)",
            soft_wrap=True,
        )
    if failed:
        _run(lambda: _sweep_failed(f"{len(failed)} trial(s) failed: {[t.name for t in failed]}"))
    if result.best is None:
        _run(lambda: _no_winner(len(result.trials)))


def _sweep_table(result: Any) -> None:
    from rich.table import Table

    table = Table(
        title=f"sweep: {len(result.trials)} trial(s) in {result.seconds:.0f} s, ranked by "
        f"holdout {result.metric} (MLflow parent run {result.parent_run_id})"
    )
    for column in ("rank", "experiment", "params", result.metric, "gates", "version"):
        table.add_column(column)
    for i, t in enumerate(result.trials, 1):
        value = t.metrics.get(result.metric)
        if t.gates is None:
            gates = "-"
        else:
            failing = [f"{r.metric} {r.gate}" for r in t.gates.rows if not r.passed]
            gates = "[red]FAIL[/red] " + ", ".join(failing) if failing else "[green]pass[/green]"
        table.add_row(
            str(i),
            t.name + ("" if t.outcome != "failed" else " [red](failed)[/red]"),
            " ".join(
                o.partition("=")[0].rsplit(".", 1)[-1] + "=" + o.partition("=")[2]
                for o in t.overrides
            ),
            "-" if value is None else f"{value:.4f}",
            gates,
            t.version or "-",
        )
    out.print(table)


def _refuse_apply(value: str) -> None:
    raise ConfigError(f"--apply {value!r}: the only choice is 'best'")


def _sweep_failed(message: str) -> None:
    from pipeline.ml.sweep import SweepFailed

    raise SweepFailed(message + ": their logs are above")


def _no_winner(count: int) -> None:
    from pipeline.errors import GateFailed

    raise GateFailed(f"none of the {count} trial(s) passed every quality gate", rows=[])


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


@app.command("train-image")
def train_image(
    name: Annotated[str, typer.Option(help="image repository; tags: content hash, latest")] = (
        "pipeline-train"
    ),
    rebuild: Annotated[
        bool, typer.Option(help="build even if the content tag exists, with no build cache")
    ] = False,
    params_file: ParamsFile = Path("params.yaml"),
) -> None:
    """Build the training image pipeline-train: pipeline.lock, git and this package, offline.

    See docs/training-image.md."""
    from pipeline.image.engine import Engine
    from pipeline.image.train import build_train_image

    setup_logging()
    params = _run(lambda: config.load_params(params_file))
    built = _run(
        lambda: build_train_image(params.image, engine=Engine.connect(), name=name, rebuild=rebuild)
    )
    what = f"built in {built.seconds} s" if built.built else "already built"
    out.print(
        f"{built.ref} = {built.latest} ({built.size / 1e6:.0f} MB, on {built.base}): {what}",
        soft_wrap=True,
    )


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


app.command()(deploy.reconcile)
app.command()(deploy.status)
app.command()(deploy.autoscale)
app.add_typer(deploy.render_app, name="render")
app.add_typer(ab.app, name="ab")


def main() -> None:
    app(prog_name="pipeline")
