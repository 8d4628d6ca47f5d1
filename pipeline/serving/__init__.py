"""The model as a REST micro-service. The HTTP contract is in :mod:`pipeline.serving.app`;
settings (``SERVING_*`` environment variables) in :mod:`pipeline.serving.settings`.

Imports nothing beyond requirements/serving.in: no MLflow, pandas or pydantic. Names are
resolved lazily, so importing one module (the train stage uses :mod:`.runtime` for the ONNX
parity check) does not load the web server.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["ServingApp", "Settings", "SettingsError", "create_app", "serve"]
_HOMES = {
    "ServingApp": "app",
    "create_app": "app",
    "serve": "server",
    "Settings": "settings",
    "SettingsError": "settings",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'pipeline.serving' has no attribute {name!r}")
    return getattr(import_module(f"pipeline.serving.{_HOMES[name]}"), name)
