"""The input contract: the model's feature columns, and every way a request may carry rows.

The schema is built from ``model.json``'s ``features`` and nothing else. Whatever the format
(MLflow's ``dataframe_split``/``dataframe_records``/``instances``/``inputs``, CSV, or Open
Inference Protocol tensors), a request becomes one finite float64 matrix with the columns in
the card's order, or a 4xx :class:`ServingError` whose message names the offending column, row
or field. The fast path (well-formed numeric rows) costs a couple of C-level conversions; the
per-value inspection runs only to explain a rejection.

Bounded before allocated (a stranger's body must not choose how much memory it costs): the row
count is checked first (CSV: counted while reading, stopping at ``max_rows + 1``), then every
row's width; then values are packed as float64 straight into a matrix allocated for exactly
``rows x columns`` (``struct.pack_into``: one C loop that refuses strings, null, lists and
objects, and takes half the time numpy's inference did). numpy never infers a dtype from
untrusted input (``np.array(rows)`` with one long string in it asks for
``rows x columns x length x 4`` bytes). Messages quote at most :data:`SHOWN_CHARS` of a
value and :data:`SHOWN_ITEMS` names, whatever the request holds.

Typed columns (a model with categorical columns, or with columns where nulls are allowed) take
the typed path instead (:meth:`InputSchema._typed`): each column is checked against its kind and
built with its declared dtype (never one numpy infers from the request): float64 for numeric
(``NaN`` = missing, allowed only where ``nullable``), object arrays of ``str`` for categorical
(``""`` = missing, the model's own marker; at most :data:`MAX_TEXT_LENGTH` characters). A model
whose columns are all numeric still gets one float64 matrix; one with categorical columns gets
:class:`Columns`. Values a categorical column never saw in training are served (the model
ignores them) and counted per column. A categorical column trained from booleans (categories
``"False"``/``"True"``) also takes JSON ``true``/``false``, as a pandas client sends them; a
nullable categorical column takes ``NaN`` as missing, as pandas writes a missing text value.
"""

from __future__ import annotations

import csv
import io
import json
import struct
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np
import numpy.typing as npt

from serving.card import Feature
from serving.errors import ServingError
from serving.limits import SCAN_ABOVE_BYTES, derived_parse_budget, json_parse_cost

__all__ = ["MAX_TEXT_LENGTH", "Batch", "Columns", "InputSchema", "Matrix", "packed"]

Matrix = npt.NDArray[np.float64]
#: The longest CSV cell a numeric column takes: a float64 repr is at most 24 characters; the
#: rest is room for quotes and padding.
MAX_CELL_CHARS = 64
SHOWN_CHARS = 60
SHOWN_ITEMS = 10
_FLOAT_MAX = sys.float_info.max
#: The longest value a categorical column takes, in characters.
MAX_TEXT_LENGTH = 1024
_NONE = type(None)


@dataclass(frozen=True, slots=True)
class Columns:
    """The rows of a model with categorical columns: one array per feature, in model order
    (float64 with ``NaN`` for missing, or object arrays of ``str`` with ``""`` for missing)."""

    arrays: tuple[npt.NDArray[Any], ...]
    n: int
    #: (column, how many of its values were never seen in training), for columns with any
    unknown: tuple[tuple[str, int], ...] = ()

    def __len__(self) -> int:
        return self.n


#: What the runtimes take: a float64 matrix (numeric models) or typed columns.
Batch = Matrix | Columns


