"""ONNX export: a convertible pipeline becomes a plain probability graph that matches
scikit-learn within the declared tolerance; an unconvertible model yields None and a reason."""

from __future__ import annotations

import logging
import pickle
from typing import Any

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from pipeline.ml.onnx_export import ONNX_TOLERANCE, check_parity, to_onnx


class Unconvertible(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    def fit(self, x: Any, y: Any) -> Unconvertible:
        self.classes_ = np.unique(y)
        return self

    def predict(self, x: Any) -> Any:
        return np.zeros(len(x), dtype=int)

    def predict_proba(self, x: Any) -> Any:
        return np.tile([1.0, 0.0], (len(x), 1))


def golden_matrix(model_dir: Any) -> np.ndarray:
    return np.array([[g["inputs"][f] for f in model_dir.features] for g in model_dir.golden])


def test_converted_pipeline_matches_sklearn_on_the_golden_rows(model_dir: Any) -> None:
    model = pickle.loads((model_dir.models / "model.pkl").read_bytes())
    graph = to_onnx(model, n_features=30)
    assert graph is not None
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame(golden_matrix(model_dir), columns=model_dir.features)
    parity = check_parity(model, graph, frame)
    assert parity.ok and parity.classes_match and parity.n_rows == len(model_dir.golden)
    assert 0 < parity.max_abs_diff <= ONNX_TOLERANCE  # float32: close, never bit-identical


def test_unconvertible_model_returns_none_and_logs_why(caplog: pytest.LogCaptureFixture) -> None:
    model = Unconvertible().fit(np.zeros((4, 2)), [0, 1, 0, 1])
    with caplog.at_level(logging.WARNING, logger="pipeline.ml.onnx_export"):
        assert to_onnx(model, n_features=2) is None
    assert "Unconvertible" in caplog.text and "scikit-learn" in caplog.text


def test_parity_reports_rows_whose_class_differs(model_dir: Any) -> None:
    graph = (model_dir.models / "model.onnx").read_bytes()
    flipped = Unconvertible().fit(np.zeros((2, 30)), [0, 1])
    parity = check_parity(flipped, graph, golden_matrix(model_dir))
    assert not parity.ok and not parity.classes_match
    assert parity.mismatched_rows and parity.max_abs_diff > ONNX_TOLERANCE


def test_the_session_answers_as_onnxruntimes_public_run_does(model_dir: Any) -> None:
    """OnnxSession calls the compiled session, skipping the wrapper's per-call input check;
    the answers must be the wrapper's, bit for bit."""
    from serving.runtime import OnnxSession

    session = OnnxSession((model_dir.models / "model.onnx").read_bytes())
    public = session._session  # onnxruntime.InferenceSession
    assert session._run != public.run  # the direct path is the one taken
    x = golden_matrix(model_dir).astype(np.float64)
    labels, probabilities = session.run(x)
    want = public.run(None, {public.get_inputs()[0].name: x.astype(np.float32)})
    assert np.array_equal(labels, want[0]) and np.array_equal(probabilities, want[1])
