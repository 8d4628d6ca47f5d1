"""Pipeline: cold, no-op, code-only and params-only `dvc repro`, and cold time against data size.

"Cold" is a fresh copy of the template: no DVC cache, no MLflow store, no outputs; the Docker
engine's layer cache and the serving wheels are warm (as on any machine that built once), so
the image build in `containerize` reuses the dependency layer and rebuilds code and model.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tools.bench import containers, datasets, projects
from tools.bench.plan import Plan
from tools.bench.projects import Trained
from tools.bench.stats import Spread
from tools.template import edit_params

log = logging.getLogger("bench")
BUILTIN_ROWS = 569  # load_breast_cancer


def _series(runs: int, step: Callable[[int], float], what: str) -> dict[str, Any]:
    values = []
    for run in range(runs):
        values.append(step(run))
        log.info("pipeline %s run %d/%d: %.1f s", what, run + 1, runs, values[-1])
    return Spread.of(values).as_dict(2)


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def run_section(lr: Trained, *, work: Path, plan: Plan) -> dict[str, Any]:
    made: list[Path] = []
    result: dict[str, Any] = {}
    try:

        def cold(run: int) -> float:
            if run == 0:
                return lr.cold_seconds  # the serving copy's own first run
            project = projects.new_copy(work / f"cold-{run}", image_name="bench/cold")
            made.append(project)
            return projects.repro(project)

        result["cold"] = _series(plan.cold_runs, cold, "cold")
        result["noop"] = _series(plan.noop_runs, lambda _: projects.repro(lr.project), "no-op")

        def serving_code(run: int) -> float:
            _append(lr.project / "serving/app.py", f"\n# bench: code change {run}\n")
            return projects.repro(lr.project)

        result["code_only"] = _series(plan.code_runs, serving_code, "code-only")

        def params_only(run: int) -> float:
            edit_params(
                lr.project, "train", logistic_regression={"C": 0.9 - 0.1 * run, "max_iter": 1000}
            )
            return projects.repro(lr.project)

        result["params_only"] = _series(plan.params_runs, params_only, "params-only")
        sizes: list[dict[str, Any]] = [
            {"rows": BUILTIN_ROWS, "source": "builtin:breast_cancer", "cold_s": result["cold"]}
        ]
        for rows in plan.data_sizes:

            def sized(run: int, rows: int = rows) -> float:
                project = projects.new_copy(work / f"data-{rows}-{run}", image_name="bench/data")
                made.append(project)
                source, suite = datasets.write_dataset(project, rows=rows)
                edit_params(project, "data", source=source, expectations=suite)
                return projects.repro(project)

            sizes.append(
                {
                    "rows": rows,
                    "source": f"make_classification, {datasets.FEATURES} features",
                    "cold_s": _series(plan.data_runs, sized, f"cold {rows} rows"),
                }
            )
        result["data_size"] = sizes
    finally:
        for project in made:  # fresh copies: their images and data (up to GBs) go
            for tag in projects.built_images(project):
                containers.remove_image(tag)
            shutil.rmtree(project, ignore_errors=True)
    return result
