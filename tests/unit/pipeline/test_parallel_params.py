"""train.parallel validation: the joblib backend of the fit, checked once when params.yaml loads."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import load_params
from tests.support.params import config_error, write_params


def _params(tmp_path: Path, template_root: Path, parallel: dict[str, object] | None) -> Path:
    """The template's params.yaml with ``train.parallel`` replaced, or removed (None)."""

    def change(raw: dict[str, Any]) -> None:
        if parallel is None:
            del raw["train"]["parallel"]
        else:
            raw["train"]["parallel"] = parallel

    return write_params(tmp_path, template_root, change=change)


def test_the_template_trains_on_loky_with_every_core(template_root: Path) -> None:
    parallel = load_params(template_root / "params.yaml").train.parallel
    assert (parallel.backend, parallel.n_jobs, parallel.address) == ("loky", -1, None)


def test_a_params_file_without_the_section_gets_the_same_defaults(
    template_root: Path, tmp_path: Path
) -> None:
    parallel = load_params(_params(tmp_path, template_root, None)).train.parallel
    assert (parallel.backend, parallel.n_jobs, parallel.address) == ("loky", -1, None)


def test_dask_with_a_scheduler_address_loads(template_root: Path, tmp_path: Path) -> None:
    path = _params(
        tmp_path, template_root, {"backend": "dask", "address": "tcp://127.0.0.1:8786", "n_jobs": 4}
    )
    parallel = load_params(path).train.parallel
    assert (parallel.backend, parallel.address, parallel.n_jobs) == (
        "dask",
        "tcp://127.0.0.1:8786",
        4,
    )


def test_an_address_with_backend_loky_is_refused_naming_both_keys(
    template_root: Path, tmp_path: Path
) -> None:
    message = config_error(_params(tmp_path, template_root, {"address": "tcp://10.0.0.5:8786"}))
    assert "train.parallel" in message and "address" in message
    assert "'loky'" in message and "backend: dask" in message


def test_dask_without_distributed_installed_says_what_to_install(
    template_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # what Python does for "not importable"
    message = config_error(_params(tmp_path, template_root, {"backend": "dask"}))
    assert "'distributed' is not installed" in message
    assert "make install" in message and "pip install distributed" in message


def test_an_unknown_backend_lists_the_allowed_ones(template_root: Path, tmp_path: Path) -> None:
    message = config_error(_params(tmp_path, template_root, {"backend": "ray"}))
    assert "train.parallel.backend" in message and "'ray'" in message
    assert "'loky'" in message and "'dask'" in message


@pytest.mark.parametrize("n_jobs", [0, -2, 5000])
def test_n_jobs_outside_minus_one_or_1_to_1024_is_refused(
    template_root: Path, tmp_path: Path, n_jobs: int
) -> None:
    message = config_error(_params(tmp_path, template_root, {"n_jobs": n_jobs}))
    assert "train.parallel" in message and "n_jobs" in message


@pytest.mark.parametrize(
    "address", ["", "tcp://host:8786/path", "tcp://a b:8786", "tcp://" + "h" * 300 + ":8786"]
)
def test_a_malformed_or_oversized_address_is_refused(
    template_root: Path, tmp_path: Path, address: str
) -> None:
    message = config_error(
        _params(tmp_path, template_root, {"backend": "dask", "address": address})
    )
    assert "train.parallel.address" in message


def test_a_typo_in_the_section_is_named(template_root: Path, tmp_path: Path) -> None:
    message = config_error(_params(tmp_path, template_root, {"backend": "dask", "adress": "x:1"}))
    assert "train.parallel.adress: unknown key" in message
