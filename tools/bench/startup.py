"""Startup and size: container start to ready, ours against MLflow's, alternating; the images'
sizes on the same base, and the size of the scikit-learn fallback image of the same model
(built once here: :mod:`tools.bench.fallback_image`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from tools.bench import containers, fallback_image, servers
from tools.bench.stats import Spread

log = logging.getLogger("bench")


def run_section(
    *, ours: str, mlflow: str | None, base: str, runs: int, project: Path, work: Path
) -> dict[str, Any]:
    """``project``: the copy ``ours`` was built in (its fallback image is built from it)."""
    images = {"ours": (ours, "/v2/health/ready")}
    if mlflow:
        images["mlflow-container"] = (mlflow, "/ping")
    ready: dict[str, list[float]] = {name: [] for name in images}
    idle_rss: dict[str, list[float]] = {name: [] for name in images}
    for run in range(runs):
        for name, (image, path) in images.items():
            server = servers.start_container(
                name=name, title=name, image=image, ready_path=path, workers="default"
            )
            try:
                ready[name].append(server.ready_seconds)
                idle_rss[name].append(server.rss_bytes() / 1e6)
            finally:
                server.stop()
            log.info("startup %s run %d/%d: ready in %.2f s", name, run + 1, runs, ready[name][-1])
    base_size = containers.image_size(base)
    result: dict[str, Any] = {"ready_s": {}, "idle_rss_mb": {}, "size": {}}
    for name, (image, _) in images.items():
        size = containers.image_size(image)
        result["ready_s"][name] = Spread.of(ready[name]).as_dict(3)
        result["idle_rss_mb"][name] = Spread.of(idle_rss[name]).as_dict(1)
        result["size"][name] = {
            "image": image,
            "bytes": size,
            "mb": round(size / 1e6, 1),
            "above_base_mb": round((size - base_size) / 1e6, 1),
        }
    result["size"]["base"] = {"image": base, "bytes": base_size, "mb": round(base_size / 1e6, 1)}
    work.mkdir(parents=True, exist_ok=True)
    try:
        tag, seconds = fallback_image.build(project, base=base, log=work / "fallback-image.log")
    except (containers.EngineError, PipelineError, OSError, ValueError) as exc:
        result["fallback_error"] = f"the scikit-learn fallback image did not build: {exc}"[:800]
        log.warning("%s", result["fallback_error"])
        return result
    try:
        size = containers.image_size(tag)
    finally:
        containers.remove_image(tag)
    result["size"]["sklearn-fallback"] = {
        "image": tag,
        "bytes": size,
        "mb": round(size / 1e6, 1),
        "above_base_mb": round((size - base_size) / 1e6, 1),
        "build_s": round(seconds, 1),
    }
    log.info("scikit-learn fallback image: %.0f MB (built in %.0f s)", size / 1e6, seconds)
    return result
