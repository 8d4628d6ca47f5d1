"""The serving image's environment follows the model card: an ONNX-served model gets the
onnxruntime-only lock, a scikit-learn-served one the full lock; checked without Docker."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipeline.errors import ImageError
from pipeline.image.context import build_args, content_hash
from pipeline.image.probe import SmokeFailed, runtime_libraries
from pipeline.image.wheels import LOCK, LOCKS, ONNX_LOCK, pinned, wheels_for

ROOT = Path(__file__).resolve().parents[3]
NOT_IN_ONNX = ("scikit-learn", "scipy", "joblib", "threadpoolctl")


def hashes(lock: Path) -> dict[str, set[str]]:
    """{project: its --hash values} of a uv-compiled lock."""
    found: dict[str, set[str]] = {}
    name = ""
    for line in lock.read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            name = line.split("==")[0].lower()
            found[name] = set()
        if name:
            found[name].update(re.findall(r"--hash=(sha256:[0-9a-f]{64})", line))
    return found


def test_the_onnx_lock_pins_a_subset_of_serving_lock_with_the_same_versions_and_hashes() -> None:
    onnx, full = pinned(ROOT / ONNX_LOCK), pinned(ROOT / LOCK)
    assert onnx and set(onnx) < set(full)
    assert {name: full[name] for name in onnx} == onnx
    onnx_hashes, full_hashes = hashes(ROOT / ONNX_LOCK), hashes(ROOT / LOCK)
    assert all(onnx_hashes[n] and onnx_hashes[n] == full_hashes[n] for n in onnx_hashes)


def test_the_onnx_lock_holds_onnxruntime_and_none_of_scikit_learn_or_scipy() -> None:
    onnx = pinned(ROOT / ONNX_LOCK)
    assert "onnxruntime" in onnx and "numpy" in onnx
    assert not [name for name in NOT_IN_ONNX if name in onnx]
    assert all(name in pinned(ROOT / LOCK) for name in NOT_IN_ONNX)


@pytest.mark.parametrize(("runtime", "lock"), [("onnx", ONNX_LOCK), ("sklearn", LOCK)])
def test_the_card_runtime_picks_the_lock_and_the_runtime_the_server_insists_on(
    runtime: str, lock: Path
) -> None:
    assert LOCKS[runtime] == lock
    assert build_args(runtime) == {"SERVING_LOCK": lock.as_posix(), "SERVING_RUNTIME": runtime}


def test_an_unknown_runtime_is_an_error_that_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="'onnx', 'sklearn'"):
        build_args("tensorrt")


def test_the_two_environments_get_different_content_hashes(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("same files")
    files = [("a", tmp_path / "a")]
    onnx = content_hash(files, base_id="sha256:1", labels={}, build_args=build_args("onnx"))
    full = content_hash(files, base_id="sha256:1", labels={}, build_args=build_args("sklearn"))
    assert onnx != full
    again = content_hash(files, base_id="sha256:1", labels={}, build_args=build_args("onnx"))
    assert again == onnx


def test_only_the_wheels_the_lock_pins_go_into_the_context(tmp_path: Path) -> None:
    lock = tmp_path / "small.lock"
    lock.write_text("numpy==2.0.0 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    for name in ("numpy-2.0.0-cp311-cp311-any.whl", "numpy-1.0.0-cp311-cp311-any.whl"):
        (tmp_path / name).touch()
    (tmp_path / "scipy-1.0.0-cp311-cp311-any.whl").touch()
    assert [p.name for p in wheels_for(lock, wheel_dir=tmp_path)] == [
        "numpy-2.0.0-cp311-cp311-any.whl"
    ]


def test_a_lock_pinning_a_wheel_the_folder_lacks_says_to_relock(tmp_path: Path) -> None:
    lock = tmp_path / "small.lock"
    lock.write_text("onnxruntime==9.9.9 \\\n")
    with pytest.raises(ImageError, match=r"no wheel for \['onnxruntime'\].*make lock"):
        wheels_for(lock, wheel_dir=tmp_path)


class FakeContainer:
    """Answers the smoke check's library probe as an image holding ``present`` would."""

    def __init__(self, present: set[str]) -> None:
        self.present = present

    def execute(self, command: list[str]) -> tuple[int, str]:
        asked = re.findall(r"'(\w+)'", command[-1])
        return 0, json.dumps({name: name in self.present for name in asked})


def test_the_smoke_check_refuses_an_onnx_image_that_still_ships_scikit_learn() -> None:
    lean = FakeContainer({"onnxruntime"})
    assert runtime_libraries(lean, runtime="onnx") == {  # type: ignore[arg-type]
        "onnxruntime": True,
        "scipy": False,
        "sklearn": False,
    }
    with pytest.raises(SmokeFailed, match="must hold \\['onnxruntime'\\] and not"):
        runtime_libraries(FakeContainer({"onnxruntime", "sklearn", "scipy"}), runtime="onnx")  # type: ignore[arg-type]


def test_the_smoke_check_refuses_a_scikit_learn_image_without_scikit_learn() -> None:
    full = FakeContainer({"onnxruntime", "sklearn", "scipy"})
    assert all(runtime_libraries(full, runtime="sklearn").values())  # type: ignore[arg-type]
    with pytest.raises(SmokeFailed, match="sklearn"):
        runtime_libraries(FakeContainer({"onnxruntime"}), runtime="sklearn")  # type: ignore[arg-type]
