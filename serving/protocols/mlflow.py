"""MLflow's scoring protocol, as ``mlflow models serve`` speaks it for a scikit-learn classifier.

``POST /invocations`` with ``Content-Type: application/json`` and a JSON object holding exactly
one of ``dataframe_split``, ``dataframe_records``, ``instances``, ``inputs`` (other keys, such as
``params``, are ignored as MLflow ignores them for models without parameters), or
``Content-Type: text/csv`` with a header row. The answer is ``{"predictions": [label, ...]}``:
class labels (a regressor: its values), as the model's ``predict`` returns them. A missing value
is ``null`` in JSON and an empty cell in CSV.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy.typing as npt

from serving.codec import decode_json, dumps
from serving.errors import ServingError
from serving.schema import Batch, InputSchema

__all__ = ["FORMATS", "parse_invocation", "predictions"]

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_JSON = "application/json"
_CSV = "text/csv"


def parse_invocation(body: bytes, content_type: str | None, schema: InputSchema) -> Batch:
    mime = _media_type(content_type)
    if mime == _CSV:
        return schema.from_csv(body)
    schema.check_json(body, "the body")
    payload = decode_json(body)
    if not isinstance(payload, dict):
        raise ServingError.bad_request(
            f"the body must be a JSON object with exactly one of {list(FORMATS)}; got a "
            f"{'list' if isinstance(payload, list) else type(payload).__name__}"
        )
    keys = [key for key in FORMATS if key in payload]
    if len(keys) != 1:
        raise ServingError.bad_request(
            f"the body must hold exactly one of {list(FORMATS)}; it holds {sorted(payload)}"
        )
    key = keys[0]
    data = payload[key]
    booleans = b"true" in body or b"false" in body
    if key == "dataframe_split":
        return schema.from_split(data, key, check_booleans=booleans)
    if key == "dataframe_records":
        return schema.from_records(data, key, check_booleans=booleans)
    if isinstance(data, dict) and key == "inputs":
        return schema.from_columns(data, key, check_booleans=booleans)
    if isinstance(data, list) and data and isinstance(data[0], dict):
        return schema.from_records(data, key, check_booleans=booleans)
    return schema.from_rows(data, key, check_booleans=booleans)


def predictions(labels: npt.NDArray[Any]) -> bytes:
    return dumps({"predictions": labels})


@functools.lru_cache(maxsize=64)  # clients send one or two; parsing each was ~4 us a request
def _media_type(content_type: str | None) -> str:
    if not content_type:
        raise ServingError.unsupported_media(
            f"Content-Type is required: {_JSON} or {_CSV} (charset utf-8)"
        )
    mime, *params = (part.strip() for part in content_type.split(";"))
    mime = mime.lower()
    if mime not in (_JSON, _CSV):
        raise ServingError.unsupported_media(
            f"Content-Type {content_type!r} is not supported: use {_JSON} or {_CSV}"
        )
    for param in filter(None, params):
        key, _, value = param.partition("=")
        if key.strip().lower() != "charset" or value.strip().strip('"').lower() != "utf-8":
            raise ServingError.unsupported_media(
                f"Content-Type parameter {param!r} is not supported: only charset=utf-8"
            )
    return mime
