"""Every error a user can act on, and the exit code each one ends a command with.

Every :class:`PipelineError` says what was wrong, where, and what to do. The CLI and the DVC
stages print it as one line on stderr (no traceback) and exit with its ``exit_code``, so a
script or a CI step can tell the kinds apart. Anything that is not a `PipelineError` is a bug
and keeps its traceback.

====  ========================  =========================================================
code  kind                      meaning
====  ========================  =========================================================
1     ServiceError (and kin)    an outside system failed or refused: the container engine,
                                the OCI registry, the MLflow store, a Dask scheduler
2     ConfigError               params.yaml, deploy/topology.yaml or the environment is
                                invalid; nothing ran
3     MissingInputError         a stage's input is not there: run the stage that writes it
4     ArtifactError             a stage's input is there but unreadable, or not the file its
                                record says (a tampered model, a hand-edited report)
5     DataValidationError       the raw data broke the expectation suite
6     GateFailed                the candidate model failed a quality gate
7     ContractFailed            the image broke its contract (the report says which checks)
8     ReleaseRefused (and kin)  a release rule refused the step: no evidence, not staged,
                                nothing to roll back to, another reconcile running
9     RolloutFailed             after a deploy the orchestrator does not run the desired
                                digests (timed out, paused, deploy refused): see the table
10    RolledBack                the orchestrator rolled the update back: the previous digest
                                still serves; `pipeline rollback` makes git agree
====  ========================  =========================================================
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit


class PipelineError(Exception):
    """Base class: a failure caused by input or environment, explained in ``str(err)``.

    Raise one of the kinds below, never this class itself."""

    exit_code = 1


class ServiceError(PipelineError):
    """An outside system (engine, registry, tracking store) failed, refused or is absent."""

    exit_code = 1


class ImageError(ServiceError):
    """The engine, the base image, the build, the size budget or the smoke check failed."""


class RegistryError(ServiceError):
    """The registry could not be reached, refused us, or holds something other than expected."""


class TrackingError(ServiceError):
    """The MLflow tracking/registry store refused or could not be reached."""


class ConfigError(PipelineError):
    """params.yaml, a hand-edited deploy file or the environment is invalid; nothing ran."""

    exit_code = 2


class MissingInputError(PipelineError):
    """A file another stage writes does not exist yet: the message names the stage to run."""

    exit_code = 3


class ArtifactError(PipelineError):
    """A stage-boundary file exists but cannot be read as its record, or fails its checksum."""

    exit_code = 4


class DataValidationError(PipelineError):
    """The raw data broke one or more expectations of the data suite (or a data rule)."""

    exit_code = 5

    def __init__(
        self, message: str, *, failures: list[str] | None = None, docs_path: str | None = None
    ) -> None:
        super().__init__(message)
        self.failures = failures or []
        self.docs_path = docs_path


class GateFailed(PipelineError):
    """The candidate model did not pass a quality gate; no alias was set."""

    exit_code = 6

    def __init__(self, message: str, *, rows: list[Any]) -> None:
        super().__init__(message)
        self.rows = rows


class ContractFailed(PipelineError):
    """The image did not honour its contract; the report says which checks failed."""

    exit_code = 7


class ReleaseRefused(PipelineError):
    """A release rule refused the step; nothing moved."""

    exit_code = 8


class EvidenceError(ReleaseRefused):
    """No passing contract evidence exists for exactly this digest, or the report is not one."""


class PromotionRefused(ReleaseRefused):
    """A promotion was refused (not staged, busy, nothing to roll back to)."""


class SwarmError(ServiceError):
    """Docker Swarm could not be reached, is not a manager here, or refused a request."""


class ClusterError(ServiceError):
    """The Dask scheduler of ``train.parallel.address`` is unreachable, has no workers, or its
    workers run other versions than this environment."""


class RolloutFailed(PipelineError):
    """After a deploy, the services do not run the desired digests; ``rows`` say which runs
    what (service, desired, running, state, task error), ``outcome`` is the whole record."""

    exit_code = 9

    def __init__(self, message: str, *, rows: list[Any], outcome: Any) -> None:
        super().__init__(message)
        self.rows = rows
        self.outcome = outcome


class RolledBack(RolloutFailed):
    """The orchestrator rolled a failed update back: the previous digest still serves."""

    exit_code = 10


# -- credentials out of every message ---------------------------------------------------------
# A URI may carry a user name and password (``postgresql://user:secret@db/mlflow``,
# ``https://user:token@host/repo.git``). Every URI this tool logs or puts in an error goes
# through :func:`redact`; text that may quote one (an exception from MLflow, requests or a
# registry) through :func:`redact_text`; the CLI applies :func:`redact_text` to every log record
# and every error line as a last guard (pipeline/console.py).

# scheme://userinfo@ : userinfo is everything up to the last '@' before the host's end
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)[^/\s@'\"]+@")


def redact(uri: str) -> str:
    """``uri`` with any user name and password replaced by ``***``."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparseable URI>"
    if "@" not in parts.netloc:
        return uri
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def redact_text(text: str) -> str:
    """``text`` with the userinfo of every ``scheme://user:password@host`` in it replaced."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}***@", text)
