"""JSON in and out, shared by every protocol: orjson, numpy arrays serialised without copies.

Decoding falls back to the standard library only to explain a failure or to read the ``NaN``/
``Infinity`` that Python clients emit, so such values are reported by column (as 400s), never
silently accepted.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson

from serving.errors import ServingError

__all__ = ["decode_json", "dumps"]


def decode_json(body: bytes) -> Any:
    """Parse with orjson; on failure retry with the standard library, which also reads the
    ``NaN``/``Infinity`` that Python clients emit, so such values are reported by column. Only
    a body that holds those words is parsed twice (the second parse holds the GIL as long)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if b"NaN" not in body and b"Infinity" not in body:
            raise ServingError.bad_request(f"the body is not valid JSON: {exc}") from None
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            raise ServingError.bad_request(f"the body is not valid JSON: {exc}") from None


def dumps(payload: dict[str, Any]) -> bytes:
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY, default=_tolist)


def _tolist(value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    raise TypeError(f"cannot serialize {type(value).__name__}")
