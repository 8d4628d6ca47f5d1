"""The scikit-learn fallback image of a trained copy, for its size: one `docker build`.

The `containerize` stage picks the image's environment from the model card
(``ModelCard.runtime``): a model with a verified ONNX graph gets ``requirements/serving-onnx.lock``
(onnxruntime only), any other the full ``requirements/serving.lock`` (scikit-learn, scipy and
onnxruntime) with ``SERVING_RUNTIME=sklearn``. Both bench models export to ONNX, so the
fallback is never built by their `dvc repro`; rather than a second pipeline run with the export
disabled, this builds the copy's own context exactly as the stage would for ``runtime="sklearn"``
(the stage's own functions: files, build arguments, the lock's wheels, the Dockerfile), on the
same base, with no network. Labels are left out (they weigh nothing).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from tools.bench import containers

REPOSITORY = "bench/fallback"


def build(project: Path, *, base: str, log: Path) -> tuple[str, float]:
    """Build the fallback image of the copy ``project``; its tag and the build's seconds."""
    from pipeline.image import context
    from pipeline.image.wheels import wheels_for

    args = context.build_args("sklearn")
    with contextlib.chdir(project):  # the stage's paths are relative to the project
        lock = Path(args["SERVING_LOCK"])
        entries: dict[str, Path | bytes] = {
            name: path.resolve() for name, path in context.context_files(lock=lock)
        }
        wheels = wheels_for(lock, wheel_dir=Path("build/wheels"))
        entries |= {f"build/wheels/{p.name}": p.resolve() for p in wheels}
    tag = f"{REPOSITORY}:sklearn"
    started = time.monotonic()
    with context.tar_context(entries) as tar:
        containers.build_tar(tar, tag=tag, log=log, build_args={"BASE_IMAGE": base, **args})
    return tag, time.monotonic() - started
