"""What the command modules share: the error guard, the environment option's check, and how a
release outcome is printed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline import config
from pipeline.console import guarded, out
from pipeline.errors import ConfigError
from pipeline.release.state import ENVIRONMENTS, Environment

__all__ = ["ParamsFile", "environment", "report_release", "run"]

ParamsFile = Annotated[Path, typer.Option("--params", help="the params file")]
#: a PipelineError becomes its one-line explanation and its exit code
run = guarded


def environment(name: str) -> Environment:
    for env in ENVIRONMENTS:
        if name == env:
            return env
    raise ConfigError(f"unknown environment {name!r}: use {' or '.join(ENVIRONMENTS)}")


def report_release(outcome: Any, settings: config.Settings) -> None:
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
