"""`pipeline`: the command line. The only module that imports the CLI framework.

A `PipelineError` becomes one line on stderr and its exit code (2 for configuration errors);
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from pipeline import config
from pipeline.errors import DataValidationError, GateFailed, PipelineError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)
err = Console(stderr=True)
out = Console()
T = TypeVar("T")
ParamsFile = Annotated[Path, typer.Option("--params", help="the params file")]


def _logging(level: str = "INFO") -> None:
    handler = RichHandler(console=err, show_path=False, show_time=False, markup=False)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", handlers=[handler], force=True)
    logging.getLogger("pipeline").setLevel(level)
    for noisy in ("great_expectations", "mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def _run(action: Callable[[], T]) -> T:
    """Run a step; turn a PipelineError into a one-line message and its exit code."""
    try:
        return action()
    except DataValidationError as exc:
        for failure in exc.failures:
            err.print(f"  [red]✗[/red] {failure}", markup=True, highlight=False)
        err.print(f"error: {exc}", style="red", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except GateFailed as exc:
        _gate_table(exc.rows, console=err)
        err.print(f"error: {exc}", style="red", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except PipelineError as exc:
        err.print(f"error: {exc}", style="red", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None


def _gate_table(rows: list[Any], *, console: Console) -> None:
    table = Table(title="quality gates")
    for column in ("gate", "metric", "requirement", "champion", "candidate", "result"):
        table.add_column(column)
    for r in rows:
        champion = "-" if r.champion is None else f"{r.champion:.4f}"
        result = "[green]pass[/green]" if r.passed else "[red]FAIL[/red]"
        note = f" ({r.note})" if r.note else ""
        table.add_row(
            r.gate, r.metric, r.requirement, champion, f"{r.candidate:.4f}", result + note
        )
    console.print(table)


@app.command()
def prepare(params_file: ParamsFile = Path("params.yaml")) -> None:
    """Load the raw data, run the Great Expectations suite, write the stratified split."""
    from pipeline.steps.prepare import prepare as step

    _logging()
    params = _run(lambda: config.load_params(params_file))
    _run(lambda: step(params))


@app.command()
def train(params_file: ParamsFile = Path("params.yaml")) -> None:
    """Fit the model, log it to MLflow and register a new version."""
    from pipeline.steps.train import train as step

    _logging()
    params = _run(lambda: config.load_params(params_file))
    settings = _run(config.load_settings)
    _run(lambda: step(params, settings))


@app.command()
def validate(params_file: ParamsFile = Path("params.yaml")) -> None:
    """Holdout metrics, plots, quality gates, champion comparison; @candidate on success."""
    from pipeline.steps.validate import validate as step

    _logging()
    params = _run(lambda: config.load_params(params_file))
    settings = _run(config.load_settings)
    verdict = _run(lambda: step(params, settings))
    _gate_table(verdict.rows, console=out)


@app.command()
def containerize(params_file: ParamsFile = Path("params.yaml")) -> None:
    """Build the serving image (Docker Engine API), check its size, smoke-test it."""
    from pipeline.steps.containerize import containerize as step

    _logging()
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
    from pipeline.serving import server

    _run(lambda: server.serve(model_dir=model_dir, host=host, port=port))


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
    from pipeline import contract

    _logging()
    params = _run(lambda: config.load_params(params_file))
    ref = image or _run(_built_image)
    report = _run(
        lambda: contract.contract_test(
            image_ref=ref, params=params, params_file=params_file, out_dir=out_dir
        )
    )
    latency = report["latency_ms"]
    out.print(
        f"contract: pass — {sum(sum(c.values()) for c in report['checks'].values())} tests, "
        f"{report['fuzz_cases']} fuzz cases, ready in {report['time_to_ready_s']} s, "
        f"p95 {latency['p95']} ms; report: {out_dir / 'contract-report.json'}"
    )


def _built_image() -> str:
    path = Path("build/image.json")
    if not path.is_file():
        raise PipelineError(
            "no build/image.json: build the image first (`dvc repro`) or pass --image"
        )
    return str(json.loads(path.read_text())["image"])


@app.command()
def wheels() -> None:
    """Download the wheels requirements/serving.lock pins for the image into build/wheels."""
    from pipeline.wheels import resolve_wheels

    _logging()
    out.print(f"{_run(resolve_wheels)} matches requirements/serving.lock")


@app.command("suggest-expectations")
def suggest_expectations(
    output: Annotated[Path, typer.Option(help="where to write the suite")],
    params_file: ParamsFile = Path("params.yaml"),
) -> None:
    """Write a starter Great Expectations suite from the configured data (review, then commit)."""
    from pipeline import data, data_checks

    params = _run(lambda: config.load_params(params_file))
    raw = _run(lambda: data.load_raw(params.data))
    suite = data_checks.suggest_suite(raw, target=params.data.target, name=output.stem)
    output.write_text(data_checks.render_suite(suite))
    out.print(f"wrote {len(suite['expectations'])} expectations to {output}")


@app.command()
def push() -> None:
    """Push the built image (build/image.json) as sha-<git sha> and its content tag; record
    the digest. Registry and auth: REGISTRY, IMAGE_REPOSITORY, REGISTRY_* (docs/release.md)."""
    from pipeline import release

    _logging()
    settings = _run(config.load_settings)
    built = _run(lambda: release.push(settings))
    pushed = built["registry"]
    out.print(
        f"pushed {pushed['ref']} ({', '.join(pushed['tags'])}) in {pushed['seconds']} s; "
        "digest recorded in build/image.json",
        soft_wrap=True,
    )


@app.command()
def attest(
    report: Annotated[Path, typer.Option(help="the contract report")] = Path(
        "build/contract-report.json"
    ),
    image: Annotated[
        str, typer.Option(help="tag or digest it is evidence for; default: the report's digest")
    ] = "",
) -> None:
    """Push a passing contract report as an OCI artifact referring to the image digest."""
    from pipeline import release

    _logging()
    settings = _run(config.load_settings)
    evidence = _run(lambda: release.attest(settings, report_path=report, image=image or None))
    out.print(f"evidence {evidence.digest} attached to {evidence.subject}", soft_wrap=True)


Env = Annotated[str, typer.Option("--to", help="staging or production")]


@app.command()
def promote(
    image: Annotated[str, typer.Option(help="tag or digest (sha256:...) in IMAGE_REPOSITORY")],
    to: Env,
) -> None:
    """Move an environment's tag to a tested digest (no rebuild); write deploy/<env>.yaml."""
    from pipeline import promotion

    _logging()
    settings = _run(config.load_settings)
    env = _run(lambda: _environment(to))
    _report(_run(lambda: promotion.promote(settings, ref=image, env=env)), settings)