class InputSchema:
    """Feature columns in model order, with converters from each wire format to a matrix."""

    def __init__(
        self, features: Sequence[Feature], *, max_rows: int, max_parse_bytes: int | None = None
    ) -> None:
        self.features = tuple(features)
        self.names = tuple(f.name for f in self.features)
        self.names_list = list(self.names)
        self.index = {name: i for i, name in enumerate(self.names)}
        self.width = len(self.names)
        self.max_rows = max_rows
        self._getter = itemgetter(*self.names)
        self._integer_columns = [i for i, f in enumerate(self.features) if f.integer]
        #: any categorical column: requests become :class:`Columns`, not a matrix
        self.mixed = any(f.categorical for f in self.features)
        #: categorical or nullable columns: requests take the typed path
        self.typed = self.mixed or any(f.nullable for f in self.features)
        self._categories = {
            i: frozenset(f.categories or ()) for i, f in enumerate(self.features) if f.categorical
        }
        #: categorical columns trained from booleans (categories "False"/"True", as pandas
        #: writes them): a JSON true/false there is that category (a pandas client sends bools)
        self._boolean = {
            i for i, known in self._categories.items() if known and known <= {"False", "True"}
        }
        #: the most memory parsing one JSON body may take (serving.limits; None: derived)
        self.parse_budget_derived = max_parse_bytes is None
        #: the longest JSON-encoded category, which a cell may hold instead of a number
        self.text_bytes = max(
            (len(json.dumps(c)) for f in self.features for c in (f.categories or ())), default=0
        )
        self.max_parse_bytes = max_parse_bytes or derived_parse_budget(
            self.names, max_rows, text_bytes=self.text_bytes
        )
        #: the longest CSV record (header or row) this schema can take, in characters: a
        #: categorical cell may be quoted with every quote doubled
        header = sum(2 * len(name) + 3 for name in self.names)
        cells = sum(
            2 * MAX_TEXT_LENGTH + 3 if f.categorical else MAX_CELL_CHARS for f in self.features
        )
        self.max_csv_record_chars = max(header, cells + MAX_CELL_CHARS) + 64

    # -- row counts ----------------------------------------------------------------------

    def check_count(self, n: int, what: str) -> None:
        if n == 0:
            raise ServingError.invalid(f"empty batch: {what} holds no rows")
        if n > self.max_rows:
            raise ServingError.too_large(
                f"{what} holds {n} rows; this server takes at most {self.max_rows} per request "
                "(SERVING_MAX_ROWS)"
            )

    def check_json(self, body: bytes, what: str) -> None:
        """413 before parsing when parsing ``body`` may take more memory than this server
        gives one request (:func:`serving.limits.json_parse_cost`)."""
        if len(body) <= SCAN_ABOVE_BYTES:
            return
        cost = json_parse_cost(body)
        if cost > self.max_parse_bytes:
            derived = (
                f" (derived: twice a full batch of {self.max_rows} rows, SERVING_MAX_ROWS)"
                * self.parse_budget_derived
            )
            raise ServingError.too_large(
                f"parsing {what} may take {cost // 2**20} MiB: it holds that many JSON arrays, "
                f"objects, strings or numbers; this server gives one request at most "
                f"{self.max_parse_bytes // 2**20} MiB{derived}: SERVING_MAX_PARSE_BYTES"
            )

    # -- wire formats --------------------------------------------------------------------

    def from_rows(self, rows: Any, what: str, *, check_booleans: bool) -> Batch:
        """A list of rows, each a list of values in model column order."""
        if not isinstance(rows, list):
            raise ServingError.invalid(f"{what} must be a list of rows, got {_kind(rows)}")
        self.check_count(len(rows), what)
        if self.typed:
            return self._typed(self._transpose(rows, what), what)
        try:
            if set(map(len, rows)) != {self.width}:
                raise TypeError
            x = packed(chain.from_iterable(rows), (len(rows), self.width))
            if check_booleans and any(type(v) is bool for v in chain.from_iterable(rows)):
                raise TypeError
        except (TypeError, struct.error, OverflowError):
            raise self._explain_rows(rows, what) from None
        return self.finish(x, what)

    def from_records(self, records: Any, what: str, *, check_booleans: bool) -> Batch:
        """A list of ``{column: value}`` objects."""
        if not isinstance(records, list):
            raise ServingError.invalid(f"{what} must be a list of records, got {_kind(records)}")
        self.check_count(len(records), what)
        get = self._getter
        try:
            rows = [get(r) for r in records] if self.width > 1 else [[get(r)] for r in records]
        except (KeyError, TypeError):
            raise self._explain_records(records, what) from None
        if sum(map(len, records)) != self.width * len(records):
            raise self._explain_records(records, what)
        return self.from_rows(rows, what, check_booleans=check_booleans)

    def from_columns(self, columns: dict[str, Any], what: str, *, check_booleans: bool) -> Batch:
        """A ``{column: [values]}`` object (TF-serving columnar ``inputs``), converted column by
        column into the matrix (no row objects are built)."""
        self.check_columns(list(columns), what)
        lengths = {len(v) if isinstance(v, list) else -1 for v in columns.values()}
        if len(lengths) != 1 or -1 in lengths:
            raise ServingError.invalid(f"{what}: every column must be a list of the same length")
        n = lengths.pop()
        self.check_count(n, what)
        if self.typed:
            return self._typed([columns[name] for name in self.names], what)
        x = np.empty((n, self.width), dtype=np.float64)
        for j, name in enumerate(self.names):
            values = columns[name]
            try:
                x[:, j] = packed(values, (n,))
                if check_booleans and any(type(v) is bool for v in values):
                    raise TypeError
            except (TypeError, struct.error, OverflowError):
                raise self._explain_values(values, name, what) from None
        return self.finish(x, what)

    def from_split(self, split: Any, what: str, *, check_booleans: bool) -> Batch:
        """pandas ``orient="split"``: ``{"columns": [...], "data": [[...]], "index": [...]}``."""
        if not isinstance(split, dict):
            raise ServingError.invalid(f"{what} must be an object, got {_kind(split)}")
        extra = set(split) - {"columns", "data", "index"}
        if "data" not in split or extra:
            raise ServingError.invalid(
                f"{what} must have 'data' and optionally 'columns' and 'index'; got {sorted(split)}"
            )
        columns = split.get("columns")
        if columns is None or columns == self.names_list:
            return self.from_rows(split["data"], f"{what}.data", check_booleans=check_booleans)
        if not isinstance(columns, list):
            raise ServingError.invalid(f"{what}.columns must be a list of column names")
        self.check_columns(columns, f"{what}.columns")
        if self.typed:
            data, where = split["data"], f"{what}.data"
            if not isinstance(data, list):
                raise ServingError.invalid(f"{where} must be a list of rows, got {_kind(data)}")
            self.check_count(len(data), where)
            by_position = self._transpose(data, where)
            return self._typed([by_position[columns.index(n)] for n in self.names], where)
        x = self.from_rows(split["data"], f"{what}.data", check_booleans=check_booleans)
        assert not isinstance(x, Columns)  # untyped: a matrix
        return np.ascontiguousarray(x[:, [columns.index(name) for name in self.names]])

    def from_csv(self, body: bytes) -> Batch:
        """CSV with a header row; a leading unnamed column (a pandas index) is dropped.

        Read record by record, never all at once: a record longer than
        ``max_csv_record_chars`` is refused before the csv module splits it into cells, and
        reading stops at row ``max_rows + 1``."""
        lines = _Lines(io.BytesIO(body), limit=self.max_csv_record_chars)
        reader = csv.reader(lines)
        header: list[str] | None = None
        cells: list[list[str]] = []
        skip = empty = 0
        try:
            for record in reader:
                lines.used = 0
                if not record:
                    empty += 1
                    if empty > self.max_rows:
                        raise ServingError.too_large(
                            f"the CSV body holds more than {self.max_rows} empty lines; this "
                            f"server takes at most {self.max_rows} rows per request "
                            "(SERVING_MAX_ROWS)"
                        )
                    continue
                if header is None:
                    header = [c.strip() for c in record]
                    skip = 1 if header and header[0] == "" else 0
                    header = header[skip:]
                    self.check_columns(header, "CSV header")
                    continue
                if len(cells) == self.max_rows:
                    raise ServingError.too_large(
                        f"the CSV body holds more than {self.max_rows} rows; this server takes "
                        f"at most {self.max_rows} per request (SERVING_MAX_ROWS)"
                    )
                if len(record) - skip != self.width:
                    raise ServingError.invalid(
                        f"CSV row {len(cells)} has {len(record) - skip} values, the header "
                        f"names {self.width}"
                    )
                cells.append(record[skip:] if skip else record)
        except _RecordTooLong:
            where = "the CSV header" if header is None else f"CSV row {len(cells)}"
            raise ServingError.invalid(
                f"{where} is longer than {self.max_csv_record_chars} characters, the most "
                f"{self.width} columns take; check the delimiter and the columns"
            ) from None
        except UnicodeDecodeError as exc:
            raise ServingError.bad_request(f"CSV body is not valid UTF-8: {exc}") from None
        except csv.Error as exc:
            raise ServingError.bad_request(f"CSV body cannot be parsed: {exc}") from None
        if header is None:
            raise ServingError.invalid("empty batch: the CSV body holds no header and no rows")
        self.check_count(len(cells), "the CSV body")
        if self.typed:
            return self._typed_csv(header, cells)
        try:
            x = np.array(cells, dtype=np.float64)
        except ValueError:
            for i, row in enumerate(cells):
                for name, cell in zip(header, row, strict=True):
                    if _float_or_none(cell) is None:
                        shown = "an empty value" if not cell.strip() else _shown(cell)
                        raise ServingError.invalid(
                            f"column {name!r} (row {i}): expected a number, got {shown}"
                        ) from None
            raise ServingError.invalid("the CSV body is not a table of numbers") from None
        if header != self.names_list:
            x = np.ascontiguousarray(x[:, [header.index(name) for name in self.names]])
        return self.finish(x, "the CSV body")

    # -- shared checks -------------------------------------------------------------------

    def finish(self, x: Matrix, what: str) -> Matrix:
        """Reject NaN/inf and non-integers in integer columns, naming column and row."""
        if not np.isfinite(x).all():
            row, col = np.argwhere(~np.isfinite(x))[0]
            raise ServingError.invalid(
                f"column {self.names[col]!r} (row {row}) in {what}: {x[row, col]!r} is not "
                "allowed; the model's schema requires finite numbers"
            )
        for col in self._integer_columns:
            bad = np.flatnonzero(x[:, col] != np.floor(x[:, col]))
            if bad.size:
                raise ServingError.invalid(
                    f"column {self.names[col]!r} (row {bad[0]}) in {what}: expected an integer "
                    f"({self.features[col].dtype}), got {x[bad[0], col]!r}"
                )
        return x

    def check_columns(self, columns: list[Any], what: str) -> None:
        """Exactly the model's columns, each once; linear in the number sent."""
        counts = Counter(c for c in columns if isinstance(c, str))
        missing = [name for name in self.names if name not in counts]
        unknown = [c for c in columns if not isinstance(c, str) or c not in self.index]
        repeated = sorted(c for c, k in counts.items() if k > 1)
        problems = []
        if missing:
            problems.append(f"missing columns {_listing(missing)}")
        if unknown:
            problems.append(f"unknown columns {_listing(unknown)}")
        if repeated:
            problems.append(f"repeated columns {_listing(repeated)}")
        if problems:
            raise ServingError.invalid(
                f"{what}: {'; '.join(problems)}. The model takes exactly: {self.names_list}"
            )

    # -- typed columns: categorical or nullable --------------------------------------------

    def from_matrix(self, x: npt.NDArray[Any], what: str) -> Batch:
        """A numeric 2-D tensor in model column order (Open Inference Protocol)."""
        if not self.typed:
            return self.finish(np.ascontiguousarray(x, dtype=np.float64), what)
        if self.mixed:
            raise ServingError.invalid(
                f"{what}: this model has categorical columns "
                f"{[f.name for f in self.features if f.categorical]}: send one tensor per "
                "column (BYTES for text), named after the column"
            )
        return self._typed([x[:, j] for j in range(self.width)], what)

    def _transpose(self, rows: list[Any], what: str) -> list[Sequence[Any]]:
        """Rows (lists of values in model order) as columns; each row checked for shape."""
        width = self.width
        for i, row in enumerate(rows):
            if type(row) is not list and type(row) is not tuple:
                if isinstance(row, dict):
                    raise ServingError.invalid(
                        f"{what}[{i}] is an object; send records under 'dataframe_records' or "
                        "rows as lists of values in model column order"
                    )
                raise ServingError.invalid(
                    f"{what}[{i}] must be a list of values, got {_kind(row)}"
                )
            if len(row) != width:
                raise ServingError.invalid(
                    f"{what}[{i}] has {len(row)} values; the model takes {width} columns in "
                    f"this order: {self.names_list}"
                )
        return list(zip(*rows, strict=True))

    def _typed_csv(self, header: list[str], cells: list[list[str]]) -> Batch:
        """CSV cells: numbers parsed where the column is numeric, an empty cell is a null."""
        by_name = dict(zip(header, zip(*cells, strict=True), strict=True))
        columns: list[Sequence[Any]] = []
        for feature in self.features:
            raw = by_name[feature.name]
            if feature.categorical:
                columns.append(raw)
                continue
            parsed: list[float | None] = []
            for i, cell in enumerate(raw):
                if not cell.strip():
                    parsed.append(None)
                    continue
                number = _float_or_none(cell)
                if number is None:
                    raise ServingError.invalid(
                        f"column {feature.name!r} (row {i}): expected a number, got {_shown(cell)}"
                    )
                parsed.append(number)
            columns.append(parsed)
        return self._typed(columns, "the CSV body")

    def typed_columns(self, columns: Sequence[Any], what: str) -> Batch:
        """Columns in model order (lists, or arrays from tensors) through the typed checks."""
        return self._typed(columns, what)

    def _typed(self, columns: Sequence[Any], what: str) -> Batch:
        """One array per column, each built with its declared dtype, or a 400 naming the
        column and row; a float64 matrix when every column is numeric."""
        arrays: list[npt.NDArray[Any]] = []
        unknown: list[tuple[str, int]] = []
        for j, values in enumerate(columns):
            if self.features[j].categorical:
                array, unseen = self._text_column(j, values, what)
                arrays.append(array)
                if unseen:
                    unknown.append((self.names[j], unseen))
            else:
                arrays.append(self._number_column(j, values, what))
        if not self.mixed:
            return np.ascontiguousarray(np.column_stack(arrays), dtype=np.float64)
        return Columns(tuple(arrays), len(arrays[0]), tuple(unknown))

    def _null(self, j: int, row: int, what: str) -> ServingError:
        return ServingError.invalid(
            f"column {self.names[j]!r} (row {row}) in {what}: null is not allowed here: the "
            "model was not trained with missing values in this column (see 'nullable' in "
            "/openapi.json)"
        )

    def _number_column(self, j: int, values: Sequence[Any], what: str) -> Matrix:
        feature = self.features[j]
        if isinstance(values, np.ndarray) and values.dtype != object:  # a numeric tensor
            array = values.astype(np.float64)
        else:
            if isinstance(values, np.ndarray):  # JSON values of a tensor, as sent
                values = values.tolist()
            allowed = (int, float, _NONE) if feature.nullable else (int, float)
            if not set(map(type, values)).issubset(allowed):
                for i, value in enumerate(values):
                    if value is None:
                        raise self._null(j, i, what)
                    if type(value) not in allowed:
                        raise ServingError.invalid(
                            f"column {feature.name!r} (row {i}) in {what}: expected a number, "
                            f"got {_kind(value)} {_shown(value)}"
                        )
            try:
                array = np.array(values, dtype=np.float64)  # None -> NaN: a missing value
            except OverflowError:
                raise ServingError.invalid(
                    f"column {feature.name!r} in {what}: an integer beyond float64 range"
                ) from None
        bad = ~np.isfinite(array)
        if bad.any():
            if feature.nullable:
                bad &= ~np.isnan(array)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                if np.isnan(array[i]):
                    raise self._null(j, i, what)
                raise ServingError.invalid(
                    f"column {feature.name!r} (row {i}) in {what}: {array[i]!r} is not allowed; "
                    "the model's schema requires finite numbers"
                )
        if feature.integer:
            finite = np.isfinite(array)
            fractional = np.flatnonzero(finite & (array != np.floor(np.where(finite, array, 0))))
            if fractional.size:
                i = int(fractional[0])
                raise ServingError.invalid(
                    f"column {feature.name!r} (row {i}) in {what}: expected an integer "
                    f"({feature.dtype}), got {array[i]!r}"
                )
        return array

    def _text_column(
        self, j: int, values: Sequence[Any], what: str
    ) -> tuple[npt.NDArray[np.object_], int]:
        feature = self.features[j]
        allowed = (str, _NONE) if feature.nullable else (str,)
        if j in self._boolean and any(type(v) is bool for v in values):
            values = [str(v) if type(v) is bool else v for v in values]
        if feature.nullable and float in set(map(type, values)):
            # pandas (and so MLflow's client) writes a missing text value as NaN
            values = [None if type(v) is float and v != v else v for v in values]
        if not set(map(type, values)).issubset(allowed):
            for i, value in enumerate(values):
                if value is None:
                    raise self._null(j, i, what)
                if type(value) not in allowed:
                    raise ServingError.invalid(
                        f"column {feature.name!r} (row {i}) in {what}: expected a string (one "
                        f"of the categories), got {_kind(value)} {_shown(value)}"
                    )
        texts = [v if v is not None else "" for v in values]
        longest = max(map(len, texts), default=0)
        if longest > MAX_TEXT_LENGTH:
            i = next(k for k, t in enumerate(texts) if len(t) == longest)
            raise ServingError.invalid(
                f"column {feature.name!r} (row {i}) in {what}: a value of {longest} characters; "
                f"at most {MAX_TEXT_LENGTH} are taken"
            )
        if not feature.nullable and "" in texts:
            raise self._null(j, texts.index(""), what)
        known = self._categories[j]
        unseen = sum(1 for t in texts if t and t not in known)
        array = np.empty(len(texts), dtype=object)
        array[:] = texts
        return array, unseen

    def _explain_records(self, records: list[Any], what: str) -> ServingError:
        for i, record in enumerate(records):
            if not isinstance(record, dict):
                return ServingError.invalid(f"{what}[{i}] must be an object, got {_kind(record)}")
            try:
                self.check_columns(list(record), f"{what}[{i}]")
            except ServingError as exc:
                return exc
        return ServingError.invalid(f"{what} is not a list of records")

    def _explain_values(self, values: list[Any], name: str, what: str) -> ServingError:
        for i, value in enumerate(values):
            problem = _not_a_number(value)
            if problem:
                return ServingError.invalid(f"column {name!r} (row {i}) in {what}: {problem}")
        return ServingError.invalid(f"column {name!r} in {what} is not a list of numbers")

    def _explain_rows(self, rows: list[Any], what: str) -> ServingError:
        for i, row in enumerate(rows):
            if isinstance(row, dict):
                return ServingError.invalid(
                    f"{what}[{i}] is an object; send records under 'dataframe_records' or rows "
                    "as lists of values in model column order"
                )
            if not isinstance(row, list | tuple):
                return ServingError.invalid(
                    f"{what}[{i}] must be a list of values, got {_kind(row)}"
                )
            if len(row) != self.width:
                return ServingError.invalid(
                    f"{what}[{i}] has {len(row)} values; the model takes {self.width} columns "
                    f"in this order: {self.names_list}"
                )
            for name, value in zip(self.names, row, strict=True):
                problem = _not_a_number(value)
                if problem:
                    return ServingError.invalid(f"column {name!r} (row {i}) in {what}: {problem}")
        return ServingError.invalid(f"{what} is not a list of numeric rows")


