"""Open Inference Protocol (KServe V2 / Triton HTTP) for a tabular classifier or regressor.

Inputs, either form:

* one tensor (any name, e.g. ``"input"``) of shape ``[n, n_features]``, columns in model order
  (numeric models only);
* one tensor per feature, named after the column, each of shape ``[n]`` or ``[n, 1]`` (what
  KServe's scikit-learn server turns into a DataFrame): ``BYTES`` for a categorical column,
  a numeric datatype otherwise. JSON ``null`` marks a missing value where the model takes one
  (so does ``NaN`` in a binary floating-point tensor).

Data may be JSON (flat row-major or nested) or, with the ``Inference-Header-Content-Length``
header, the binary tensor extension Triton clients use by default (``BYTES`` elements as a
4-byte little-endian length and the UTF-8 bytes). Outputs of a classifier: ``label``
(``INT64``, or ``BYTES`` for string classes, shape ``[n]``) and ``probabilities`` (``FP64`` from
scikit-learn, ``FP32`` from ONNX, shape ``[n, n_classes]``); of a regressor: ``prediction``
(``FP64``, shape ``[n]``, whatever the runtime computed in). ``outputs`` in the request selects
among them. Outputs are always JSON, which Triton clients read whether or not they asked for
binary.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import numpy.typing as npt

from serving.card import Feature, ModelCard
from serving.codec import decode_json, dumps
from serving.errors import ServingError
from serving.schema import Batch, InputSchema, packed

__all__ = [
    "OUTPUTS",
    "REGRESSION_OUTPUTS",
    "InferRequest",
    "infer_response",
    "model_metadata",
    "outputs_of",
    "parse_infer",
    "request_tensors",
]

OUTPUTS = ("label", "probabilities")
REGRESSION_OUTPUTS = ("prediction",)
_DTYPES = {
    "BOOL": "?",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}


@dataclass(frozen=True)
class InferRequest:
    x: Batch
    outputs: tuple[str, ...]
    id: str | None


def outputs_of(card: ModelCard) -> tuple[str, ...]:
    return REGRESSION_OUTPUTS if card.regression else OUTPUTS


def parse_infer(
    body: bytes,
    *,
    header_length: str | None,
    schema: InputSchema,
    outputs: tuple[str, ...] = OUTPUTS,
) -> InferRequest:
    binary = b""
    if header_length is not None:
        try:
            split = int(header_length)
        except ValueError:
            raise ServingError.bad_request(
                "Inference-Header-Content-Length is not an integer"
            ) from None
        if not 0 < split <= len(body):
            raise ServingError.bad_request(
                f"Inference-Header-Content-Length {split} is outside the body ({len(body)} bytes)"
            )
        body, binary = body[:split], body[split:]
    schema.check_json(body, "the inference request")
    request = decode_json(body)
    if not isinstance(request, dict):
        raise ServingError.bad_request("the inference request must be a JSON object")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs or not all(isinstance(t, dict) for t in inputs):
        raise ServingError.invalid("'inputs' must be a non-empty list of tensor objects")
    booleans = b"true" in body or b"false" in body
    tensors: list[tuple[str, npt.NDArray[Any]]] = []
    texts: dict[str, bool] = {}
    offset = 0
    for i, tensor in enumerate(inputs):
        array, offset = _tensor(
            tensor, f"inputs[{i}]", binary, offset, booleans=booleans, schema=schema
        )
        tensors.append((tensor["name"], array))
        texts[tensor["name"]] = tensor["datatype"] == "BYTES"
    if offset != len(binary):
        raise ServingError.bad_request(f"{len(binary) - offset} binary bytes belong to no input")
    rid = request.get("id")
    x = _typed(tensors, texts, schema) if schema.typed else _matrix(tensors, schema)
    return InferRequest(
        x=x,
        outputs=_outputs(request, outputs),
        id=rid if isinstance(rid, str) else None,
    )


def _tensor(
    tensor: dict[str, Any],
    where: str,
    binary: bytes,
    offset: int,
    *,
    booleans: bool,
    schema: InputSchema,
) -> tuple[npt.NDArray[Any], int]:
    """One input tensor as an array of its shape: numbers as float64, or for ``BYTES`` (and,
    for a model with typed columns, numeric JSON data holding nulls) an object array of the
    values as sent, for the schema to check. The shape is checked against what this model
    takes ([n], [n, 1] per column; [n, width] for all columns) and n against the row limit
    before a value is converted; JSON data is converted with an explicit dtype."""
    lenient = schema.typed
    name, shape, datatype = tensor.get("name"), tensor.get("shape"), tensor.get("datatype")
    if not isinstance(name, str):
        raise ServingError.invalid(f"{where}.name must be a string")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise ServingError.invalid(f"{where} ({name!r}).shape must be a list of sizes >= 0")
    if not 1 <= len(shape) <= 2:
        # A tabular model takes [n, n_features] or one [n] / [n, 1] tensor per column; more
        # dimensions (or sizes whose product numpy cannot even index) are never valid here.
        raise ServingError.invalid(
            f"{where} ({name!r}).shape {shape} must have 1 or 2 dimensions ([n] or [n, k])"
        )
    text = datatype == "BYTES" and lenient
    if not text and (
        not isinstance(datatype, str) or datatype not in _DTYPES or datatype == "BOOL"
    ):
        raise ServingError.invalid(
            f"{where} ({name!r}).datatype {datatype!r} is not a type this model takes "
            f"({', '.join(d for d in _DTYPES if d != 'BOOL')}"
            f"{', BYTES' if lenient else ''})"
        )
    if len(shape) == 2 and shape[1] not in (1, schema.width):
        raise ServingError.invalid(
            f"{where} ({name!r}).shape {shape}: the model takes [n, {schema.width}] (one tensor, "
            f"columns {_names(schema)}) or [n] / [n, 1] per column"
        )
    schema.check_count(shape[0], f"{where} ({name!r})")
    size = math.prod(shape)
    parameters = tensor.get("parameters") or {}
    nbytes = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
    if text:
        return _text_tensor(tensor, where, shape, size, nbytes, binary, offset)
    assert isinstance(datatype, str)
    if nbytes is not None:
        dtype = np.dtype(_DTYPES[datatype])
        if (
            type(nbytes) is not int
            or nbytes != size * dtype.itemsize
            or offset + nbytes > len(binary)
        ):
            raise ServingError.invalid(
                f"{where} ({name!r}): binary_data_size {nbytes!r} does not hold {size} {datatype}"
            )
        array = np.frombuffer(binary, dtype=dtype, count=size, offset=offset)
        return array.reshape(shape), offset + nbytes
    data = tensor.get("data")
    if not isinstance(data, list):
        raise ServingError.invalid(f"{where} ({name!r}).data must be a list")
    column = len(shape) == 1 or shape[1] == 1
    if lenient and column and (None in data or not _flat_numbers(data)):
        return _flat(data, size, where, name), offset  # nulls or wrong kinds: the schema says
    nested = bool(data) and type(data[0]) is list
    if nested:  # rows of the shape's last dimension, e.g. [[v, ...], ...] for [n, k]
        widths = set(map(len, data)) if all(type(row) is list for row in data) else set()
        held = len(data) * widths.pop() if len(widths) == 1 else -1
        values: Any = chain.from_iterable(data)
    else:
        held, values = len(data), data
    if held != size:
        raise ServingError.invalid(
            f"{where} ({name!r}): shape {shape} needs {size} values; data is "
            + ("ragged" if held < 0 else f"{held} values")
        )
    try:
        array = packed(values, tuple(shape))
        if booleans and any(type(v) is bool for v in _values(data, nested)):
            raise TypeError
    except (TypeError, struct.error, OverflowError):
        raise ServingError.invalid(
            f"{where} ({name!r}).data must hold only numbers for datatype {datatype}"
        ) from None
    if datatype[0] in "IU":
        finite = array[np.isfinite(array)]
        if (finite != np.floor(finite)).any():
            raise ServingError.invalid(
                f"{where} ({name!r}): datatype {datatype} but data holds fractions"
            )
    return array, offset


def _values(data: list[Any], nested: bool) -> Any:
    return chain.from_iterable(data) if nested else data


def _names(schema: InputSchema) -> str:
    names = schema.names_list
    return str(names) if len(names) <= 10 else f"{names[:10]} ... ({len(names)} in all)"


def _flat_numbers(data: list[Any]) -> bool:
    return all(type(v) is int or type(v) is float for v in data)


def _flat(data: list[Any], size: int, where: str, name: str) -> npt.NDArray[np.object_]:
    """JSON data of a per-column tensor, flat or as ``[[v], ...]``, as an object array."""
    if data and all(type(v) is list and len(v) == 1 for v in data):
        data = [v[0] for v in data]
    if len(data) != size or any(type(v) is list or type(v) is dict for v in data):
        raise ServingError.invalid(
            f"{where} ({name!r}): data must hold {size} values, one per row (flat or [[v], ...])"
        )
    values = np.empty(len(data), dtype=object)
    values[:] = data
    return values


def _text_tensor(
    tensor: dict[str, Any],
    where: str,
    shape: list[int],
    size: int,
    nbytes: Any,
    binary: bytes,
    offset: int,
) -> tuple[npt.NDArray[np.object_], int]:
    name = tensor["name"]
    if nbytes is None:
        data = tensor.get("data")
        if not isinstance(data, list):
            raise ServingError.invalid(f"{where} ({name!r}).data must be a list")
        return _flat(data, size, where, name).reshape(shape), offset
    end = offset + nbytes if type(nbytes) is int and nbytes >= 0 else -1
    if end < 0 or end > len(binary):
        raise ServingError.invalid(f"{where} ({name!r}): binary_data_size {nbytes!r} is not there")
    values: list[str] = []
    position = offset
    while len(values) < size:  # at most nbytes / 4 rounds: each element has a 4-byte length
        if position + 4 > end:
            raise ServingError.invalid(f"{where} ({name!r}): binary data holds < {size} elements")
        (length,) = struct.unpack_from("<I", binary, position)
        position += 4
        if position + length > end:
            raise ServingError.invalid(f"{where} ({name!r}): an element runs past its data")
        try:
            values.append(binary[position : position + length].decode("utf-8"))
        except UnicodeDecodeError:
            raise ServingError.invalid(f"{where} ({name!r}): an element is not UTF-8") from None
        position += length
    if position != end:
        raise ServingError.invalid(f"{where} ({name!r}): binary data holds more than {size}")
    array = np.empty(size, dtype=object)
    array[:] = values
    return array.reshape(shape), end


def _typed(
    tensors: list[tuple[str, npt.NDArray[Any]]], texts: dict[str, bool], schema: InputSchema
) -> Batch:
    """A model with categorical or nullable columns: one tensor per column (or, for numeric
    columns only, one [n, k] tensor), each of the column's kind."""
    if len(tensors) == 1 and tensors[0][1].ndim == 2 and tensors[0][0] not in schema.index:
        name, array = tensors[0]
        if array.shape[1] != schema.width:
            raise ServingError.invalid(
                f"input {name!r} has shape {list(array.shape)}; the model takes one tensor per "
                f"column {schema.names_list}"
            )
        schema.check_count(array.shape[0], f"input {name!r}")
        return schema.from_matrix(array, f"input {name!r}")
    names = [name for name, _ in tensors]
    schema.check_columns(names, "input tensor names")
    columns = dict(tensors)
    lengths = {columns[n].shape[0] for n in schema.names}
    bad = [n for n in schema.names if columns[n].size != columns[n].shape[0]]
    if bad or len(lengths) != 1:
        raise ServingError.invalid(
            "per-column inputs must all have shape [n] or [n, 1] with the same n; "
            f"see {bad or names}"
        )
    n = lengths.pop()
    schema.check_count(n, "the input tensors")
    for feature in schema.features:
        if texts[feature.name] != feature.categorical:
            wanted = "BYTES" if feature.categorical else "a numeric datatype"
            raise ServingError.invalid(
                f"input {feature.name!r}: the column is {feature.kind}: send it as {wanted}"
            )
    return schema.typed_columns([columns[n].reshape(-1) for n in schema.names], "the inputs")


