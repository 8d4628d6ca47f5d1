"""``python -m serving [MODEL_DIR]``: serve with settings from ``SERVING_*``."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from serving.server import run
from serving.settings import Settings, SettingsError

if __name__ == "__main__":
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        sys.exit(f"serving: {exc}")
    if len(sys.argv) > 1:
        settings = replace(settings, model_dir=Path(sys.argv[1]))
    run(settings)
