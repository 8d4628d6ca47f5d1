"""What a person sees on the terminal: log lines, one-line errors, the gate table.

Shared by the `pipeline` command (:mod:`pipeline.cli`) and the DVC stages
(``python -m pipeline.stages.X``), which must not import the CLI: a stage's code is a DVC
dependency, and the command's help texts are not. Domain code never prints; it logs, returns
records, or raises a :class:`~pipeline.errors.PipelineError`, which becomes one line here.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from pipeline.errors import DataValidationError, GateFailed, PipelineError, redact_text

err = Console(stderr=True)
out = Console()
T = TypeVar("T")


class _Redacting(logging.Filter):
    """The last guard: no log line shows a URI's user name or password (pipeline/errors.py)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


@contextmanager
def quieted(name: str, level: int) -> Iterator[None]:
    """Inside the block, the logger ``name`` passes only records at ``level`` or above (a
    library that logs what the caller turns into its own one-line message, or chatters)."""
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)


def setup_logging(level: str = "INFO") -> None:
    handler = RichHandler(console=err, show_path=False, show_time=False, markup=False)
    handler.addFilter(_Redacting())
    logging.basicConfig(level=logging.WARNING, format="%(message)s", handlers=[handler], force=True)
    logging.getLogger("pipeline").setLevel(level)
    for noisy in ("great_expectations", "mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def explain(exc: PipelineError) -> None:
    """The error as a person reads it: one line (plus the failed rows it carries)."""
    if isinstance(exc, DataValidationError):
        for failure in exc.failures:
            err.print(f"  [red]✗[/red] {failure}", markup=True, highlight=False)
    if isinstance(exc, GateFailed):
        gate_table(exc.rows, console=err)
    message = redact_text(str(exc))
    err.print(f"error: {message}", style="red", highlight=False, soft_wrap=True, markup=False)


def guarded(action: Callable[[], T]) -> T:
    """Run ``action``; a PipelineError becomes its one-line explanation and its exit code."""
    try:
        return action()
    except PipelineError as exc:
        explain(exc)
        sys.exit(exc.exit_code)


def run_stage(action: Callable[[], Any]) -> NoReturn:
    """The body of a stage's ``main()``: logging, the stage, one line on failure, exit code."""
    setup_logging()
    guarded(action)
    sys.exit(0)


def gate_table(rows: list[Any], *, console: Console) -> None:
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


def print_table(
    title: str,
    columns: tuple[str, ...],
    rows: Sequence[Sequence[str]],
    *,
    console: Console,
    show_header: bool = True,
) -> None:
    """A plain table of strings (the deploy commands' plan, rollout and status tables)."""
    table = Table(title=title, show_header=show_header)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)