def _matrix(tensors: list[tuple[str, npt.NDArray[Any]]], schema: InputSchema) -> Batch:
    if len(tensors) == 1 and tensors[0][1].ndim == 2 and tensors[0][0] not in schema.index:
        name, array = tensors[0]
        if array.shape[1] != schema.width:
            raise ServingError.invalid(
                f"input {name!r} has shape {list(array.shape)}; the model takes [n, "
                f"{schema.width}] with columns {schema.names_list}, or one tensor per column"
            )
        schema.check_count(array.shape[0], f"input {name!r}")
        return schema.finish(np.ascontiguousarray(array, dtype=np.float64), f"input {name!r}")
    names = [name for name, _ in tensors]
    try:
        schema.check_columns(names, "input tensor names")
    except ServingError as exc:
        raise ServingError.invalid(
            f"{exc.message} (or send one tensor of shape [n, {schema.width}])"
        ) from None
    columns = dict(tensors)
    lengths = {columns[n].shape[0] if columns[n].ndim else -1 for n in schema.names}
    bad = [
        n
        for n in schema.names
        if columns[n].ndim not in (1, 2) or columns[n].size != columns[n].shape[0]
    ]
    if bad or len(lengths) != 1:
        raise ServingError.invalid(
            "per-column inputs must all have shape [n] or [n, 1] with the same n; "
            f"see {bad or names}"
        )
    n = lengths.pop()
    schema.check_count(n, "the input tensors")
    x = np.empty((n, schema.width), dtype=np.float64)
    for j, name in enumerate(schema.names):
        x[:, j] = columns[name].reshape(n)
    return schema.finish(x, "the input tensors")


