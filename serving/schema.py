"""The input contract: the model's feature columns, and every way a request may carry rows.

The schema is built from ``model.json``'s ``features`` and nothing else. Whatever the format
(MLflow's ``dataframe_split``/``dataframe_records``/``instances``/``inputs``, CSV, or Open
Inference Protocol tensors), a request becomes one finite float64 matrix with the columns in
the card's order, or a 4xx :class:`ServingError` whose message names the offending column, row
or field. The fast path (well-formed numeric rows) costs a couple of C-level conversions; the
per-value inspection runs only to explain a rejection.

Typed columns (a model with categorical columns, or with columns where nulls are allowed) take
the typed path instead (:meth:`InputSchema._typed`): each column is checked against its kind and
built with its declared dtype (never one numpy infers from the request): float64 for numeric
(``NaN`` = missing, allowed only where ``nullable``), object arrays of ``str`` for categorical
(``""`` = missing, the model's own marker; at most :data:`MAX_TEXT_LENGTH` characters). A model
whose columns are all numeric still gets one float64 matrix; one with categorical columns gets
:class:`Columns`. Values a categorical column never saw in training are served (the model
ignores them) and counted per column.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np
import numpy.typing as npt

from serving.card import Feature
from serving.errors import ServingError

__all__ = ["MAX_TEXT_LENGTH", "Batch", "Columns", "InputSchema"]

Matrix = npt.NDArray[np.float64]
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

    def __init__(self, features: Sequence[Feature], *, max_rows: int) -> None:
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

    # -- row counts ----------------------------------------------------------------------

    def check_count(self, n: int, what: str) -> None:
        if n == 0:
            raise ServingError.invalid(f"empty batch: {what} holds no rows")
        if n > self.max_rows:
            raise ServingError.too_large(
                f"{what} holds {n} rows; this server takes at most {self.max_rows} per request "
                "(SERVING_MAX_ROWS)"
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
            x = np.array(rows)
        except (ValueError, TypeError):  # ragged or nested beyond rows of scalars
            raise self._explain_rows(rows, what) from None
        if x.ndim != 2 or x.shape[1] != self.width or x.dtype.kind not in "fiu":
            raise self._explain_rows(rows, what)
        if check_booleans:  # numpy turns true/false into 1/0 silently; callers know if a body
            # can hold them at all (b"true"/b"false" absent means no scan is needed)
            for row in rows:
                if any(type(v) is bool for v in row):
                    raise self._explain_rows(rows, what)
        return self.finish(x.astype(np.float64, copy=False), what)

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
        """A ``{column: [values]}`` object (TF-serving columnar ``inputs``)."""
        self.check_columns(list(columns), what)
        lengths = {len(v) if isinstance(v, list) else -1 for v in columns.values()}
        if len(lengths) != 1 or -1 in lengths:
            raise ServingError.invalid(f"{what}: every column must be a list of the same length")
        if self.typed:
            self.check_count(lengths.pop(), what)
            return self._typed([columns[name] for name in self.names], what)
        rows = list(zip(*(columns[name] for name in self.names), strict=True))
        return self.from_rows([list(r) for r in rows], what, check_booleans=check_booleans)

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
        """CSV with a header row; a leading unnamed column (a pandas index) is dropped."""
        try:
            text = body.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ServingError.bad_request(f"CSV body is not valid UTF-8: {exc}") from None
        try:
            table = [row for row in csv.reader(io.StringIO(text)) if row]
        except csv.Error as exc:
            raise ServingError.bad_request(f"CSV body cannot be parsed: {exc}") from None
        if not table:
            raise ServingError.invalid("empty batch: the CSV body holds no header and no rows")
        header, rows = [c.strip() for c in table[0]], table[1:]
        skip = 1 if header and header[0] == "" else 0
        header = header[skip:]
        self.check_columns(header, "CSV header")
        self.check_count(len(rows), "the CSV body")
        for i, row in enumerate(rows):
            if len(row) - skip != len(header):
                raise ServingError.invalid(
                    f"CSV row {i} has {len(row) - skip} values, the header names {len(header)}"
                )
        cells = [row[skip:] for row in rows] if skip else rows
        if self.typed:
            return self._typed_csv(header, cells)
        try:
            x = np.array(cells, dtype=np.float64)
        except ValueError:
            for i, row in enumerate(cells):
                for name, cell in zip(header, row, strict=True):
                    if _float_or_none(cell) is None:
                        shown = "an empty value" if not cell.strip() else repr(cell)
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
        names = [c for c in columns if isinstance(c, str)]
        missing = [name for name in self.names if name not in names]
        unknown = [c for c in columns if not isinstance(c, str) or c not in self.index]
        repeated = sorted({c for c in names if names.count(c) > 1})
        problems = []
        if missing:
            problems.append(f"missing columns {missing}")
        if unknown:
            problems.append(f"unknown columns {unknown}")
        if repeated:
            problems.append(f"repeated columns {repeated}")
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
                        f"column {feature.name!r} (row {i}): expected a number, got {cell!r}"
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
                            f"got {_kind(value)} {value!r}"
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
        if not set(map(type, values)).issubset(allowed):
            for i, value in enumerate(values):
                if value is None:
                    raise self._null(j, i, what)
                if type(value) not in allowed:
                    raise ServingError.invalid(
                        f"column {feature.name!r} (row {i}) in {what}: expected a string (one "
                        f"of the categories), got {_kind(value)} {value!r}"
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
                if type(value) not in (int, float):
                    return ServingError.invalid(
                        f"column {name!r} (row {i}) in {what}: expected a number, got "
                        f"{_kind(value)} {value!r}"
                    )
        return ServingError.invalid(f"{what} is not a list of numeric rows")


def _kind(value: Any) -> str:
    names = {bool: "boolean", str: "string", list: "list", dict: "object", type(None): "null",
             int: "number", float: "number"}  # fmt: skip
    return names.get(type(value), type(value).__name__)


def _float_or_none(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None
