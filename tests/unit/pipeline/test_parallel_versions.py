"""The version check before a fit on someone else's Dask scheduler, on the answer
``Client.get_versions`` gives (its shape recorded from distributed 2026.8)."""

from __future__ import annotations

import copy
from typing import Any

from pipeline.ml.parallel import version_differences

PACKAGES = {
    "python": "3.11.7.final.0",
    "scikit-learn": "1.9.1",
    "scipy": "1.16.3",
    "numpy": "2.4.6",
    "joblib": "1.6.0",
    "cloudpickle": "3.1.3",
    "dask": "2026.8.0",
    "distributed": "2026.8.0",
    "tornado": "6.6.1",
}


def _answer(**worker_changes: str) -> dict[str, Any]:
    worker = copy.deepcopy(PACKAGES) | worker_changes
    return {
        "scheduler": {"packages": dict(PACKAGES)},
        "client": {"packages": dict(PACKAGES)},
        "workers": {
            "tcp://10.0.1.5:40000": {"packages": dict(PACKAGES)},
            "tcp://10.0.1.6:40000": {"packages": worker},
        },
    }


def test_workers_with_this_environments_versions_pass() -> None:
    assert version_differences(_answer()) == []


def test_a_worker_with_another_scikit_learn_is_named_with_both_versions() -> None:
    assert version_differences(_answer(**{"scikit-learn": "1.5.2"})) == [
        "tcp://10.0.1.6:40000 has scikit-learn 1.5.2, here 1.9.1"
    ]


def test_another_python_patch_release_passes_but_another_minor_does_not() -> None:
    assert version_differences(_answer(python="3.11.2.final.0")) == []
    (difference,) = version_differences(_answer(python="3.12.1.final.0"))
    assert "python 3.12.1.final.0, here 3.11.7.final.0" in difference


def test_a_package_the_worker_lacks_is_a_difference() -> None:
    answer = _answer()
    del answer["workers"]["tcp://10.0.1.6:40000"]["packages"]["joblib"]
    assert version_differences(answer) == ["tcp://10.0.1.6:40000 has joblib None, here 1.6.0"]


def test_packages_that_do_not_touch_the_model_may_differ() -> None:
    assert version_differences(_answer(tornado="6.5.0")) == []