def _outputs(request: dict[str, Any], known: tuple[str, ...]) -> tuple[str, ...]:
    requested = request.get("outputs")
    if requested is None:
        return known
    if not isinstance(requested, list) or not all(isinstance(o, dict) for o in requested):
        raise ServingError.invalid("'outputs' must be a list of {\"name\": ...} objects")
    names = tuple(o.get("name") for o in requested)
    unknown = [n for n in names if n not in known]
    if unknown:
        shown = [str(n)[:40] for n in unknown[:5]] + (["..."] if len(unknown) > 5 else [])
        raise ServingError.invalid(f"unknown outputs {shown}: this model has {list(known)}")
    if len(set(names)) != len(names):  # each named output is one tensor in the answer
        raise ServingError.invalid(f"'outputs' names an output more than once: {list(known)}")
    return tuple(str(n) for n in names) or known


def label_datatype(card: ModelCard) -> str:
    if card.regression:
        return "FP64"
    return "INT64" if all(isinstance(c, int) for c in card.classes) else "BYTES"


def infer_response(
    *,
    card: ModelCard,
    probability_datatype: str,
    labels: npt.NDArray[Any],
    probabilities: npt.NDArray[Any],
    outputs: tuple[str, ...],
    request_id: str,
) -> bytes:
    tensors = {
        "prediction": {
            "name": "prediction",
            "datatype": "FP64",
            "shape": [len(labels)],
            "data": labels,
        },
        "label": {
            "name": "label",
            "datatype": label_datatype(card),
            "shape": [len(labels)],
            "data": labels,
        },
        "probabilities": {
            "name": "probabilities",
            "datatype": probability_datatype,
            "shape": list(probabilities.shape),
            "data": probabilities.ravel(),
        },
    }
    return dumps(
        {
            "model_name": card.model_name,
            "model_version": card.model_version,
            "id": request_id,
            "outputs": [tensors[name] for name in outputs],
        }
    )