def packed(values: Any, shape: tuple[int, ...]) -> Matrix:
    """``values`` (exactly prod(shape) of them) as a float64 array of ``shape``, allocated
    for exactly that and filled in one C loop that takes only numbers: a string, null, list
    or object raises struct.error, an int beyond float64 too. Booleans pass as 0/1 (they are
    ints): callers that may see them check. Unlike ``np.array(values)``, nothing is inferred
    and nothing else is allocated."""
    x = np.empty(shape, dtype=np.float64)
    struct.pack_into(f"{x.size}d", x.data, 0, *values)
    return x


class _RecordTooLong(Exception):
    """A CSV record passed the schema's character bound."""


class _Lines(Iterator[str]):
    """The physical lines of a UTF-8 CSV body for ``csv.reader``, decoded lazily. ``used``
    counts the characters of the record being read (the reader resets it after each record);
    past ``limit`` the next line is refused before csv splits the record into cells, and no
    line is read beyond what the limit leaves."""

    def __init__(self, raw: io.BytesIO, *, limit: int) -> None:
        self._text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
        self.limit = limit
        self.used = 0

    def __next__(self) -> str:
        line = self._text.readline(self.limit - self.used + 1)
        if not line:
            raise StopIteration
        self.used += len(line)
        if self.used > self.limit:
            raise _RecordTooLong
        return line


