"""The world of the A/B tests on Swarm: the deploy tests' one-node Swarm and registry, a real
model image D1 (contract-tested for real) serving staging through the HAProxy entry, and a
candidate D2 (D1 rebuilt with one more label: a new digest) with passing, attested evidence.

Names start with ``gmab-``; the fixture removes what it created (the stack, its configs, the
images tagged with the run id) and leaves the Swarm only if it did the init.
"""

from __future__ import annotations

import io
import json
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pipeline.image.engine import Engine
from tests.integration.deploy.conftest import World, docker, new_release_key, swarm_manager
from tests.support.registry import LocalRegistry, free_port
from tools.template import GIT, copy_template, dvc, edit_params, run

__all__ = ["swarm_manager", "world"]
FIGURES: list[str] = []


@pytest.fixture(scope="module")
def world(
    swarm_manager: None, template_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    engine = Engine.connect()
    run_id = uuid.uuid4().hex[:8]
    root = tmp_path_factory.mktemp("ab-swarm")
    work = copy_template(template_root, root / "project")
    edit_params(work, "image", name=f"gmab-{run_id}")
    edit_params(work, "validate", champion={"enabled": False})
    # a shared machine; the real suite, smaller (the full-size run is test_containerize's)
    edit_params(
        work, "contract", latency_p95_ms=250, time_to_ready_s=60, fuzz_cases=100,
        latency_requests=50,
    )  # fmt: skip
    stack, port, stats_port = f"gmab-{run_id}", free_port(), free_port()
    topology = {
        "environments": {
            "staging": {
                "stack": stack,
                "replicas": 1,  # per arm: two model tasks in all, on a 2-core machine
                "resources": {"cpus": 0.5, "memory_mb": 512},
                # generous: a 1 s check times out on this shared machine and Swarm restarts
                # a healthy task in the middle of a measurement
                "health": {"interval_s": 5, "timeout_s": 4, "retries": 5, "start_period_s": 30},
                "update": {"monitor_s": 3, "timeout_s": 240},
                "stop_grace_period_s": 5,
                "entry": {"port": port, "stats_port": stats_port},
            }
        }
    }
    (work / "deploy").mkdir(exist_ok=True)
    (work / "deploy/topology.yaml").write_text(yaml.safe_dump(topology, sort_keys=False))
    key = new_release_key(work, root)
    run(work, *GIT, "add", "-A")
    run(work, *GIT, "commit", "-qm", "A/B test settings")
    wheels = template_root / "build/wheels"
    if (wheels / ".serving.lock.sha256").is_file():  # a download cache, checked by its stamp
        shutil.copytree(wheels, work / "build/wheels")
    dvc(work, "repro")
    registry = LocalRegistry(root / "registry").start()
    world = World(
        work=work,
        registry=registry,
        run_id=run_id,
        stack=stack,
        port=port,
        stats_port=stats_port,
        repository=f"gmab/model-{run_id}",
        key=key,
    )
    try:
        world.pipeline("push")
        built = json.loads((work / "build/image.json").read_text())
        world.digests["D1"], world.refs["D1"] = built["digest"], built["image"]
        world.pipeline("contract-test", "--image", built["image"])
        world.release()
        world.pipeline("promote", "--image", built["digest"], "--to", "staging")
        started = time.monotonic()
        world.pipeline("reconcile", "--env", "staging")
        FIGURES.append(f"first reconcile (no experiment): {time.monotonic() - started:.1f} s")
        tag = f"gmab-{run_id}:d2"
        dockerfile = f"FROM {built['image']}\nLABEL test.variant=d2\n".encode()
        engine.client.images.build(fileobj=io.BytesIO(dockerfile), tag=tag, rm=True)
        world.refs["D2"] = tag
        repository = f"{registry.address}/{world.repository}"
        image_id = engine.client.images.get(tag).id
        world.digests["D2"] = engine.push(image_id, repository=repository, tags=["d2"])
        world.attest_like_d1("D2")
        yield world
    finally:
        docker("stack", "rm", stack, check=False)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            label = f"label=com.docker.stack.namespace={stack}"
            left = docker("ps", "-aq", "--filter", label).stdout.strip()
            left += docker("network", "ls", "-q", "--filter", f"name={stack}_").stdout.strip()
            if not left:
                break
            time.sleep(1)
        for name in docker("config", "ls", "--format", "{{.Name}}").stdout.split():
            if name.startswith(f"{stack}_"):
                docker("config", "rm", name, check=False)
        registry.stop()
        for image in engine.client.images.list():
            names = list(image.tags) + list(image.attrs.get("RepoDigests") or [])
            for name in names:
                if run_id in name:
                    engine.untag(name)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in FIGURES:
        terminalreporter.write_line(f"ab: {line}")
