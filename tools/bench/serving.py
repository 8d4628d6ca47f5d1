"""Serving: the same model behind every server, the same wrk, the same bodies, interleaved.

For each cell (rows x concurrency) every server gets one wrk run in turn, repeated; so a
burst of load from the machine's other tenants hits all servers alike rather than one of them.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sklearn.datasets import load_breast_cancer

from tools.bench import bentoml_env, containers, entry, load, servers
from tools.bench.plan import CONCURRENCY, KEY_CONCURRENCY, ROWS, Plan
from tools.bench.projects import Trained
from tools.bench.servers import Server, StartError
from tools.bench.stats import Spread

log = logging.getLogger("bench")
HELLO = Path(__file__).with_name("hello_app.py")


@dataclass(frozen=True)
class Entry:
    """The deploy's HAProxy entry image and its config (tools.bench.entry)."""

    image: str
    config: Path
    port: int
    admin: int


def entry_setup(trained: Trained, *, work: Path) -> tuple[Entry | None, str]:
    """The entry image and config, built once; None and why when it cannot be."""
    from pipeline.errors import PipelineError

    try:
        image = entry.image(base=str(trained.image_info["base"]["ref"]), work=work)
        config, port, admin = entry.config(work)
    except (PipelineError, containers.EngineError, StartError, OSError) as exc:
        log.warning("the HAProxy entry is left out: %s", exc)
        return None, f"left out: {exc}"[:800]
    return Entry(image, config, port, admin), f"{image}, config {config}"


@dataclass(frozen=True)
class Cell:
    rows: int
    connections: int
    runs: int
    seconds: int


def grid(plan: Plan) -> list[Cell]:
    cells = []
    for rows in ROWS:
        for connections in CONCURRENCY:
            key = connections == KEY_CONCURRENCY
            runs = plan.key_runs if key else plan.other_runs
            seconds = plan.key_seconds if key else plan.other_seconds
            cells.append(Cell(rows, connections, runs, seconds))
    return cells


def write_bodies(work: Path) -> dict[int, tuple[Path, Path]]:
    """MLflow's ``dataframe_split`` body of 1 and 100 rows and a wrk script POSTing each."""
    work.mkdir(parents=True, exist_ok=True)
    frame = load_breast_cancer(as_frame=True).frame.drop(columns="target")
    made = {}
    for rows in ROWS:
        split = {"columns": list(frame.columns), "data": frame.iloc[:rows].values.tolist()}
        body = work / f"body-{rows}.json"
        body.write_text(json.dumps({"dataframe_split": split}))
        made[rows] = (body, load.post_script(body=body, script=work / f"post-{rows}.lua"))
    return made


