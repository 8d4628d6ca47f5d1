"""What an experiment observed, per unit and arm: from a table of outcomes or from the logs.

**A table** (CSV or Parquet), one row per unit (a user, or a judged prediction):

=============  ========  ====================================================================
column         required  meaning
=============  ========  ====================================================================
``variant``    yes       ``a`` or ``b`` (any case)
``outcome``    yes       ``0``/``1`` (or ``true``/``false``): the unit succeeded
``user``       no        rows of one user are one unit (success: any row succeeded); a user
                         in both arms is a crossover, counted and dropped
``ts``         no        when the unit was first exposed (ISO 8601 or epoch seconds): the
                         order of units (the fixed horizon takes the first N) and the report's
                         time axis; without it, the file's order
``share``      no        the split the row was assigned under: only rows of the analysed
                         share count (a ramp starts a new period)
``fallback``   no        ``true``: served by A because B was down; dropped
=============  ========  ====================================================================

**The logs**: JSON lines from the model services (``docker service logs --raw``, or files),
anything else on a line before its ``{`` ignored. Exposure lines (``serving.exposure``) say
which variant served which request of which (hashed) user under which share; feedback lines
(``serving.feedback``) carry an ``outcome`` or a true ``label`` for a request id or a user.
``metric.source: outcome``: a unit is a user, successful when any outcome for them (by user or
by one of their request ids) is positive. ``metric.source: label``: a unit is a one-row
prediction that received a true label, successful when the label equals the prediction.

Every input is bounded before it is held: file size, rows, line length, distinct users.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from pipeline.ab.decision import ArmData, Observations
from pipeline.ab.record import Experiment
from pipeline.errors import ArtifactError, ConfigError

__all__ = ["MAX_FILE_BYTES", "MAX_UNITS", "from_logs", "from_table", "read_outcomes"]

MAX_FILE_BYTES = 4 * 1024**3
MAX_UNITS = 20_000_000
MAX_LINE_BYTES = 1024 * 1024
TRUE = {"1", "true", "yes", "t", "y", "1.0"}
FALSE = {"0", "false", "no", "f", "n", "0.0", ""}


def analysed_share(experiment: Experiment) -> int:
    """The share the analysis reads: the current one, or the last before a stop."""
    if experiment.running:
        return experiment.share
    for event in experiment.history:
        if event.share > 0:
            return event.share
    return 0


def read_outcomes(path: Path, experiment: Experiment) -> Observations:
    """The table at ``path`` (``.csv``, ``.parquet``) as observations of ``experiment``."""
    import pandas as pd

    if not path.is_file():
        raise ConfigError(f"outcomes file {path} does not exist")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ConfigError(f"{path} has {size:,} bytes; at most {MAX_FILE_BYTES:,} are read")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, nrows=MAX_UNITS + 1)
        elif suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            raise ConfigError(f"{path}: outcomes must be a .csv or .parquet file")
    except (ValueError, OSError) as exc:
        raise ArtifactError(f"{path} is not a readable table: {str(exc).splitlines()[0]}") from None
    if len(frame) > MAX_UNITS:
        raise ConfigError(f"{path} has more than {MAX_UNITS:,} rows")
    columns = {str(k): list(v) for k, v in frame.to_dict(orient="list").items()}
    return from_table(columns, experiment, where=str(path))


def from_table(
    columns: dict[str, list[Any]], experiment: Experiment, *, where: str
) -> Observations:
    """Observations from columns (see the module docstring); errors name the row."""
    names = {str(k).strip().lower(): k for k in columns}
    for required in ("variant", "outcome"):
        if required not in names:
            raise ConfigError(
                f"{where}: no {required!r} column (it has {sorted(names)}); see "
                "docs/ab-experiments.md for the format"
            )
    rows = len(columns[names["variant"]])
    column = {k: columns[v] for k, v in names.items()}
    share = analysed_share(experiment)
    notes: list[str] = []
    outside = fallback = 0
    units: dict[Any, _Unit] = {}
    order = 0
    for i in range(rows):
        line = i + 2  # a CSV's header is line 1
        if "share" in column and _int(column["share"][i], where, line, "share") != share:
            outside += 1
            continue
        if "fallback" in column and _bool(column["fallback"][i], where, line, "fallback"):
            fallback += 1
            continue
        variant = str(column["variant"][i]).strip().lower()
        if variant not in ("a", "b"):
            raise ConfigError(f"{where}: row {line}: variant {variant!r} is not a or b")
        outcome = _bool(column["outcome"][i], where, line, "outcome")
        ts = _time(column["ts"][i], where, line) if "ts" in column else float(order)
        key: Any = str(column["user"][i]) if "user" in column else i
        unit = units.get(key)
        if unit is None:
            units[key] = _Unit(variant=variant, ts=ts, success=outcome, order=order)
            order += 1
        else:
            unit.merge(variant, ts, outcome)
    if outside:
        notes.append(f"{outside:,} rows under another share than {share} % ignored")
    return _observations(units, where=where, fallback=fallback, notes=notes)


def from_logs(paths: Iterable[Path], experiment: Experiment) -> Observations:
    """Observations from exposure and feedback log lines (see the module docstring)."""
    share = analysed_share(experiment)
    by_label = experiment.metric.source == "label"
    users: dict[str, _Unit] = {}
    requests: dict[str, tuple[str, str, Any]] = {}  # request id -> user, variant, prediction
    judged: dict[str, _Unit] = {}
    feedback: list[dict[str, Any]] = []
    counts = {"outside": 0, "fallback": 0, "direct": 0, "lines": 0, "other": 0}
    sources = []
    for path in paths:
        sources.append(str(path))
        for record in _json_lines(path, counts):
            logger = record.get("logger")
            if logger == "serving.feedback":
                feedback.append(record)
            elif logger == "serving.exposure" and record.get("experiment") == experiment.id:
                _exposure(record, share, users, requests, counts)
    if len(users) > MAX_UNITS:
        raise ConfigError(f"more than {MAX_UNITS:,} users in the logs")
    for record in feedback:
        request_id, user = record.get("request_id"), record.get("user")
        if by_label:
            known = requests.get(str(request_id)) if request_id is not None else None
            if known is None or "label" not in record or known[2] is None:
                continue
            who, variant, prediction = known
            if who in users and users[who].variant == "x":
                continue  # a crossover: neither arm
            success = str(record["label"]) == str(prediction)
            judged.setdefault(
                str(request_id),
                _Unit(variant=variant, ts=users[who].ts if who in users else 0.0, success=success),
            )
            continue
        if "outcome" not in record:
            continue
        positive = _positive(record["outcome"])
        if user is None and request_id is not None:
            known = requests.get(str(request_id))
            user = known[0] if known else None
        if user is not None and str(user) in users and positive:
            users[str(user)].success = True
    notes = []
    if counts["outside"]:
        notes.append(f"{counts['outside']:,} exposures under another share than {share} % ignored")
    if counts["direct"]:
        notes.append(f"{counts['direct']:,} exposures that did not pass the split ignored")
    where = ", ".join(sources) or "no logs"
    assigned = None
    if by_label:
        assigned = _assigned(users)
        units = judged
        notes.append(f"{len(judged):,} judged predictions of {len(requests):,} exposures")
    else:
        units = users
    return _observations(
        units, where=where, fallback=counts["fallback"], notes=notes, assigned=assigned
    )


@dataclass
class _Unit:
    variant: str  # a, b, or x (seen in both: a crossover)
    ts: float
    success: bool
    order: int = 0
    seen: set[str] = field(default_factory=set)

    def merge(self, variant: str, ts: float, success: bool) -> None:
        if variant != self.variant:
            self.variant = "x"
        self.ts = min(self.ts, ts)
        self.success = self.success or success


def _exposure(
    record: dict[str, Any],
    share: int,
    users: dict[str, _Unit],
    requests: dict[str, tuple[str, str, Any]],
    counts: dict[str, int],
) -> None:
    if record.get("share") is None:
        counts["direct"] += 1
        return
    if record.get("share") != share:
        counts["outside"] += 1
        return
    if record.get("fallback"):
        counts["fallback"] += 1
        return
    variant, user = record.get("variant"), record.get("user")
    if variant not in ("a", "b") or not isinstance(user, str):
        counts["other"] += 1
        return
    ts = _time(record.get("ts", 0), "log", 0)
    unit = users.get(user)
    if unit is None:
        users[user] = _Unit(variant=variant, ts=ts, success=False, order=len(users))
    else:
        unit.merge(variant, ts, False)
    predictions = record.get("predictions")
    prediction = (
        predictions[0] if isinstance(predictions, list) and record.get("rows") == 1 else None
    )
    request_id = record.get("request_id")
    if isinstance(request_id, str):
        if len(requests) >= MAX_UNITS:
            raise ConfigError(f"more than {MAX_UNITS:,} exposures in the logs")
        requests[request_id] = (user, variant, prediction)


def _json_lines(path: Path, counts: dict[str, int]) -> Iterable[dict[str, Any]]:
    if not path.is_file():
        raise ConfigError(f"log file {path} does not exist")
    with path.open("rb") as handle:
        while True:
            line = handle.readline(MAX_LINE_BYTES + 1)
            if not line:
                return
            counts["lines"] += 1
            if len(line) > MAX_LINE_BYTES:
                raise ConfigError(f"{path}: line {counts['lines']} is longer than 1 MiB")
            start = line.find(b"{")
            if start < 0:
                continue
            try:
                record = orjson.loads(line[start:])
            except orjson.JSONDecodeError:
                counts["other"] += 1
                continue
            if isinstance(record, dict):
                yield record


def _observations(
    units: dict[Any, _Unit],
    *,
    where: str,
    fallback: int,
    notes: list[str],
    assigned: tuple[int, int] | None = None,
) -> Observations:
    crossovers = sum(1 for u in units.values() if u.variant == "x")
    if crossovers:
        notes.append(f"{crossovers:,} units seen in both arms dropped (the split was not sticky)")
    if fallback:
        notes.append(f"{fallback:,} fallback exposures (B down, served by A) dropped")
    arms = {}
    for name in ("a", "b"):
        chosen = sorted(
            (u for u in units.values() if u.variant == name), key=lambda u: (u.ts, u.order)
        )
        arms[name] = ArmData(
            outcomes=np.fromiter((u.success for u in chosen), dtype=np.int8, count=len(chosen)),
            times=np.fromiter((u.ts for u in chosen), dtype=np.float64, count=len(chosen)),
        )
    return Observations(
        a=arms["a"],
        b=arms["b"],
        source=where,
        dropped_fallback=fallback,
        crossovers=crossovers,
        notes=tuple(notes),
        assigned=assigned,
    )


def _assigned(users: dict[str, _Unit]) -> tuple[int, int]:
    return (
        sum(1 for u in users.values() if u.variant == "a"),
        sum(1 for u in users.values() if u.variant == "b"),
    )


def _positive(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value > 0
    return str(value).strip().lower() in TRUE


def _bool(value: Any, where: str, line: int, name: str) -> bool:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | float | np.integer | np.floating) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise ConfigError(f"{where}: row {line}: {name} {str(value)[:40]!r} is not 0/1 or true/false")


def _int(value: Any, where: str, line: int, name: str) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{where}: row {line}: {name} {str(value)[:40]!r} is not a number"
        ) from None
    if not math.isfinite(number) or number != int(number):
        raise ConfigError(f"{where}: row {line}: {name} {value!r} is not a whole number")
    return int(number)


def _time(value: Any, where: str, line: int) -> float:
    if isinstance(value, int | float | np.integer | np.floating) and math.isfinite(value):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"{where}: row {line}: ts {text[:40]!r} is neither ISO 8601 nor epoch seconds"
        ) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
