"""params.yaml files for tests: the template's, edited, and the one-line error a bad one gives."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.config import load_params
from pipeline.errors import ConfigError


def write_params(
    tmp_path: Path,
    template_root: Path,
    edit: dict[str, dict[str, object]] | None = None,
    *,
    change: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """The template's params.yaml in ``tmp_path``: each section of ``edit`` updated key by key,
    then ``change`` applied to the whole document (to delete a key, say)."""
    raw = yaml.safe_load((template_root / "params.yaml").read_text())
    raw["data"]["expectations"] = str(template_root / raw["data"]["expectations"])
    for section, values in (edit or {}).items():
        raw.setdefault(section, {}).update(values)
    if change is not None:
        change(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def config_error(path: Path) -> str:
    """The message ``load_params`` refuses ``path`` with (exit code 2)."""
    with pytest.raises(ConfigError) as caught:
        load_params(path)
    assert caught.value.exit_code == 2
    return str(caught.value)
