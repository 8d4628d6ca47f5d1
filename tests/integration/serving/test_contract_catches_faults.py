"""The contract suite must fail against broken servers, naming the failed check.

A contract suite that cannot fail is worthless: each fault below is a server that looks healthy
but is wrong in one way, and the suite is run against it as CI would run it.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from sklearn.ensemble import RandomForestClassifier

from tests.support import serving as fixtures
from tests.support.fault_proxy import FaultProxy
from tests.support.serving import REPO, Server, start_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def run_contract(base_url: str, model_dir: Path, tmp_path: Path, *tests: str) -> set[str]:
    """Run tests/contract as CI does; return the names of the failed tests."""
    report = tmp_path / "junit.xml"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            *(tests or ["tests/contract"]),
            "-q",
            "-p",
            "no:cacheprovider",
            f"--base-url={base_url}",
            f"--model-card={model_dir / 'model.json'}",
            f"--golden={model_dir / 'golden.json'}",
            f"--junitxml={report}",
        ],
        cwd=REPO,
        env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},  # as the runner does
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    failed = set()
    for case in ET.parse(report).getroot().iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed.add(case.get("name", "").split("[")[0])
    print(done.stdout[-5000:])
    return failed


@pytest.fixture
def live(model_dir: Any, tmp_path: Path) -> Any:
    server = start_server(model_dir.models, tmp_path)
    server.wait_ready()
    yield server
    server.stop()


def test_the_suite_passes_against_the_real_server(
    live: Server, model_dir: Any, tmp_path: Path
) -> None:
    assert run_contract(live.url, model_dir.models, tmp_path) == set()


def test_probabilities_off_by_1e_3_fail_golden_parity(
    live: Server, model_dir: Any, tmp_path: Path
) -> None:
    with FaultProxy(upstream=live.url, fault="prob_offset") as proxy:
        failed = run_contract(
            proxy.url, model_dir.models, tmp_path, "tests/contract/test_golden_parity.py"
        )
    assert (
        "test_v2_infer_returns_the_validated_classes_and_probabilities_within_tolerance" in failed
    )


def test_a_500_for_a_missing_column_fails_the_error_contract(
    live: Server, model_dir: Any, tmp_path: Path
) -> None:
    with FaultProxy(upstream=live.url, fault="missing_column_500") as proxy:
        failed = run_contract(
            proxy.url, model_dir.models, tmp_path, "tests/contract/test_error_contract.py"
        )
    assert failed == {"test_bad_input_gets_its_documented_4xx_naming_the_problem"}


def test_a_swapped_model_fails_identity_and_golden_parity(model_dir: Any, tmp_path: Path) -> None:
    """Another model, with a self-consistent card, served where the validated one should be."""
    other = fixtures.build_model_dir(tmp_path / "other", onnx=False)
    data = pickle.loads((other.models / "model.pkl").read_bytes())
    assert data is not None
    swapped = RandomForestClassifier(n_estimators=3, max_depth=2, random_state=0)
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(as_frame=True, return_X_y=True)
    swapped.fit(x, y)
    (other.models / "model.pkl").write_bytes(pickle.dumps(swapped, protocol=5))
    card = other.card | {"sha256": fixtures.sha256(other.models / "model.pkl")}
    (other.models / "model.json").write_text(__import__("json").dumps(card))
    (other.models / "golden.json").unlink()
    server = start_server(other.models, tmp_path)
    try:
        server.wait_ready()
        failed = run_contract(server.url, model_dir.models, tmp_path)
    finally:
        server.stop()
    assert "test_metadata_equals_the_model_card" in failed
    assert (
        "test_v2_infer_returns_the_validated_classes_and_probabilities_within_tolerance" in failed
    )
