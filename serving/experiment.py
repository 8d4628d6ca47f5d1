"""Per-variant evidence for A/B experiments: exposure lines and ``POST /feedback``.

When ``SERVING_VARIANT`` is set (``a`` or ``b``: the entry proxy's split runs this service as
one arm of ``SERVING_EXPERIMENT``), every prediction request writes one JSON line on the
``serving.exposure`` logger::

    {"logger": "serving.exposure", "experiment": "prod-20261129-3fa2c1", "variant": "b",
     "assigned": "b", "fallback": false, "share": 10, "bucket": 7, "request_id": "...",
     "user": "2bd806c97f0e00af", "model_version": "5", "rows": 1, "predictions": [1]}

``user`` is 16 hex digits of the sha256 of the user key (the header ``SERVING_USER_HEADER``,
default ``X-User-Id``; the proxy sets it from its cookie for anonymous callers), never the key
itself. ``share``, ``bucket`` and ``assigned`` come from the proxy (``X-Experiment-Share``,
``X-Experiment-Bucket``, ``X-Experiment-Assigned``); a request that did not pass the split has
``share: null`` and the analysis ignores it. ``fallback`` is true when the proxy assigned the
user to B but sent the request here, to A, because B had no healthy task: the analysis drops
those exposures. At most :data:`MAX_LOGGED_PREDICTIONS` predictions are listed per line.

``POST /feedback`` takes one JSON object: ``request_id`` (the ``X-Request-ID`` of a prediction)
and/or ``user`` (the user key), and exactly one of ``outcome`` (0/1 or a boolean) or ``label``
(the true class of a one-row prediction, which needs ``request_id``). It is validated like
every input (unknown keys, types, lengths, a body of at most :data:`MAX_FEEDBACK_BYTES`) and
answered ``{"accepted": 1}``; the event becomes one ``serving.feedback`` line, whatever the
variant, so outcomes reach the analysis through the same logs as exposures.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any

from serving.codec import decode_json
from serving.errors import ServingError

__all__ = [
    "MAX_FEEDBACK_BYTES",
    "MAX_LOGGED_PREDICTIONS",
    "Exposures",
    "feedback_schemas",
    "user_hash",
]

MAX_FEEDBACK_BYTES = 4096
MAX_LOGGED_PREDICTIONS = 100
MAX_REQUEST_ID = 200
MAX_USER_KEY = 256
_FIELDS = ("request_id", "user", "outcome", "label")
_exposure = logging.getLogger("serving.exposure")
_feedback = logging.getLogger("serving.feedback")
_SHARE = b"x-experiment-share"
_BUCKET = b"x-experiment-bucket"
_ASSIGNED = b"x-experiment-assigned"


def user_hash(user_key: str) -> str:
    """What the logs keep of a user key (``pipeline.ab.assignment.user_hash`` is the same)."""
    return hashlib.sha256(user_key.encode()).hexdigest()[:16]


class Exposures:
    """Writes the exposure and feedback lines of one served model."""

    def __init__(
        self,
        *,
        variant: str,
        experiment: str,
        user_header: str,
        model_version: str,
        classes: Sequence[int | str | float],
    ) -> None:
        self.enabled = bool(variant)
        self.variant = variant
        self.experiment = experiment
        self.user_header = user_header.lower().encode("latin-1")
        self.model_version = model_version
        self.classes = tuple(classes)

    def record(self, request_id: str, headers: Sequence[tuple[bytes, bytes]], labels: Any) -> None:
        """One exposure line for a prediction request (nothing outside an experiment)."""
        if not self.enabled or not _exposure.isEnabledFor(logging.INFO):
            return
        user = share = bucket = assigned = None
        for name, value in headers:
            if name == self.user_header:
                user = _user_key(value)
            elif name == _SHARE:
                share = _small_int(value, 0, 100)
            elif name == _BUCKET:
                bucket = _small_int(value, 0, 99)
            elif name == _ASSIGNED and value in (b"a", b"b"):
                assigned = value.decode()
        predictions = labels[:MAX_LOGGED_PREDICTIONS].tolist()
        fields = {
            "experiment": self.experiment,
            "variant": self.variant,
            "assigned": assigned or self.variant,
            "fallback": assigned is not None and assigned != self.variant,
            "share": share,
            "bucket": bucket,
            "request_id": request_id,
            "user": None if user is None else user_hash(user),
            "model_version": self.model_version,
            "rows": len(labels),
            "predictions": predictions,
        }
        _exposure.info("exposure", extra={"fields": fields})

    def feedback(self, body: bytes, content_type: str | None) -> int:
        """Validate one feedback event and log it; ServingError (4xx) naming what is wrong."""
        if len(body) > MAX_FEEDBACK_BYTES:
            raise ServingError.too_large(
                f"feedback is one small JSON object: at most {MAX_FEEDBACK_BYTES} bytes "
                f"(got {len(body)})"
            )
        media = (content_type or "").split(";", 1)[0].strip().lower()
        if media != "application/json":
            raise ServingError.unsupported_media(
                f"feedback takes application/json, not {content_type or 'no Content-Type'!r}"
            )
        event = decode_json(body)
        if not isinstance(event, dict):
            raise ServingError.bad_request("feedback must be a JSON object")
        unknown = sorted(set(event) - set(_FIELDS))
        if unknown:
            raise ServingError.invalid(
                f"unknown feedback field(s) {unknown}: use {', '.join(_FIELDS)}"
            )
        fields: dict[str, Any] = {"experiment": self.experiment, "variant": self.variant}
        request_id, user = event.get("request_id"), event.get("user")
        if request_id is None and user is None:
            raise ServingError.invalid("feedback needs request_id or user (or both)")
        if request_id is not None:
            fields["request_id"] = _text(request_id, "request_id", MAX_REQUEST_ID)
        if user is not None:
            fields["user"] = user_hash(_text(user, "user", MAX_USER_KEY))
        if ("outcome" in event) == ("label" in event):
            raise ServingError.invalid("feedback needs exactly one of outcome or label")
        if "outcome" in event:
            outcome = event["outcome"]
            if isinstance(outcome, bool):
                outcome = int(outcome)
            if type(outcome) is not int or outcome not in (0, 1):
                raise ServingError.invalid(
                    f"outcome must be 0, 1, true or false (got {str(outcome)[:40]!r})"
                )
            fields["outcome"] = outcome
        else:
            label = event["label"]
            if request_id is None:
                raise ServingError.invalid("a label belongs to a prediction: give its request_id")
            if isinstance(label, bool) or label not in self.classes:
                raise ServingError.invalid(
                    f"label {str(label)[:40]!r} is not one of the model's classes "
                    f"{list(self.classes)}"
                )
            fields["label"] = label
        _feedback.info("feedback", extra={"fields": fields})
        return 1


def feedback_schemas(label: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI components of ``POST /feedback`` (``label``: the model's label schema)."""
    return {
        "FeedbackRequest": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "request_id": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_REQUEST_ID,
                    "description": "the X-Request-ID of the prediction",
                },
                "user": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_USER_KEY,
                    "description": "the user key the split used (logged hashed)",
                },
                "outcome": {
                    "oneOf": [{"type": "integer", "enum": [0, 1]}, {"type": "boolean"}],
                    "description": "the user converted (1) or not (0)",
                },
                "label": {**label, "description": "the true class of a one-row prediction"},
            },
            "allOf": [
                {"anyOf": [{"required": ["request_id"]}, {"required": ["user"]}]},
                {"oneOf": [{"required": ["outcome"]}, {"required": ["label"]}]},
                {"anyOf": [{"not": {"required": ["label"]}}, {"required": ["request_id"]}]},
            ],
        },
        "FeedbackAccepted": {
            "type": "object",
            "required": ["accepted"],
            "properties": {"accepted": {"type": "integer", "enum": [1]}},
        },
    }


def _text(value: Any, name: str, limit: int) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= limit or not value.isprintable():
        raise ServingError.invalid(
            f"{name} must be a printable string of 1..{limit} characters (got "
            f"{type(value).__name__} {str(value)[:40]!r})"
        )
    return value


def _user_key(value: bytes) -> str | None:
    if not 1 <= len(value) <= MAX_USER_KEY:
        return None
    text = value.decode("latin-1")
    return text if text.isprintable() else None


def _small_int(value: bytes, low: int, high: int) -> int | None:
    if not value.isdigit() or len(value) > 3:
        return None
    number = int(value)
    return number if low <= number <= high else None