@app.command()
def rollback(
    env: Annotated[str, typer.Option("--env", help="staging or production")],
) -> None:
    """Promote the previous digest in deploy/<env>.yaml's history back (evidence re-checked)."""
    from pipeline import promotion

    _logging()
    settings = _run(config.load_settings)
    name = _run(lambda: _environment(env))
    _report(_run(lambda: promotion.rollback(settings, env=name)), settings)


def _environment(name: str) -> Literal["staging", "production"]:
    if name == "staging":
        return "staging"
    if name == "production":
        return "production"
    raise PipelineError(f"unknown environment {name!r}: use staging or production")


def _report(outcome: Any, settings: config.Settings) -> None:
    state = outcome.state
    what = f"{state.environment} = {state.image.repository}@{state.image.digest}"
    model = f"{state.model.name} version {state.model.version}"
    if not outcome.changed:
        out.print(f"{what} already ({model}): nothing changed", soft_wrap=True)
        return
    out.print(
        f"{state.action}: {what} ({model}, @{state.environment} in MLflow); tag moved in "
        f"{outcome.seconds * 1000:.0f} ms; wrote {settings.deploy_dir / state.environment}.yaml "
        "(commit it)",
        soft_wrap=True,
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
    output: Annotated[
        Path | None, typer.Option(help="append here (e.g. $GITHUB_STEP_SUMMARY); default: stdout")
    ] = None,
) -> None:
    """Markdown job summary of a run (metrics, diff, gates, image, contract) or a promotion."""
    from pipeline import summary as render

    if release is not None:
        text = _run(lambda: render.release_summary(release))
    else:
        files = render.RunFiles(metrics_diff=metrics_diff)
        text = _run(lambda: render.ci_summary(files, diff_base=diff_base))
    if output is None:
        typer.echo(text, nl=False)
        return
    with output.open("a") as handle:
        handle.write(text)


def main() -> None:
    app(prog_name="pipeline")


if __name__ == "__main__":
    main()
