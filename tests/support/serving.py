"""Serving test helpers: a model directory built exactly as docs/model-card.md describes, an
in-process ASGI client, and a real server process on a free port.

A scikit-learn Pipeline (StandardScaler + LogisticRegression) trained on the breast-cancer data
that ships inside scikit-learn, fitted on a DataFrame as the train stage fits it, written as
``models/model.pkl``, ``models/model.onnx``, ``models/model.json``, ``models/golden.json`` and
``metrics/holdout.json`` under the given root.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.ml.onnx_export import check_parity, to_onnx
from serving.app import ServingApp, create_app
from serving.settings import Settings
from tests.contract import clients

REPO = Path(__file__).resolve().parents[2]

MODEL_NAME = "breast-cancer-classifier"
MODEL_VERSION = "3"


@dataclass(frozen=True)
class ModelDir:
    root: Path
    models: Path
    features: list[str]
    classes: list[int]
    golden: list[dict[str, Any]]
    card: dict[str, Any]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_model_dir(root: Path, *, onnx: bool = True, golden_rows: int = 60) -> ModelDir:
    data = load_breast_cancer(as_frame=True)
    x, y = data.data, data.target
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=42, stratify=y
    )
    model = Pipeline(
        [("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=1000, C=1.0))]
    ).fit(x_train, y_train)
    models = root / "models"
    metrics = root / "metrics"
    models.mkdir(parents=True, exist_ok=True)
    metrics.mkdir(parents=True, exist_ok=True)
    (models / "model.pkl").write_bytes(pickle.dumps(model, protocol=5))
    features = [str(c) for c in x.columns]
    test = x_test.to_numpy(dtype=np.float64)
    frame = x_test.iloc[:golden_rows]
    onnx_entry = None
    graph = to_onnx(model, n_features=len(features)) if onnx else None
    if graph is not None:
        parity = check_parity(model, graph, x_test)
        assert parity.ok, parity
        (models / "model.onnx").write_bytes(graph)
        onnx_entry = {
            "file": "model.onnx",
            "sha256": sha256(models / "model.onnx"),
            "max_abs_diff": parity.max_abs_diff,
            "tolerance": parity.tolerance,
        }
    classes = [int(c) for c in model.classes_]
    card = {
        "model_name": MODEL_NAME,
        "model_version": MODEL_VERSION,
        "run_id": "0f3c9d2e5b7a4c1d8e6f0a2b4c6d8e0f",
        "model_file": "model.pkl",
        "sha256": sha256(models / "model.pkl"),
        "onnx": onnx_entry,
        "model_type": "logistic_regression",
        "target": "target",
        "features": [
            {
                "name": name,
                "dtype": "float64",
                "kind": "numeric",
                "nullable": False,
                "categories": None,
            }
            for name in features
        ],
        "classes": classes,
        "git_commit": "unknown",
        "data_hash": "d41d8cd98f00b204e9800998ecf8427e.dir",
        "library_versions": {"scikit-learn": "1.9.1", "python": "3.11.7"},
        "created": "2026-11-24T21:40:00Z",
    }
    (models / "model.json").write_text(json.dumps(card, indent=2))
    rows = test[:golden_rows]
    labels = model.predict(frame)
    probabilities = model.predict_proba(frame)
    golden = [
        {
            "inputs": dict(zip(features, map(float, row), strict=True)),
            "label": int(label),
            "probabilities": [float(p) for p in proba],
        }
        for row, label, proba in zip(rows, labels, probabilities, strict=True)
    ]
    (models / "golden.json").write_text(
        json.dumps({"features": features, "classes": classes, "rows": golden})
    )
    holdout = {
        "accuracy": float(accuracy_score(y_test, model.predict(x_test))),
        "roc_auc": float(roc_auc_score(y_test, model.predict_proba(x_test)[:, 1])),
    }
    (metrics / "holdout.json").write_text(json.dumps(holdout))
    return ModelDir(
        root=root, models=models, features=features, classes=classes, golden=golden, card=card
    )


class Client:
    """Synchronous facade over httpx's ASGI transport, one event loop per client."""

    def __init__(self, app: ServingApp) -> None:
        self.app = app
        self._loop = asyncio.new_event_loop()
        transport = httpx.ASGITransport(app=app)
        self._client = httpx.AsyncClient(transport=transport, base_url="http://serving.test")

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self._loop.run_until_complete(self._client.request(method, path, **kwargs))

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def close(self) -> None:
        self._loop.run_until_complete(self._client.aclose())
        self._loop.close()


