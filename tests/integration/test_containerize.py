"""The `containerize` stage against a real Docker engine, on a temp copy of the template.

The copy runs the real `dvc repro` (prepare -> train -> validate -> containerize). Its images get
a name of their own (`image.name`), removed at the end; the build cache is the engine's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.image.engine import Engine
from tools.template import clone as copy
from tools.template import copy_template, dvc, edit_params, run

pytestmark = [pytest.mark.docker, pytest.mark.integration, pytest.mark.slow]

RUN_ID = uuid.uuid4().hex[:8]
IMAGE_NAME = f"test-containerize-{RUN_ID}"
TEST_BASE = f"local/test-base-{RUN_ID}:3.11"
OCI = ("title", "revision", "version", "created")
NOT_SERVED = ("dvc", "great_expectations", "mlflow", "pandas", "pydantic", "pip", "setuptools")
ML = {  # label -> model.json key
    "ml.model.name": "model_name",
    "ml.model.version": "model_version",
    "ml.model.sha256": "sha256",
    "ml.mlflow.run_id": "run_id",
    "ml.dvc.data_hash": "data_hash",
}


def stage(cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(cwd, sys.executable, "-m", "pipeline.stages.containerize", check=check)


def set_image_params(work: Path, **values: str) -> None:
    edit_params(work, "image", **values)


def image_json(work: Path) -> dict[str, Any]:
    return dict(json.loads((work / "build/image.json").read_text()))


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    engine = Engine.connect()  # no engine: ImageError saying to run `make docker`
    yield engine
    client, base = engine.client, engine.image(TEST_BASE)
    for tag in (t for image in client.images.list() for t in image.tags):
        if tag.startswith(IMAGE_NAME):
            client.images.remove(tag)  # with its untagged parents, unless shared
    if base is not None:  # the builder stage's images sit on the test base too
        for image in client.images.list(filters={"dangling": True}):
            if image.attrs["RootFS"]["Layers"][:1] == base.layers[:1]:
                client.images.remove(image.id)
        client.images.remove(TEST_BASE)


@pytest.fixture(scope="module")
def project(
    template_root: Path, tmp_path_factory: pytest.TempPathFactory, engine: Engine
) -> tuple[Path, float]:
    work = copy_template(template_root, tmp_path_factory.mktemp("containerize") / "project")
    set_image_params(work, name=IMAGE_NAME)
    started = time.monotonic()
    dvc(work, "repro")
    return work, time.monotonic() - started


def clone(project: tuple[Path, float], tmp_path: Path) -> Path:
    return copy(project[0], tmp_path / "project")


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def test_repro_ends_with_a_labelled_non_root_image_that_turns_healthy_and_serves_its_labels(
    project: tuple[Path, float], engine: Engine
) -> None:
    work, seconds = project
    built = image_json(work)
    print(f"dvc repro to a smoke-checked image: {seconds:.1f} s; image.json: {built}")
    card = json.loads((work / "models/model.json").read_text())
    holdout = json.loads((work / "metrics/holdout.json").read_text())
    info = engine.image(built["image"])
    assert info is not None and info.id == built["id"]
    labels = info.labels
    assert labels == built["labels"]
    assert all(f"org.opencontainers.image.{k}" in labels for k in OCI)
    # the test repository has no remote: no source label rather than a local path
    assert "org.opencontainers.image.source" not in labels
    head = run(work, "git", "rev-parse", "HEAD").stdout.strip()
    assert labels["org.opencontainers.image.revision"] in (head, f"{head}-dirty")
    assert labels["org.opencontainers.image.version"] == card["model_version"]
    assert {label: labels[label] for label in ML} == {k: str(card[v]) for k, v in ML.items()}
    assert card["data_hash"] not in ("", "unknown")
    assert {k: float(labels[f"ml.metrics.holdout.{k}"]) for k in holdout} == holdout
    assert labels["ml.serving.runtime"] == ("onnx" if card["onnx"] else "sklearn")
    assert info.user and info.user.split(":")[0] not in ("0", "root")
    config = engine.client.api.inspect_image(info.id)["Config"]
    assert config["Healthcheck"]["Test"][0] == "CMD" and "/v2/health/ready" in str(config)
    assert "8080/tcp" in config["ExposedPorts"] and config["StopSignal"] == "SIGTERM"
    assert config["Entrypoint"][:3] == ["/opt/venv/bin/python", "-m", "serving"]
    assert built["size_mb"] <= built["max_size_mb"] and built["smoke"]["label"] in card["classes"]
    # The template's model converts to ONNX: its image is the onnxruntime-only environment.
    assert card["onnx"] and labels["ml.serving.runtime"] == built["smoke"]["runtime"] == "onnx"
    assert built["smoke"]["libraries"] == {"onnxruntime": True, "scipy": False, "sklearn": False}

    container = engine.client.containers.run(
        built["image"], detach=True, ports={"8080/tcp": ("127.0.0.1", None)}
    )
    try:
        started, status = time.monotonic(), "starting"
        while status != "healthy" and time.monotonic() - started < 60:
            time.sleep(0.5)
            container.reload()
            status = container.attrs["State"]["Health"]["Status"]
        print(f"health check turned {status} after {time.monotonic() - started:.1f} s")
        assert status == "healthy", container.logs().decode()[-3000:]
        assert container.exec_run(["id", "-u"]).output.decode().strip() == "10001"
        probe = "import importlib.util as u; print([m for m in SKIP if u.find_spec(m)])"
        found = container.exec_run(["python", "-c", f"SKIP = {NOT_SERVED!r}; {probe}"])
        assert found.output.decode().strip() == "[]"  # only what serving needs
        assert container.exec_run(["sh", "-c", "command -v gcc cc pip"]).exit_code != 0
        port = container.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"]
        metadata = get(f"http://127.0.0.1:{port}/metadata")
        logs = container.logs().decode()
    finally:
        container.remove(force=True)
    # Every line a log shipper reads is JSON: onnxruntime's own (telemetry) warning included.
    lines = [line for line in logs.splitlines() if line]
    assert all(line.startswith("{") and json.loads(line) for line in lines), logs[-2000:]
    assert "ORT_DISABLE_TELEMETRY=1" in config["Env"]
    assert metadata["model_name"] == labels["ml.model.name"]
    assert metadata["model_version"] == labels["ml.model.version"]
    assert metadata["run_id"] == labels["ml.mlflow.run_id"]
    assert metadata["sha256"] == labels["ml.model.sha256"]
    assert metadata["data_hash"] == labels["ml.dvc.data_hash"]
    assert metadata["runtime"]["name"] == labels["ml.serving.runtime"]
    assert metadata["holdout_metrics"] == {
        k[len("ml.metrics.holdout.") :]: float(v)
        for k, v in labels.items()
        if k.startswith("ml.metrics.holdout.")
    }


def test_unchanged_inputs_skip_the_build(project: tuple[Path, float]) -> None:
    work = project[0]
    before = image_json(work)
    started = time.monotonic()
    done = dvc(work, "repro", "--force", "--single-item", "containerize")
    elapsed = time.monotonic() - started
    after = image_json(work)
    print(f"forced containerize with unchanged inputs: {elapsed:.1f} s")
    assert "build skipped" in done.stdout + done.stderr
    assert after["build"] is None
    assert after["id"] == before["id"] and after["image"] == before["image"]


def test_a_model_without_onnx_gets_the_scikit_learn_image_which_keeps_both_runtimes(
    project: tuple[Path, float], tmp_path: Path, engine: Engine
) -> None:
    work = clone(project, tmp_path)
    lean = image_json(work)
    card_file = work / "models/model.json"
    card = json.loads(card_file.read_text())
    (work / "models" / card["onnx"]["file"]).unlink()
    card["onnx"] = None  # as the train stage writes it when skl2onnx cannot convert the model
    card_file.write_text(json.dumps(card, indent=2) + "\n")
    done = stage(work)
    built = image_json(work)
    said = " ".join((done.stdout + done.stderr).split())  # the log wraps long lines
    assert "sklearn runtime, requirements/serving.lock" in said
    assert built["image"] != lean["image"] and built["build"] is not None
    assert built["labels"]["ml.serving.runtime"] == built["smoke"]["runtime"] == "sklearn"
    assert built["smoke"]["libraries"] == {"onnxruntime": True, "scipy": True, "sklearn": True}
    info = engine.image(built["image"])
    assert info is not None
    config = engine.client.api.inspect_image(info.id)["Config"]
    assert "SERVING_RUNTIME=sklearn" in config["Env"]
    print(f"image sizes: ONNX environment {lean['size_mb']} MB, scikit-learn {built['size_mb']} MB")
    assert built["size_bytes"] - lean["size_bytes"] > 50e6  # scikit-learn and scipy


def test_a_code_only_change_rebuilds_only_the_layers_above_the_code(
    project: tuple[Path, float], tmp_path: Path, engine: Engine
) -> None:
    work = clone(project, tmp_path)
    before = image_json(work)
    # The HTTP layer: train depends on serving/runtime.py and errors.py (the ONNX parity check
    # runs the graph as serving does), so a change there re-checks the model as it should.
    with (work / "serving/handlers.py").open("a") as handle:
        handle.write("\n# a code-only change\n")
    done = dvc(work, "repro")
    stages = ("prepare", "train", "validate", "containerize")
    assert [s for s in stages if f"Running stage '{s}'" in done.stdout] == ["containerize"]
    after = image_json(work)
    assert after["image"] != before["image"]
    old, new = engine.image(before["image"]), engine.image(after["image"])
    assert old is not None and new is not None and len(old.layers) == len(new.layers)
    shared = 0
    while shared < len(new.layers) and new.layers[shared] == old.layers[shared]:
        shared += 1
    # The top three layers are code, model, golden/holdout: everything below must be reused.
    assert shared == len(new.layers) - 3, (shared, len(new.layers))
    build = after["build"]
    print(
        f"code-only rebuild: {build['seconds']:.1f} s, {len(build['cached'])} of {build['steps']} "
        f"steps from the cache; {shared} of {len(new.layers)} layers reused"
    )
    # The builder's step count depends on what its cache held before (the runtime stage may be
    # cached from an earlier build or not): the layers above are the promise, steps are reported.


def test_a_broken_model_fails_the_smoke_check_and_shows_the_container_log(
    project: tuple[Path, float], tmp_path: Path, engine: Engine
) -> None:
    work = clone(project, tmp_path)
    with (work / "models/model.pkl").open("ab") as handle:
        handle.write(b"\0")
    done = stage(work, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "smoke check of" in output and "container log" in output
    assert "sha256 of /opt/model/model.pkl" in output  # the container's own words
    assert "Traceback" not in output
    ref = output.split("smoke check of ")[1].split()[0]
    assert ref.startswith(IMAGE_NAME) and engine.image(ref) is None  # a failed image loses its tag


def test_with_the_base_absent_the_stage_says_so_and_make_base_image_builds_it(
    project: tuple[Path, float], tmp_path: Path, engine: Engine
) -> None:
    work = clone(project, tmp_path)
    fallback = TEST_BASE
    set_image_params(work, base=f"local/absent-{RUN_ID}:3.11", fallback_base=fallback)
    done = stage(work, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 1 and "Traceback" not in output
    assert "neither present nor pullable" in output and "make base-image" in output
    venv = Path(sys.executable).parent.parent
    started = time.monotonic()
    made = run(work, "make", "-o", "install", f"VENV={venv}", "base-image")
    print(f"make base-image: {time.monotonic() - started:.0f} s\n{made.stdout}{made.stderr}")
    assert engine.image(fallback) is not None
    done = stage(work)
    assert f"using the air-gapped fallback {fallback}" in done.stdout + done.stderr
    base = engine.image(fallback)
    assert base is not None
    assert image_json(work)["base"] == {"ref": fallback, "id": base.id, "fallback": True}


def test_contract_test_passes_against_the_built_image_and_writes_the_report(
    project: tuple[Path, float], tmp_path: Path
) -> None:
    work = clone(project, tmp_path)
    started = time.monotonic()
    done = run(work, str(Path(sys.executable).parent / "pipeline"), "contract-test")
    print(f"contract-test: {time.monotonic() - started:.1f} s\n{done.stdout[-600:]}")
    report = json.loads((work / "build/contract-report.json").read_text())
    built = image_json(work)
    assert report["verdict"] == "pass" and report["failed"] == [] and report["error"] is None
    assert report["image"]["id"] == built["id"] and report["image"]["ref"] == built["image"]
    assert (
        report["model"]["sha256"] == json.loads((work / "models/model.json").read_text())["sha256"]
    )
    assert report["fuzz_cases"] >= 500
    assert set(report["checks"]) == {
        "health_and_identity", "golden_parity", "error_contract", "fuzz", "latency",
        "typed_columns", "hostile",
    }  # fmt: skip
    assert report["hostile"]["passed"] and report["hostile"]["cases"]
    assert all(c.get("failed", 0) == 0 for c in report["checks"].values())
    assert 0 < report["time_to_ready_s"] <= 10 and report["latency_ms"]["p95"] > 0
    assert (work / "build/contract-junit.xml").is_file()
    assert "ready on onnx runtime" in (work / "build/contract-container.log").read_text()


def test_contract_test_fails_an_image_whose_model_file_was_swapped(
    project: tuple[Path, float], tmp_path: Path, engine: Engine
) -> None:
    """The labels still promise the validated model; the file inside is another one."""
    work = clone(project, tmp_path)
    good = image_json(work)["image"]
    other = tmp_path / "other"
    other.mkdir()
    from sklearn.datasets import load_breast_cancer
    from sklearn.tree import DecisionTreeClassifier

    x, y = load_breast_cancer(as_frame=True, return_X_y=True)
    (other / "model.pkl").write_bytes(
        __import__("pickle").dumps(DecisionTreeClassifier(max_depth=1).fit(x, y), protocol=5)
    )
    (other / "Dockerfile").write_text(f"FROM {good}\nCOPY model.pkl /opt/model/model.pkl\n")
    swapped = f"{IMAGE_NAME}:swapped"
    engine.client.images.build(path=str(other), tag=swapped, rm=True)
    done = run(
        work, str(Path(sys.executable).parent / "pipeline"), "contract-test", "--image", swapped,
        check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 7 and "Traceback" not in output
    report = json.loads((work / "build/contract-report.json").read_text())
    assert report["verdict"] == "fail"
    assert report["error"].startswith("readiness: the model was refused: sha256 of")
    assert "sha256" in (work / "build/contract-container.log").read_text()


# Podman as the engine: CONTAINER_ENGINE=podman makes the stage and `pipeline contract-test` use
# the Podman socket (the engine starts its API service when none answers). Podman keeps its own
# images, so the base the Docker build used is moved across (`docker save | podman load`); the
# project, model and wheels are the Docker test's, so no second `dvc repro`.


@pytest.mark.podman
def test_with_container_engine_podman_the_stage_builds_and_smoke_checks_and_the_contract_passes(
    project: tuple[Path, float],
    tmp_path: Path,
    podman: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipeline.image.engine import podman_socket

    work = clone(project, tmp_path)
    on_docker = image_json(work)
    base = on_docker["base"]["ref"]

    def podman_run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [podman, *args], capture_output=True, text=True, timeout=300, check=check
        )

    before = set(podman_run("images", "--all", "--quiet", "--no-trunc").stdout.split())
    pid_file = podman_socket().parent.parent / "pipeline-podman" / "service.pid"
    pid_file.unlink(missing_ok=True)  # set again only if the engine starts the service
    monkeypatch.setenv("CONTAINER_ENGINE", "podman")
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    try:
        if podman_run("image", "exists", base, check=False).returncode != 0:
            saved = subprocess.run(["docker", "save", base], capture_output=True, check=True)
            loaded = subprocess.run(
                [podman, "load"], input=saved.stdout, capture_output=True, check=True
            )
            assert b"Loaded image" in loaded.stdout
        started = time.monotonic()
        done = stage(work)
        built, seconds = image_json(work), time.monotonic() - started
        said = " ".join((done.stdout + done.stderr).split())
        assert "container engine: Podman" in said
        build = built["build"]
        print(
            f"containerize on Podman: {seconds:.1f} s (build {build['seconds']:.1f} s, "
            f"{len(build['cached'])} of {build['steps']} steps cached); on Docker the whole "
            f"repro took {project[1]:.1f} s"
        )
        # the same content hash (model, code, lock, Dockerfile, base id): the same name
        assert built["image"] == on_docker["image"] and build is not None and build["steps"] > 0
        assert built["base"] == on_docker["base"]
        assert built["labels"]["ml.model.sha256"] == on_docker["labels"]["ml.model.sha256"]
        assert built["smoke"]["runtime"] == "onnx"
        assert built["smoke"]["label"] == on_docker["smoke"]["label"]  # the golden row's class
        lean = {"onnxruntime": True, "scipy": False, "sklearn": False}
        assert built["smoke"]["libraries"] == lean
        inspected = json.loads(podman_run("image", "inspect", built["id"]).stdout)[0]
        assert inspected["Config"]["User"].split(":")[0] == "10001"
        assert "/v2/health/ready" in json.dumps(inspected)  # the healthcheck; the API shows none

        started = time.monotonic()
        done = run(work, str(Path(sys.executable).parent / "pipeline"), "contract-test")
        print(f"contract-test on Podman: {time.monotonic() - started:.1f} s")
        report = json.loads((work / "build/contract-report.json").read_text())
        assert report["verdict"] == "pass" and report["failed"] == [] and report["error"] is None
        assert report["tools"]["container engine"].startswith("Podman 4")
        assert report["image"]["id"] == built["id"] and report["fuzz_cases"] >= 500
        assert report["hostile"]["passed"] and report["hostile"]["cases"]
        assert all(c.get("failed", 0) == 0 for c in report["checks"].values())
        assert "ready on onnx runtime" in (work / "build/contract-container.log").read_text()
    finally:
        monkeypatch.delenv("CONTAINER_ENGINE")
        after = podman_run("images", "--all", "--quiet", "--no-trunc").stdout.split()
        made = [image for image in after if image not in before]
        if made:  # this test's images only: the loaded base, the build's layers, the model's
            podman_run("rmi", "--force", *made, check=False)
        if pid_file.is_file():  # the engine started the service for this test: stop it
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
            pid_file.unlink()
