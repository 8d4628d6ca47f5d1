"""The errors a user can act on.

Every `PipelineError` carries a message that says what was wrong, where, and what to do. The CLI
prints it as one line on stderr (no stack trace) and exits with the error's `exit_code`.
Anything that is not a `PipelineError` is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Any


class PipelineError(Exception):
    """Base class: a failure caused by input or environment, explained in `str(err)`."""

    exit_code = 1


class ConfigError(PipelineError):
    """params.yaml or the environment is invalid; nothing was run."""

    exit_code = 2


class DataValidationError(PipelineError):
    """The raw data broke one or more expectations of the data suite."""

    def __init__(self, message: str, *, failures: list[str], docs_path: str | None) -> None:
        super().__init__(message)
        self.failures = failures
        self.docs_path = docs_path


class GateFailed(PipelineError):
    """The candidate model did not pass a quality gate; no alias was set."""

    def __init__(self, message: str, *, rows: list[Any]) -> None:
        super().__init__(message)
        self.rows = rows


class TrackingError(PipelineError):
    """The MLflow tracking/registry store refused or could not be reached."""


class ImageError(PipelineError):
    """The engine, the base image, the build, the size budget or the smoke check failed."""
