"""`pipeline reconcile`, `status` and `rollback` against a real one-node Swarm, registry, HAProxy.

The images are the project's own: D1 is what `dvc repro` built (model version 1, contract
tested and promoted for real); D2 is D1 rebuilt with one more label (a new digest serving the
same model; contract tested and promoted for real); "bad" is D1 with its model file corrupted,
so the server never becomes ready. It would never pass the contract suite, so no promotion
would take it: the test writes the state file a promotion would have written for it, which is
the case this protects against (an image that passed its tests yet cannot start in the
environment). The tests run in file order and build on each other, as an environment's life
does. Traffic goes through the entry port only, from a bounded client at fixed concurrency.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.image.engine import Engine
from pipeline.release.state import State
from tests.integration.deploy.conftest import FIGURES, World, docker
from tests.integration.deploy.load import Load
from tests.support.registry import free_port
from tools import act
from tools.template import GIT, run

pytestmark = [pytest.mark.swarm, pytest.mark.docker, pytest.mark.integration, pytest.mark.slow]
CONCURRENCY = 4
RATE = 75  # requests per second per worker, at most: 300/s through the entry port


def post(
    world: World, path: str, body: dict[str, Any], *, port: int | None = None
) -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection("127.0.0.1", port or world.port, timeout=10)
    try:
        connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def predicts_the_golden_rows(world: World, *, port: int | None = None) -> None:
    golden = world.golden()
    rows = [[row["inputs"][f] for f in golden["features"]] for row in golden["rows"]]
    body = {"dataframe_split": {"columns": golden["features"], "data": rows}}
    status, answer = post(world, "/invocations", body, port=port)
    assert status == 200, answer
    assert answer["predictions"] == [row["label"] for row in golden["rows"]]


def derived(engine: Engine, world: World, name: str, *lines: str) -> str:
    """An image FROM D1 plus ``lines``, pushed; returns its digest."""
    tag = f"gmdeploy-{world.run_id}:{name}"
    dockerfile = "\n".join([f"FROM {world.refs['D1']}", *lines]).encode()
    engine.client.images.build(fileobj=io.BytesIO(dockerfile), tag=tag, rm=True)
    world.refs[name] = tag
    image_id = engine.client.images.get(tag).id
    repository = f"{world.registry.address}/{world.repository}"
    return engine.push(image_id, repository=repository, tags=[name])


def reconcile_under_load(world: World, what: str) -> tuple[Any, Any]:
    """`pipeline reconcile` while the bounded client sends through the entry port."""
    golden = world.golden()
    with Load(world.port, golden, concurrency=CONCURRENCY, rate=RATE, max_seconds=300) as load:
        time.sleep(1.0)  # traffic flows before the update starts
        done = world.pipeline("reconcile", "--env", "staging", check=False)
        time.sleep(1.0)  # ... and after it ended
    seconds = world.report()["seconds"]  # deploy + verify, without the command's start-up
    FIGURES.append(
        f"{what}: reconcile exit {done.code}, {seconds:.1f} s to apply and verify "
        f"({done.seconds:.1f} s for the command); {load.report.line()} at concurrency "
        f"{CONCURRENCY}, at most {RATE}/s each"
    )
    return done, load.report


def test_reconcile_serves_the_promoted_digest_through_the_entry_port(world: World) -> None:
    world.pipeline("push")
    built = json.loads((world.work / "build/image.json").read_text())
    world.digests["D1"], world.refs["D1"] = built["digest"], built["image"]
    world.pipeline("contract-test", "--image", built["image"])
    world.release()
    world.pipeline("promote", "--image", built["digest"], "--to", "staging")
    dry = world.pipeline("reconcile", "--env", "staging", "--dry-run")
    assert "create" in dry.output and "nothing applied" in dry.output
    assert not docker("service", "ls", "-q", "--filter", f"name={world.stack}_").stdout.strip()
    done = world.pipeline("reconcile", "--env", "staging")
    FIGURES.append(f"first reconcile (create, entry image built): {done.seconds:.1f} s")
    report = world.report()
    assert report["ok"] and report["applied"] and report["deploy_exit_code"] == 0
    assert set(world.running_tasks().values()) == {world.image("D1")}
    assert len(world.running_tasks()) == 2
    predicts_the_golden_rows(world)
    stack_file = world.work / "deploy/staging.stack.yaml"
    assert world.image("D1") in stack_file.read_text()
    assert (world.work / "deploy/staging.haproxy.cfg").is_file()
    status = json.loads(world.pipeline("status", "--env", "staging", "--json").stdout)
    assert status["live_digest"] == status["desired_digest"] == world.digests["D1"]
    assert status["replicas_ready"] == status["replicas_desired"] == 2
    assert status["in_sync"] and status["drift"] == []


def test_a_second_reconcile_changes_nothing(world: World) -> None:
    tasks = {name: world.running_tasks(name) for name in ("model", "entry")}
    stack_file = (world.work / "deploy/staging.stack.yaml").read_text()
    done = world.pipeline("reconcile", "--env", "staging")
    FIGURES.append(f"reconcile with nothing to do: {done.seconds:.1f} s")
    assert "in sync" in done.output and "nothing applied" in done.output
    assert {name: world.running_tasks(name) for name in ("model", "entry")} == tasks
    assert (world.work / "deploy/staging.stack.yaml").read_text() == stack_file


def test_watch_reverts_a_hand_change_and_reports_it(world: World) -> None:
    docker("service", "update", "--detach", "--replicas", "3", world.service("model"))
    drifted = world.pipeline("status", "--env", "staging", "--json", check=False)
    assert drifted.code == 1
    assert json.loads(drifted.stdout)["drift"] == [f"{world.service('model')}: replicas"]
    watcher = world.popen("reconcile", "--env", "staging", "--watch", "--interval", "1")
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            now = world.pipeline("status", "--env", "staging", "--json", check=False)
            if now.code == 0:
                break
            time.sleep(1)
    finally:
        watcher.terminate()
        output = watcher.communicate(timeout=30)[0]
    assert now.code == 0, f"drift not reverted:\n{output}"
    assert "drift:" in output and "changed by hand (replicas)" in output, output
    assert len(world.running_tasks()) == 2


def test_a_rolling_update_to_d2_under_load_loses_no_request(world: World, engine: Engine) -> None:
    world.digests["D2"] = derived(engine, world, "d2", "LABEL test.variant=d2")
    world.refs["D2"] = world.refs["d2"]
    world.attest_like_d1("D2")
    world.pipeline("promote", "--image", world.digests["D2"], "--to", "staging")
    entry_tasks = world.running_tasks("entry")
    done, load = reconcile_under_load(world, "rolling update D1 -> D2")
    assert done.code == 0, done.output
    assert load.sent >= 200, load.line()  # the client did run during the whole update
    assert load.failed == 0, load.line()
    assert set(world.running_tasks().values()) == {world.image("D2")}
    assert world.running_tasks("entry") == entry_tasks  # the entry was not touched
    assert world.report()["rows"][1]["state"] == "completed"


def test_rollback_then_reconcile_lands_on_the_previous_digest(world: World) -> None:
    world.pipeline("rollback", "--env", "staging")
    assert world.state()["image"]["digest"] == world.digests["D1"]
    done, load = reconcile_under_load(world, "rollback D2 -> D1 (pipeline rollback + reconcile)")
    assert done.code == 0, done.output
    assert load.failed == 0, load.line()
    assert set(world.running_tasks().values()) == {world.image("D1")}
    predicts_the_golden_rows(world)


def test_an_image_that_never_becomes_ready_is_rolled_back_and_reconcile_says_so(
    world: World, engine: Engine
) -> None:
    corrupt = (
        "USER root",
        "RUN echo corrupted >> /opt/model/model.pkl",
        "USER 10001:10001",
        "LABEL test.variant=never-ready",
    )
    world.digests["bad"] = derived(engine, world, "bad", *corrupt)
    # What a promotion would write (see the module docstring): D1's entry first in history.
    current = State.model_validate(world.state()).model_dump(mode="json", exclude_none=True)
    entry = {k: v for k, v in current.items() if k not in ("environment", "history")}
    bad = State.model_validate(
        {
            **current,
            "action": "promote",
            "image": {**current["image"], "digest": world.digests["bad"]},
            "history": [entry, *current["history"]],
        }
    )
    path = world.work / "deploy/staging.yaml"
    path.write_text(yaml.safe_dump(bad.model_dump(mode="json", exclude_none=True)))
    done, load = reconcile_under_load(world, "never-ready image (auto-rolled back)")
    assert done.code == 10, done.output
    assert "rollback_completed" in done.output and "task error" in done.output
    report = world.report()
    assert report["rolled_back"] and not report["ok"]
    model = next(r for r in report["rows"] if r["service"] == world.service("model"))
    assert model["state"] == "rollback_completed"
    code = report["deploy_exit_code"]
    FIGURES.append(f"docker stack deploy exit code of the update Swarm rolled back: {code}")
    # The canary for docker/cli#6752: when this fails, docker reports the rollback itself.
    assert code == 0, "docker/cli#6752 fixed? docker stack deploy now exits non-zero"
    assert load.failed == 0, load.line()
    assert set(world.running_tasks().values()) == {world.image("D1")}
    predicts_the_golden_rows(world)


def test_watch_backs_off_from_the_failed_digest_until_git_changes(world: World) -> None:
    tasks = world.running_tasks()
    watcher = world.popen("reconcile", "--env", "staging", "--watch", "--interval", "1")
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(watcher.stdout or []), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and sum("backing off" in ln for ln in lines) < 2:
            time.sleep(0.5)  # two passes that backed off
    finally:
        watcher.terminate()
        watcher.wait(timeout=30)
        reader.join(timeout=10)
    output = "".join(lines)
    assert "backing off" in output and world.digests["bad"] in output, output
    assert "docker stack deploy exited" not in output, output  # nothing was applied
    assert world.running_tasks() == tasks  # it did not try the failed digest again


def test_the_workflow_step_rolls_git_back_with_the_reason(world: World) -> None:
    reason = world.report()
    why = f"rollout of {reason['desired_digest']} rolled back by Swarm"
    world.pipeline("rollback", "--env", "staging", "--reason", why)
    state = world.state()
    assert state["action"] == "rollback" and state["image"]["digest"] == world.digests["D1"]
    assert state["reason"] == why
    assert state["history"][0]["image"]["digest"] == world.digests["bad"]
    tasks = world.running_tasks()
    done = world.pipeline("reconcile", "--env", "staging")
    assert "in sync" in done.output  # Swarm already runs D1: git and the cluster agree again
    assert world.running_tasks() == tasks
    predicts_the_golden_rows(world)


# Podman: one host, no orchestrator. The manifest `pipeline render podman` writes runs with
# `podman kube play` (Debian's Podman 4.3, runc, the ulimits of docs/deploy.md in a private
# containers.conf), pulling the promoted digest from the same registry.


@pytest.mark.podman
def test_podman_runs_the_single_host_manifest_and_serves_the_golden_rows(
    world: World, podman: str, tmp_path: Path
) -> None:
    topology = yaml.safe_load((world.work / "deploy/topology.yaml").read_text())
    port = free_port()
    topology["environments"]["staging"]["entry"] = {"port": port}  # not the Swarm entry's
    (tmp_path / "topology.yaml").write_text(yaml.safe_dump(topology))
    world.pipeline(
        "render", "podman", "--env", "staging",
        "--topology", str(tmp_path / "topology.yaml"), "--out", str(tmp_path),
    )  # fmt: skip
    manifest = tmp_path / "staging.yaml"
    digest = world.state()["image"]["digest"]
    assert digest in manifest.read_text()
    conf = tmp_path / "containers.conf"
    conf.write_text(
        '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]\n'
        '[engine]\nruntime = "runc"\n'
    )
    environ = {**os.environ, "CONTAINERS_CONF": str(conf)}

    def podman_run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [podman, *args], env=environ, capture_output=True, text=True, timeout=300
        )

    played = podman_run("kube", "play", "--tls-verify=false", str(manifest))
    try:
        assert played.returncode == 0, played.stderr
        deadline, ready = time.monotonic() + 90, False
        while time.monotonic() < deadline and not ready:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                connection.request("GET", "/v2/health/ready")
                ready = connection.getresponse().status == 200
                connection.close()
            except OSError:
                pass
            time.sleep(0.5)
        assert ready, podman_run("ps", "-a").stdout
        predicts_the_golden_rows(world, port=port)
    finally:
        podman_run("kube", "down", str(manifest))
        podman_run("rmi", "--force", f"{world.registry.address}/{world.repository}@{digest}")


# The deploy workflow (.github/workflows/deploy.yml -> scripts/deploy.sh), run for real with act
# on this machine against the same Swarm, registry and MLflow store: the repository gets a local
# bare `origin`, as in tests/e2e, and the job's commits are read back from it.

BRANCH = "main"


@pytest.fixture(scope="module")
def origin(world: World, template_root: Path) -> Path:
    if not act.ACT.is_file():
        pytest.fail(f"act is not installed at {act.ACT}: run `make install`")
    shutil.copytree(template_root / ".github", world.work / ".github", dirs_exist_ok=True)
    bare = world.work.parent / "origin.git"
    run(world.work.parent, "git", "init", "-q", "--bare", "-b", BRANCH, str(bare))
    run(world.work, "git", "branch", "-M", BRANCH)
    run(world.work, "git", "remote", "add", "origin", str(bare))
    commit_and_push(world, "workflows and the deploy state")
    return bare


def commit_and_push(world: World, message: str) -> None:
    run(world.work, *GIT, "add", "-A")
    run(world.work, *GIT, "commit", "-qm", message)
    run(world.work, "git", "push", "-q", "-u", "origin", BRANCH)


def act_deploy(world: World, name: str) -> act.ActRun:
    outcome = act.run(
        "workflow_dispatch",
        repo=world.work,
        variables={
            "REGISTRY": world.registry.address,
            "REGISTRY_INSECURE": "true",
            "IMAGE_REPOSITORY": world.repository,
            "MLFLOW_TRACKING_URI": f"sqlite:///{world.work / 'mlflow.db'}",
            "MLFLOW_ARTIFACTS_DIR": str(world.work / "mlartifacts"),
        },
        artifacts=world.work.parent / "act" / name,
        default_branch=BRANCH,
        workflow="deploy.yml",
        inputs={"environment": "staging"},
        extra=["-P", "self-hosted=-self-hosted"],
        timeout=900,
    )
    FIGURES.append(f"act deploy.yml ({name}): exit {outcome.returncode} in {outcome.seconds:.0f} s")
    return outcome


def origin_show(origin: Path, what: str) -> str:
    return run(origin, "git", "show", f"{BRANCH}:{what}").stdout


@pytest.mark.e2e
def test_the_deploy_workflow_rolls_out_a_promotion_and_commits_the_rendered_stack(
    world: World, origin: Path
) -> None:
    world.pipeline("promote", "--image", world.digests["D2"], "--to", "staging")
    commit_and_push(world, "promote D2 to staging")
    outcome = act_deploy(world, "deploy-d2")
    assert outcome.returncode == 0, outcome.output[-6000:]
    assert set(world.running_tasks().values()) == {world.image("D2")}
    log = run(origin, "git", "log", "-1", "--format=%s", BRANCH).stdout.strip()
    assert log == f"deploy(staging): stack rendered for {world.digests['D2']}", log
    assert world.image("D2") in origin_show(origin, "deploy/staging.stack.yaml")
    summary = "\n".join(outcome.summaries().values())
    assert "staging" in summary and "in sync" in summary, summary


@pytest.mark.e2e
def test_the_deploy_workflow_rolls_git_back_when_swarm_rolled_the_update_back(
    world: World, origin: Path
) -> None:
    run(world.work, "git", "pull", "-q", "--ff-only", "origin", BRANCH)
    current = State.model_validate(world.state()).model_dump(mode="json", exclude_none=True)
    entry = {k: v for k, v in current.items() if k not in ("environment", "history")}
    bad = {**current, "action": "promote", "history": [entry, *current["history"]]}
    bad["image"] = {**current["image"], "digest": world.digests["bad"]}
    (world.work / "deploy/staging.yaml").write_text(yaml.safe_dump(bad))
    commit_and_push(world, "a promotion of an image that never becomes ready")
    outcome = act_deploy(world, "deploy-bad")
    assert outcome.returncode != 0  # the job fails: the rollout did
    assert "rolled back by Swarm" in outcome.output
    assert set(world.running_tasks().values()) == {world.image("D2")}
    state = yaml.safe_load(origin_show(origin, "deploy/staging.yaml"))
    assert state["action"] == "rollback" and state["image"]["digest"] == world.digests["D2"]
    assert world.digests["bad"] in state["reason"] and "rollback_completed" in state["reason"]
    log = run(origin, "git", "log", "-1", "--format=%s", BRANCH).stdout.strip()
    assert log == "deploy(staging): roll back after a failed rollout", log
    run(world.work, "git", "pull", "-q", "--ff-only", "origin", BRANCH)


# Autoscaling (`pipeline autoscale`, last: it changes the topology under the tests above). The
# staging topology gains an `autoscale:` section with short windows; a bounded load step through
# the entry port must take the model from 1 to 3 replicas, HAProxy must spread the requests over
# them (its per-server counters), reconcile must leave the count alone, and after the load the
# count must walk back to 1, one step per stabilisation window.

AUTOSCALE = {
    "min_replicas": 1,
    "max_replicas": 3,
    "target_rps_per_replica": 25,  # the load step below sends up to 160/s: 3 replicas' worth
    "window_s": 3,
    "scale_down_stabilisation_s": 8,
    "interval_s": 1,
}
SCALE_UP_WITHIN = 30.0  # s from the load step to 3 running tasks (measured: see FIGURES)
SCALE_DOWN_WITHIN = 45.0  # s from the end of the load to 1 replica (two windows of 8 s + reads)


def model_replicas(world: World) -> int:
    spec = docker(
        "service", "inspect", "--format", "{{.Spec.Mode.Replicated.Replicas}}",
        world.service("model"),
    )  # fmt: skip
    return int(spec.stdout.strip())


def server_requests(world: World) -> dict[str, int]:
    """HAProxy's per-server request counters of the model backend (its stats page, CSV)."""
    from pipeline.deploy.haproxy_runtime import parse_stat

    connection = http.client.HTTPConnection("127.0.0.1", world.stats_port, timeout=5)
    try:
        connection.request("GET", "/stats;csv")
        counters = parse_stat(connection.getresponse().read().decode(), "model")
    finally:
        connection.close()
    assert counters is not None, "the entry's stats page has no model backend"
    return counters.servers