def ready_client(model_dir: Path, **settings: Any) -> Client:
    app = create_app(model_dir=model_dir, settings=Settings(**settings))
    app.start()
    assert app.state.wait(30), app.state.error
    return Client(app)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    started: float
    stderr: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 30.0) -> float:
        """Seconds from process start to the first 200 from /v2/health/ready."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.logs()
            try:
                if clients.get(self.url + "/v2/health/ready", timeout=1).status_code == 200:
                    return time.monotonic() - self.started
            except httpx.TransportError:
                pass
            time.sleep(0.02)
        raise AssertionError(f"server not ready in {timeout} s:\n{self.logs()}")

    def logs(self) -> str:
        return self.stderr.read_text(errors="replace")

    def access(
        self, until: Callable[[list[dict[str, Any]]], bool] = bool, timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        """The access-log lines written so far, waiting (up to ``timeout``) until ``until``
        holds for them: the server writes them in batches, at most
        serving.logs.ACCESS_FLUSH_S after a request."""
        deadline = time.monotonic() + timeout
        while True:
            lines = [
                json.loads(line) for line in self.logs().splitlines() if '"serving.access"' in line
            ]
            if until(lines) or time.monotonic() > deadline:
                return lines
            time.sleep(0.02)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


def start_server(model_dir: Path, tmp_path: Path, **env: str) -> Server:
    port = free_port()
    stderr = tmp_path / f"server-{port}.log"
    environ = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "SERVING_HOST": "127.0.0.1",
        "SERVING_PORT": str(port),
        **env,
    }
    with stderr.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "serving", str(model_dir)],
            env=environ,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Server(process=process, port=port, started=time.monotonic(), stderr=stderr)


def build_typed_model_dir(
    root: Path, *, task: str = "classification", model: str = "logistic_regression"
) -> ModelDir:
    """A model directory from the Palmer penguins (two categorical columns, missing values),
    built by the pipeline's own code as the train and validate stages build it: species from
    the rest (classification, string labels) or body mass from the rest (regression)."""
    from palmerpenguins import load_penguins

    from pipeline.config import TrainParams
    from pipeline.ml import data, evaluation, training

    frame = load_penguins().drop(columns=["year"])
    target = "body_mass_g" if task == "regression" else "species"
    frame = frame[frame[target].notna()].reset_index(drop=True)
    for column in ("island", "sex", "species"):
        frame[column] = data.as_text(frame[column])
    x, y = frame.drop(columns=[target]), frame[target]
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=42)
    columns = training.columns_of(x_train)
    params = TrainParams(model=model, experiment="e", registered_model_name="typed")
    fitted = training.fit(
        training.build(params, seed=42, task=task, columns=columns), x_train, y_train, task=task
    )
    features = training.card_features(fitted, x_train)
    models, metrics = root / "models", root / "metrics"
    models.mkdir(parents=True, exist_ok=True)
    metrics.mkdir(parents=True, exist_ok=True)
    (models / "model.pkl").write_bytes(pickle.dumps(fitted, protocol=5))
    strict = [f.name for f in features if not f.nullable]
    servable = x_test[x_test[strict].notna().all(axis=1)].reset_index(drop=True)
    graph = to_onnx(fitted, features=features, task=task)
    assert graph is not None
    parity = check_parity(fitted, graph, servable, features=features, task=task)
    assert parity.ok, parity
    (models / "model.onnx").write_bytes(graph)
    golden = evaluation.golden_set(fitted, x_test, rows=30, schema=features, task=task)
    card = {
        "model_name": f"penguins-{task}",
        "model_version": "1",
        "run_id": "1f3c9d2e5b7a4c1d8e6f0a2b4c6d8e0f",
        "model_file": "model.pkl",
        "sha256": sha256(models / "model.pkl"),
        "onnx": {
            "file": "model.onnx",
            "sha256": sha256(models / "model.onnx"),
            "max_abs_diff": parity.max_abs_diff,
            "tolerance": parity.tolerance,
        },
        "model_type": model,
        "target": target,
        "features": [
            {**f.__dict__, "categories": None if f.categories is None else list(f.categories)}
            for f in features
        ],
        "classes": [] if task == "regression" else [str(c) for c in fitted.classes_],
        "git_commit": "unknown",
        "data_hash": "d41d8cd98f00b204e9800998ecf8427e.dir",
        "library_versions": {"scikit-learn": "1.9.1", "python": "3.11.7"},
        "created": "2026-11-29T12:00:00Z",
        "task": task,
    }
    (models / "model.json").write_text(json.dumps(card, indent=2))
    rows = [
        {"inputs": r.inputs, "label": r.label, "probabilities": list(r.probabilities)}
        for r in golden.rows
    ]
    (models / "golden.json").write_text(
        json.dumps({"features": list(golden.features), "classes": card["classes"], "rows": rows})
    )
    scores = evaluation.holdout_metrics(fitted, x_test, y_test, task=task)
    (metrics / "holdout.json").write_text(json.dumps(scores))
    return ModelDir(
        root=root,
        models=models,
        features=[f.name for f in features],
        classes=card["classes"],
        golden=rows,
        card=card,
    )
