"""`python -m tools.bench`: run the benchmark and write tools/bench/results.md and results.json.

    python -m tools.bench                 # the full plan (make bench)
    python -m tools.bench --quick         # short runs, for working on the bench itself
    python -m tools.bench --only serving,startup

A benchmark, not a test: a section that fails is recorded in the results as an error and the
others still run; the exit status is 1 only so that a broken bench is noticed.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from tools.bench import (
    bentoml_env,
    containers,
    mlflow_image,
    pipeline_times,
    projects,
    promotion_times,
    report,
    serving,
    startup,
)
from tools.bench.plan import FULL, QUICK, SECTIONS, Plan
from tools.bench.projects import ROOT, Trained

log = logging.getLogger("bench")
SHARED_NOTE = (
    "other sessions may run tests on this 2-core virtual machine (the load averages below say "
    "how busy it was), so absolute figures drift from run to run; every ratio compares servers "
    "measured in the same run, interleaved."
)


def _versions(bentoml: Path | None) -> dict[str, str]:
    def first_line(*command: str) -> str:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except OSError:
            return "n/a"
        lines = (done.stdout or done.stderr).strip().splitlines()
        return lines[0] if lines else "n/a"

    import mlflow  # the version that generated MLflow's image and serves on the host

    found = {
        "mlflow": mlflow.__version__,
        "wrk": first_line("wrk", "-v").split(" [")[0],
        "docker": first_line("docker", "version", "-f", "{{.Server.Version}}"),
        "python": platform.python_version(),
    }
    if bentoml is not None:
        found["bentoml"] = first_line(str(bentoml), "--version")
    return found


def _machine() -> str:
    pages = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return f"{os.cpu_count()} cores, {pages / 2**30:.0f} GiB, {platform.platform(terse=True)}"


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _preflight() -> None:
    missing = [
        tool
        for tool in ("wrk", "taskset", "nsenter", "curl", "docker")
        if shutil.which(tool) is None
    ]
    if missing:
        sys.exit(f"bench: missing {', '.join(missing)} (make bench installs wrk with apt)")
    if (os.cpu_count() or 1) < 2:
        sys.exit("bench: needs 2 cores (the load generator on one, the servers on the other)")


def _mlflow_image(trained: Trained, *, base: str, work: Path) -> tuple[str | None, str]:
    """MLflow's image for ``trained``: its tag (None if it failed) and what to say about it."""
    slug = "lr" if trained.kind == "logistic_regression" else "rf"
    tag = f"bench/mlflow-{slug}:latest"
    try:
        built = mlflow_image.build(
            model_uri=trained.model_uri,
            project=trained.project,
            env=trained.mlflow_env(),
            base=base,
            work=work / f"mlflow-{slug}",
            tag=tag,
        )
    except (mlflow_image.MlflowImageError, containers.EngineError, OSError) as exc:
        log.warning("MLflow's image for %s failed: %s", trained.kind, exc)
        return None, f"FAILED, left out: {exc}"[:800]
    rewritten = cast(list[dict[str, str]], built["pins_rewritten"])
    pins = "; ".join(f"{c['file']}: {c['was']} -> {c['now']}" for c in rewritten)
    return tag, (
        f"{tag} from `mlflow models generate-dockerfile -m {trained.model_uri} "
        f"--env-manager local`, {built['generated_from']} rewritten to FROM {base} "
        f"(tools/bench/README.md); model pins the wheel folder could not serve, rewritten: "
        f"{pins or 'none'}; built in {built['build_seconds']} s"
    )


def _bentoml(work: Path) -> tuple[Path | None, str]:
    import numpy
    import sklearn

    started = time.monotonic()
    try:
        found = bentoml_env.ensure(
            work / "bentoml-venv", sklearn=sklearn.__version__, numpy=numpy.__version__
        )
    except bentoml_env.BentoMLUnavailable as exc:
        return None, f"did not install, left out: {exc}"
    seconds = time.monotonic() - started
    return found, f"{bentoml_env.BENTOML} in a throwaway venv (build/bench), in {seconds:.0f} s"