def _not_a_number(value: Any) -> str | None:
    """Why ``value`` is not a number this schema takes, or None if it is one."""
    kind = type(value)
    if kind is float:
        return None
    if kind is int:
        if -_FLOAT_MAX <= value <= _FLOAT_MAX:
            return None
        return f"{_shown(value)} is beyond the float64 range"
    return f"expected a number, got {_kind(value)} {_shown(value)}"


def _shown(value: Any) -> str:
    """``repr(value)``, at most :data:`SHOWN_CHARS` of it, without building the whole repr of
    a huge value (a 19 MB string, a list of a million items)."""
    if isinstance(value, list | dict) and len(value) > SHOWN_ITEMS:
        return f"{_kind(value)} of {len(value)} items"
    if isinstance(value, str) and len(value) > SHOWN_CHARS:
        return f"{value[:SHOWN_CHARS]!r}... ({len(value)} characters)"
    if isinstance(value, int) and value.bit_length() > 200:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}..."


def _listing(items: Sequence[Any]) -> str:
    """A list for a message: at most :data:`SHOWN_ITEMS` items, each shown within bounds."""
    shown = ", ".join(_shown(item) for item in items[:SHOWN_ITEMS])
    more = f", ... and {len(items) - SHOWN_ITEMS} more" if len(items) > SHOWN_ITEMS else ""
    return f"[{shown}{more}]"


def _kind(value: Any) -> str:
    names = {bool: "boolean", str: "string", list: "list", dict: "object", type(None): "null",
             int: "number", float: "number"}  # fmt: skip
    return names.get(type(value), type(value).__name__)


def _float_or_none(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None
