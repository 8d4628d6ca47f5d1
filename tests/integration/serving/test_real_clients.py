"""Clients that others wrote, unchanged, against the real server process.

- MLflow's own scoring-server client (`mlflow.pyfunc.scoring_server.client`), pointed at our URL;
- NVIDIA's Triton HTTP client (`tritonclient.http`), which speaks the Open Inference Protocol
  that KServe's V2 REST API also defines (binary tensor input, as it sends by default).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tritonclient.http as triton

from tests.support.serving import Server

pytestmark = pytest.mark.integration


@pytest.fixture
def ready(server: Server) -> Iterator[Server]:
    server.wait_ready()
    yield server


def _frame(model_dir: Any) -> pd.DataFrame:
    return pd.DataFrame([g["inputs"] for g in model_dir.golden])[model_dir.features]


def test_mlflows_scoring_client_gets_the_golden_labels(ready: Server, model_dir: Any) -> None:
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    client = ScoringServerClient("127.0.0.1", ready.port)
    client.wait_server_ready(timeout=10)
    answer = client.invoke(_frame(model_dir))
    labels = answer.get_predictions(predictions_format="ndarray")
    assert labels.tolist() == [g["label"] for g in model_dir.golden]
    assert client.get_version() == model_dir.card["model_version"]


def test_tritons_http_client_sees_a_live_ready_model_with_its_metadata(
    ready: Server, model_dir: Any
) -> None:
    client = triton.InferenceServerClient(url=f"127.0.0.1:{ready.port}")
    name = model_dir.card["model_name"]
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(name)
    meta = client.get_model_metadata(name)
    assert meta["name"] == name
    assert {o["name"] for o in meta["outputs"]} >= {"label", "probabilities"}


@pytest.mark.parametrize("binary", [True, False], ids=["binary-tensor", "json-tensor"])
def test_tritons_http_client_infers_the_golden_answers(
    ready: Server, model_dir: Any, binary: bool
) -> None:
    client = triton.InferenceServerClient(url=f"127.0.0.1:{ready.port}")
    x = _frame(model_dir).to_numpy(dtype=np.float64)
    tensor = triton.InferInput("input", list(x.shape), "FP64")
    tensor.set_data_from_numpy(x, binary_data=binary)
    outputs = [
        triton.InferRequestedOutput(n, binary_data=False) for n in ("label", "probabilities")
    ]
    result = client.infer(model_dir.card["model_name"], inputs=[tensor], outputs=outputs)
    assert result.as_numpy("label").tolist() == [g["label"] for g in model_dir.golden]
    expected = np.asarray([g["probabilities"] for g in model_dir.golden])
    assert np.abs(result.as_numpy("probabilities").astype(np.float64) - expected).max() <= 1e-5
