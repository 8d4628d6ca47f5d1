"""Contract tests: what a running model server must do, whoever started it and however.

Run with `pytest tests/contract --base-url http://HOST:PORT` (or CONTRACT_BASE_URL), or let
`pipeline contract-test --image REF` start the container and run them. The expected answers come
from the validated model (models/model.json, reports/golden.json), never from the server.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.config import ContractParams, load_params
from serving.card import read_card, read_golden
from serving.runtime import declared_tolerance
from tests.contract import clients


@pytest.fixture(scope="session")
def base_url(pytestconfig: pytest.Config) -> str:
    return str(pytestconfig.getoption("--base-url")).rstrip("/")


@pytest.fixture(scope="session")
def http(base_url: str) -> Iterator[httpx.Client]:
    with clients.client(base_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def card(pytestconfig: pytest.Config) -> dict[str, Any]:
    """The validated model's card as JSON (checked by its one reader first)."""
    path = Path(pytestconfig.getoption("--model-card"))
    read_card(path)
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.fixture(scope="session")
def golden(pytestconfig: pytest.Config) -> dict[str, Any]:
    """The golden rows as JSON (checked by their one reader first)."""
    path = Path(pytestconfig.getoption("--golden"))
    read_golden(path)
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.fixture(scope="session")
def labels(pytestconfig: pytest.Config) -> dict[str, str] | None:
    path = pytestconfig.getoption("--image-labels")
    return None if path is None else dict(json.loads(Path(path).read_text()))


@pytest.fixture(scope="session")
def budgets(pytestconfig: pytest.Config) -> ContractParams:
    return load_params(Path(pytestconfig.getoption("--contract-params"))).contract


@pytest.fixture(scope="session")
def tolerance(http: httpx.Client, budgets: ContractParams) -> float:
    """The most |p - p_golden| allowed: what the runtime the server names declares in
    serving.runtime (the server cannot widen it), tightened by `contract.probability_tolerance`."""
    runtime = http.get("/metadata").json()["runtime"]["name"]
    task = http.get("/metadata").json().get("task", "classification")
    return declared_tolerance(runtime, tighter=budgets.probability_tolerance, task=task)


@pytest.fixture(scope="session")
def infer_path(card: dict[str, Any]) -> str:
    return f"/v2/models/{card['model_name']}/infer"
