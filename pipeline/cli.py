"""`pipeline`: the command line. The only module that imports the CLI framework.

A `PipelineError` becomes one line on stderr and its exit code (2 for configuration errors);
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

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

    server.serve(model_dir=model_dir, host=host, port=port)


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


def main() -> None:
    app(prog_name="pipeline")


if __name__ == "__main__":
    main()