def wait_for(what: str, check: Any, *, within: float, poll: float = 0.5) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < within, f"{what}: not within {within:g} s"
        time.sleep(poll)
    return time.monotonic() - started


def test_autoscale_follows_a_load_step_up_and_back_down_and_reconcile_keeps_its_count(
    world: World,
) -> None:
    path = world.work / "deploy/topology.yaml"
    topology = yaml.safe_load(path.read_text())
    topology["environments"]["staging"].update(replicas=1, autoscale=AUTOSCALE)
    path.write_text(yaml.safe_dump(topology, sort_keys=False))
    docker("service", "scale", "--detach", f"{world.service('model')}=1")
    world.pipeline("reconcile", "--env", "staging")  # the entry gets slots for 3; 1 replica
    wait_for("one model task", lambda: len(world.running_tasks()) == 1, within=60)
    log = world.work / "build/deploy/staging.autoscale.jsonl"
    log.unlink(missing_ok=True)
    scaler = world.popen("autoscale", "--env", "staging")
    try:
        wait_for(
            "a first rate", lambda: log.is_file() and '"rate": 0' in log.read_text(), within=30
        )
        golden = world.golden()
        with Load(world.port, golden, concurrency=4, rate=40, max_seconds=150) as load:
            up = wait_for("3 running tasks", lambda: len(world.running_tasks()) == 3,
                          within=SCALE_UP_WITHIN)  # fmt: skip
            # HAProxy finds the new tasks through Swarm DNS and checks them: then all 3 serve
            time.sleep(5)
            before = server_requests(world)
            time.sleep(6)
            after = server_requests(world)
            # reconcile, with the autoscaler's count live, changes nothing
            again = world.pipeline("reconcile", "--env", "staging")
            assert "in sync" in again.output, again.output
            assert model_replicas(world) == 3
        assert load.report.failed == 0, load.report.line()
        down = wait_for("back to 1 replica", lambda: model_replicas(world) == 1,
                        within=SCALE_DOWN_WITHIN)  # fmt: skip
    finally:
        scaler.terminate()
        output = scaler.communicate(timeout=30)[0]
    decisions = [json.loads(line) for line in log.read_text().splitlines()]
    moves = [(d["current"], d["desired"]) for d in decisions if d.get("action") in ("up", "down")]
    # up as the windowed rate climbs (one or more steps, never down on the way), then 3 -> 2 -> 1
    ups = moves[: moves.index((3, 2))] if (3, 2) in moves else moves
    assert ups and all(a < b for a, b in ups) and ups[-1][1] == 3, output
    assert moves[len(ups) :] == [(3, 2), (2, 1)], output
    steps = [d for d in decisions if d.get("action") == "down"]
    gap = time.mktime(time.strptime(steps[-1]["at"][:19], "%Y-%m-%dT%H:%M:%S")) - time.mktime(
        time.strptime(steps[-2]["at"][:19], "%Y-%m-%dT%H:%M:%S")
    )
    assert gap >= AUTOSCALE["scale_down_stabilisation_s"] - 1, steps  # one step per window
    served = {name: after[name] - before.get(name, 0) for name in after}
    busy = {name: n for name, n in served.items() if n > 0}
    total = sum(served.values())
    shares = ", ".join(f"{name} {n / total:.0%}" for name, n in sorted(busy.items()))
    FIGURES.append(
        f"autoscale 1 -> 3 in {up:.1f} s after a load step ({load.report.line()}); "
        f"per-server share over 6 s at 3 replicas: {shares}; back to 1 in {down:.1f} s "
        f"after the load; steps down {gap:.1f} s apart"
    )
    assert len(busy) >= 3 and all(n >= total * 0.1 for n in busy.values()), served
    assert (world.work / "build/deploy/staging.autoscale.prom").is_file()
    final = world.pipeline("reconcile", "--env", "staging")
    assert "in sync" in final.output, final.output
    assert len(world.running_tasks()) == 1