def model_metadata(card: ModelCard, *, runtime: str, probability_datatype: str) -> dict[str, Any]:
    width, k = len(card.features), len(card.classes)
    if any(f.categorical for f in card.features):
        inputs = [
            {"name": f.name, "datatype": "BYTES" if f.categorical else "FP64", "shape": [-1]}
            for f in card.features
        ]
    else:
        inputs = [{"name": "input", "datatype": "FP64", "shape": [-1, width]}]
    outputs = (
        [{"name": "prediction", "datatype": "FP64", "shape": [-1]}]
        if card.regression
        else [
            {"name": "label", "datatype": label_datatype(card), "shape": [-1]},
            {"name": "probabilities", "datatype": probability_datatype, "shape": [-1, k]},
        ]
    )
    return {
        "name": card.model_name,
        "versions": [card.model_version],
        "platform": "onnxruntime_onnx" if runtime == "onnx" else "sklearn",
        "inputs": inputs,
        "outputs": outputs,
        "parameters": {
            "task": card.task,
            "feature_names": list(card.feature_names),
            "feature_dtypes": [f.dtype for f in card.features],
            "nullable": [f.nullable for f in card.features],
            "classes": list(card.classes),
        },
    }


def request_tensors(
    features: tuple[Feature, ...], records: list[dict[str, Any]], *, per_column: bool = False
) -> list[dict[str, Any]]:
    """The ``inputs`` of an infer request for ``records`` (``{column: value}``, ``None`` where
    missing), as a client of this model sends them: one FP64 ``[n, k]`` tensor for a numeric
    model without nulls, else (or with ``per_column``) one tensor per column, ``BYTES`` for text.
    Used by the smoke check and the contract tests, so they speak what this module parses."""
    typed = any(f.categorical or f.nullable for f in features)
    if not typed and not per_column:
        data = [record[f.name] for record in records for f in features]
        return [{"name": "input", "shape": [len(records), len(features)], "datatype": "FP64",
                 "data": data}]  # fmt: skip
    return [
        {
            "name": f.name,
            "shape": [len(records)],
            "datatype": "BYTES" if f.categorical else "FP64",
            "data": [record[f.name] for record in records],
        }
        for f in features
    ]
