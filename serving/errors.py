"""The error envelope every route answers with: ``{"error_code": ..., "message": ...}``.

Codes follow MLflow's scoring server (``BAD_REQUEST``, ``INVALID_PARAMETER_VALUE``, ...) so a
client written against ``mlflow models serve`` reads them unchanged. Open Inference Protocol
routes add the ``error`` key that protocol defines, with the same message.
"""

from __future__ import annotations

__all__ = ["ModelLoadError", "ServingError", "SettingsError"]


class ServingError(Exception):
    """A request the server refuses, with the HTTP status and envelope to answer with, and
    ``headers`` to send with it (``Retry-After``)."""

    def __init__(
        self,
        status: int,
        error_code: str,
        message: str,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.headers = headers

    @classmethod
    def bad_request(cls, message: str) -> ServingError:
        """The body cannot be read at all: not JSON, not UTF-8, no known input format."""
        return cls(400, "BAD_REQUEST", message)

    @classmethod
    def invalid(cls, message: str) -> ServingError:
        """The body parses but breaks the model's input schema (columns, types, values)."""
        return cls(400, "INVALID_PARAMETER_VALUE", message)

    @classmethod
    def too_large(cls, message: str) -> ServingError:
        """More rows, bytes or JSON values than the server is configured to take in one
        request; the message names the limit and the setting that raises it."""
        return cls(413, "REQUEST_LIMIT_EXCEEDED", message)

    @classmethod
    def busy(cls, message: str, *, retry_after_s: int) -> ServingError:
        """Every slot for large requests is taken and the queue is full or waited too long."""
        headers = ((b"retry-after", str(retry_after_s).encode()),)
        return cls(503, "TEMPORARILY_UNAVAILABLE", message, headers)

    @classmethod
    def unsupported_media(cls, message: str) -> ServingError:
        return cls(415, "UNSUPPORTED_MEDIA_TYPE", message)

    @classmethod
    def not_found(cls, message: str) -> ServingError:
        return cls(404, "RESOURCE_DOES_NOT_EXIST", message)

    @classmethod
    def not_ready(cls, message: str) -> ServingError:
        return cls(503, "TEMPORARILY_UNAVAILABLE", message)


class ModelLoadError(Exception):
    """The model directory cannot be served: the message says what is wrong and where."""


class SettingsError(ValueError):
    """A ``SERVING_*`` environment variable holds a value serving cannot use; raised before
    anything listens (``pipeline serve`` reports it as a configuration error, exit 2)."""