def _section(results: dict[str, Any], name: str, run: Any) -> None:
    started = time.monotonic()
    log.info("=== %s ===", name)
    try:
        results[name] = run()
    except Exception as exc:  # a benchmark section failing must not lose the others' figures
        log.exception("section %s failed", name)
        results[name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
    results["meta"]["section_s"][name] = round(time.monotonic() - started, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="short runs (develop the bench)")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "tools" / "bench", help="where results go"
    )
    parser.add_argument("--work", type=Path, default=ROOT / "build/bench", help="scratch space")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s bench: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    logging.getLogger("pipeline").setLevel(logging.WARNING)
    sections = [s for s in args.only.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    plan: Plan = QUICK if args.quick else FULL
    _preflight()
    os.chdir(ROOT)
    started, load_before = time.monotonic(), _load()
    work = args.work.resolve()
    copies = work / "copies"
    shutil.rmtree(copies, ignore_errors=True)
    results: dict[str, Any] = {
        "meta": {
            "mode": "quick" if args.quick else "full",
            "plan": plan.as_dict(),
            "sections": sections,
            "started": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "machine": _machine(),
            "shared_note": SHARED_NOTE,
            "load_before": load_before,
            "setup": {},
            "section_s": {},
        }
    }
    setup = results["meta"]["setup"]

    log.info("training the models in template copies (cold dvc repro, our image built)")
    lr = projects.train(copies / "lr", kind="logistic_regression")  # measured: runs alone
    setup["logistic_regression copy: cold dvc repro"] = f"{lr.cold_seconds:.1f} s ({lr.image})"
    base = str(lr.image_info["base"]["ref"])
    want_mlflow = bool({"serving", "startup"} & set(sections))
    models: list[Trained] = [lr]
    mlflow_images: dict[str, str] = {}
    bentoml: Path | None = None
    # Setup that is not itself a figure runs side by side to save wall time: MLflow's image
    # for the first model and BentoML's venv, while the second model trains.
    with ThreadPoolExecutor(max_workers=2) as pool:
        lr_image = pool.submit(_mlflow_image, lr, base=base, work=work) if want_mlflow else None
        bento = pool.submit(_bentoml, work) if "serving" in sections else None
        if "serving" in sections:
            rf = projects.train(copies / "rf", kind="random_forest")
            setup["random_forest copy: cold dvc repro"] = (
                f"{rf.cold_seconds:.1f} s, beside other setup ({rf.image})"
            )
            models.append(rf)
        for trained, future in ((lr, lr_image), *((m, None) for m in models[1:])):
            if not want_mlflow:
                break
            tag, said = future.result() if future else _mlflow_image(trained, base=base, work=work)
            setup[f"MLflow image ({trained.kind})"] = said
            if tag:
                mlflow_images[trained.kind] = tag
        if bento is not None:
            bentoml, setup["BentoML"] = bento.result()
    results["meta"]["versions"] = _versions(bentoml)

    if "serving" in sections:
        _section(
            results,
            "serving",
            lambda: serving.run_section(
                models,
                work=work / "serving",
                mlflow_images=mlflow_images,
                bentoml=bentoml,
                plan=plan,
            ),
        )
    if "startup" in sections:
        _section(
            results,
            "startup",
            lambda: startup.run_section(
                ours=lr.image,
                mlflow=mlflow_images.get(lr.kind),
                base=base,
                runs=plan.startup_runs,
                project=lr.project,
                work=work / "startup",
            ),
        )
    if "promotion" in sections:
        _section(
            results,
            "promotion",
            lambda: promotion_times.run_section(lr, work=work / "promotion", plan=plan),
        )
    if "pipeline" in sections:  # last: it edits the logistic_regression copy
        _section(
            results, "pipeline", lambda: pipeline_times.run_section(lr, work=copies, plan=plan)
        )

    for repository in projects.IMAGE_REPOSITORIES:  # ours, built in this run's copies
        for tag in containers.tags_of(repository):  # (MLflow's images stay: a build cache)
            containers.remove_image(tag)
    meta = results["meta"]
    meta["wall_s"] = round(time.monotonic() - started, 1)
    meta["finished"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    meta["load_after"] = _load()
    args.out.mkdir(parents=True, exist_ok=True)
    report.write(results, json_path=args.out / "results.json", md_path=args.out / "results.md")
    log.info(
        "wrote %s and %s in %.1f min",
        args.out / "results.md",
        args.out / "results.json",
        meta["wall_s"] / 60,
    )
    failed = [name for name in sections if "error" in (results.get(name) or {})]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