def start_all(
    trained: Trained,
    *,
    work: Path,
    mlflow_image: str | None,
    bentoml: Path | None,
    notes: dict[str, str],
    entry_setup: Entry | None = None,
) -> list[Server]:
    """Every server that starts, in table order; a failure is noted, not fatal. They start
    side by side on both cores, then move to the server core before any load (start-up
    times are measured in the startup section, pinned, not here)."""
    starters: dict[str, Callable[[], Server]] = {
        "ours": lambda: servers.start_container(
            name="ours",
            title="ours (container)",
            image=trained.image,
            ready_path="/v2/health/ready",
            workers="1 (SERVING_WORKERS default)",
            pinned=False,
        )
    }
    if entry_setup is not None:
        starters["ours-haproxy"] = lambda: entry.start(
            servers.start_container(
                name="ours-haproxy",
                title="ours behind HAProxy (entry)",
                image=trained.image,
                ready_path="/v2/health/ready",
                workers="1",
                pinned=False,
            ),
            entry_image=entry_setup.image,
            cfg=entry_setup.config,
            port=entry_setup.port,
            admin=entry_setup.admin,
        )
    if mlflow_image:
        starters["mlflow-container"] = lambda: servers.start_container(
            name="mlflow-container",
            title="MLflow (container)",
            image=mlflow_image,
            ready_path="/ping",
            workers="nginx + uvicorn --workers cpu_count() (MLflow's default: 2 here)",
            pinned=False,
        )
    port = servers.free_port()
    mlflow_cli = str(Path(sys.executable).parent / "mlflow")
    starters["mlflow-host"] = lambda: servers.start_host(
        name="mlflow-host",
        title="mlflow models serve (host)",
        command=[
            mlflow_cli,
            "models",
            "serve",
            "-m",
            trained.model_uri,
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=trained.project,
        env=trained.mlflow_env(),
        port=port,
        ready_path="/ping",
        workers="1 (--workers default)",
        log_file=work / f"mlflow-host-{trained.kind}.log",
        pinned=False,
    )
    if bentoml is not None:
        port_b = servers.free_port()
        env = dict(
            os.environ,
            BENCH_MODEL=str(trained.model_pkl),
            BENTOML_DO_NOT_TRACK="True",
            BENTOML_HOME=str(work / "bentoml-home"),
            PATH=f"{bentoml.parent}{os.pathsep}{os.environ['PATH']}",
        )
        service = bentoml_env.service_dir(work / "bentoml-service")
        starters["bentoml"] = lambda: servers.start_host(
            name="bentoml",
            title="BentoML (host)",
            command=[
                str(bentoml),
                "serve",
                "bentoml_service:Classifier",
                "--host",
                "127.0.0.1",
                "--port",
                str(port_b),
            ],
            cwd=service,
            env=env,
            port=port_b,
            ready_path="/readyz",
            workers="1 (@bentoml.service(workers=1))",
            log_file=work / f"bentoml-{trained.kind}.log",
            pinned=False,
        )
    starters["hello"] = lambda: servers.start_container(
        name="hello",
        title="uvicorn hello (ceiling)",
        image=trained.image,
        ready_path="/",
        workers="1",
        volumes=[f"{HELLO}:/bench/hello_app.py:ro"],
        entrypoint="/opt/venv/bin/python",
        args=["/bench/hello_app.py"],
        pinned=False,
    )
    started: list[Server] = []
    with ThreadPoolExecutor(max_workers=len(starters)) as pool:
        futures = {name: pool.submit(start) for name, start in starters.items()}
        for name, future in futures.items():
            try:
                server = future.result()
            except (StartError, OSError) as exc:
                notes[name] = f"did not start: {str(exc)[:600]}"
                log.warning("%s did not start: %s", name, str(exc)[:300])
                continue
            try:
                server.pin()  # before any load: every server runs on the server core only
            except containers.EngineError as exc:
                notes[name] = f"could not be pinned to the server core, left out: {exc}"
                server.stop()
                continue
            log.info(
                "%s ready in %.1f s (started side by side, now pinned)",
                server.title,
                server.ready_seconds,
            )
            started.append(server)
    return started


def check_answers(
    running: list[Server], bodies: dict[int, tuple[Path, Path]], notes: dict[str, str]
) -> list[Server]:
    """Keep the servers whose answer to the 100-row body is 100 predictions; note whether the
    model servers agree with ours row by row (same model, same answers)."""
    kept, answers = [], {}
    for server in running:
        try:
            raw = servers.netns_post(server.target, bodies[100][0])
            predictions = json.loads(raw)["predictions"]
        except (StartError, ValueError, KeyError) as exc:
            notes[server.name] = f"wrong answer to the benchmark body, left out: {exc}"
            server.stop()
            continue
        if server.name != "hello":
            if len(predictions) != 100:
                notes[server.name] = f"answered {len(predictions)} predictions for 100 rows"
                server.stop()
                continue
            answers[server.name] = [int(p) for p in predictions]
        kept.append(server)
    reference = answers.get("ours")
    for name, predicted in answers.items():
        if reference is not None and predicted != reference:
            differ = sum(a != b for a, b in zip(predicted, reference, strict=True))
            notes[f"{name}-agreement"] = f"{differ} of 100 predictions differ from ours"
    return kept


def measure(
    running: list[Server],
    *,
    model: str,
    bodies: dict[int, tuple[Path, Path]],
    plan: Plan,
) -> list[dict[str, Any]]:
    for server in running:  # first requests load lazily-imported code: not part of the figures
        for rows in ROWS:
            load.run_wrk(
                server.target, script=bodies[rows][1], connections=8, seconds=plan.warmup_seconds
            )
    rows_out = []
    for cell in grid(plan):
        # The ceiling is measured where the targets are (c=8), in every model's turn.
        loaded = [s for s in running if s.name != "hello" or cell.connections == KEY_CONCURRENCY]
        samples: dict[str, list[load.Sample]] = {s.name: [] for s in loaded}
        for run in range(cell.runs):
            for server in loaded:
                sample = load.run_wrk(
                    server.target,
                    script=bodies[cell.rows][1],
                    connections=cell.connections,
                    seconds=cell.seconds,
                )
                samples[server.name].append(sample)
                log.info(
                    "%s %s rows=%d c=%d run %d/%d: %.0f req/s, p99 %.1f ms, %d errors",
                    model,
                    server.name,
                    cell.rows,
                    cell.connections,
                    run + 1,
                    cell.runs,
                    sample.rps,
                    sample.p99_ms,
                    sample.errors,
                )
        for server in loaded:
            got = samples[server.name]
            rows_out.append(
                {
                    "model": model,
                    "server": server.name,
                    "title": server.title,
                    "rows": cell.rows,
                    "concurrency": cell.connections,
                    "seconds_per_run": cell.seconds,
                    "rps": Spread.of([s.rps for s in got]).as_dict(1),
                    "p50_ms": Spread.of([s.p50_ms for s in got]).as_dict(3),
                    "p99_ms": Spread.of([s.p99_ms for s in got]).as_dict(3),
                    "requests": sum(s.requests for s in got),
                    "errors": sum(s.errors for s in got),
                    "rss_mb": round(server.rss_bytes() / 1e6, 1),
                }
            )
    return rows_out


def run_section(
    models: list[Trained],
    *,
    work: Path,
    mlflow_images: dict[str, str],
    bentoml: Path | None,
    plan: Plan,
) -> dict[str, Any]:
    bodies = write_bodies(work / "bodies")
    result: dict[str, Any] = {"rows": [], "servers": {}, "notes": {}}
    haproxy, result["entry"] = entry_setup(models[0], work=work / "entry")
    for trained in models:
        notes: dict[str, str] = {}
        running = start_all(
            trained,
            work=work,
            mlflow_image=mlflow_images.get(trained.kind),
            bentoml=bentoml,
            notes=notes,
            entry_setup=haproxy,
        )
        try:
            running = check_answers(running, bodies, notes)
            for server in running:
                result["servers"].setdefault(
                    server.name, {"title": server.title, "workers": server.workers}
                )
            result["rows"] += measure(running, model=trained.kind, bodies=bodies, plan=plan)
        finally:
            for server in running:
                server.stop()
        result["notes"][trained.kind] = notes
    return result
