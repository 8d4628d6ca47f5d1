"""Convert the fitted scikit-learn pipeline to ONNX and prove the conversion faithful.

The train stage calls :func:`to_onnx` and, when it returns bytes, :func:`check_parity` on the
golden rows; it writes ``models/model.onnx`` and the ``onnx`` entry of ``models/model.json``
only when ``parity.ok`` holds. Serving then prefers onnxruntime (about 6 µs per 1-row call
against about 230 µs for ``predict_proba``) and re-checks the same promise at start-up.

The promise, per runtime (see :mod:`serving.runtime`): class labels identical on every
checked row; probabilities within :data:`ONNX_TOLERANCE` absolute (a regressor: values within
``REGRESSION_TOLERANCES["onnx"]`` relative). ONNX computes in float32, so a 1e-9 match is
neither expected nor claimed.

A numeric model becomes a graph with one float32 input ``[None, n_features]``; a model with
categorical columns one input per column (``[None, 1]``, string tensors for text), fed exactly
as serving feeds it: the parity check converts the rows with serving's own request converter.

This module imports skl2onnx, which is not in the serving image: serving never imports it.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.ml.training import model_input, request_records
from serving.card import Feature
from serving.runtime import ONNX_TOLERANCE, OnnxSession, declared_tolerance, regression_error
from serving.schema import InputSchema

__all__ = ["ONNX_TOLERANCE", "Parity", "check_parity", "to_onnx"]

_log = logging.getLogger(__name__)

#: Name of the single float32 input tensor, shape ``[None, n_features]`` (docs/model-card.md).
INPUT_NAME = "input"
#: The graph's name. skl2onnx's default is a random uuid4, which made two exports of the same
#: model different files (tests/integration/test_train_image.py compares them byte for byte).
GRAPH_NAME = "model"


@dataclass(frozen=True)
class Parity:
    """How closely the ONNX graph reproduces the scikit-learn model on the checked rows."""

    max_abs_diff: float
    classes_match: bool
    n_rows: int
    mismatched_rows: tuple[int, ...]
    tolerance: float = ONNX_TOLERANCE

    @property
    def ok(self) -> bool:
        """True when labels match on every row and probabilities stay within tolerance."""
        return self.classes_match and self.max_abs_diff <= self.tolerance


def to_onnx(
    model: Any,
    *,
    n_features: int | None = None,
    features: Sequence[Feature] | None = None,
    task: str = "classification",
) -> bytes | None:
    """Return the serialized ONNX graph of ``model``, or None when skl2onnx cannot convert it.

    ``features`` (the card's) decides the inputs; without it, ``n_features`` numeric columns.
    ZipMap is disabled so a classifier's graph outputs ``label`` and a plain ``probabilities``
    tensor of shape ``[n, n_classes]``; a regressor's outputs ``variable``. A model skl2onnx has
    no converter for (or converts into a graph onnxruntime refuses) is not an error: the step
    that failed is logged and serving falls back to scikit-learn.
    """
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    width = len(features) if features is not None else n_features
    if width is None:
        raise ValueError("to_onnx needs features or n_features")
    initial: list[tuple[str, Any]]
    if features is not None and any(f.categorical for f in features):
        initial = [
            (f.name, StringTensorType([None, 1]) if f.categorical else FloatTensorType([None, 1]))
            for f in features
        ]
    else:
        initial = [(INPUT_NAME, FloatTensorType([None, width]))]
    options = {"zipmap": False} if task == "classification" else None
    try:
        graph = convert_sklearn(model, initial_types=initial, options=options, name=GRAPH_NAME)
    # skl2onnx signals "cannot convert" through all of these, depending on the estimator.
    except _CANNOT as exc:
        _log.warning(
            "ONNX export skipped: skl2onnx cannot convert %s (%s: %s); serving will use "
            "scikit-learn",
            _failing_step(model, initial),
            type(exc).__name__,
            str(exc).splitlines()[0][:200] if str(exc) else "",
        )
        return None
    data: bytes = graph.SerializeToString()
    outputs = [output.name for output in graph.graph.output]
    expected = ["label", "probabilities"] if task == "classification" else ["variable"]
    if outputs != expected:
        _log.warning(
            "ONNX export skipped: graph outputs %s, expected %s (is the model a %s?)",
            outputs,
            expected,
            "classifier with predict_proba" if task == "classification" else "regressor",
        )
        return None
    return data


_CANNOT = (RuntimeError, ValueError, TypeError, NotImplementedError, AttributeError, KeyError)


def _failing_step(model: Any, initial: list[tuple[str, Any]]) -> str:
    """Which step of a Pipeline skl2onnx stops at: the shortest prefix that fails."""
    from skl2onnx import convert_sklearn
    from sklearn.pipeline import Pipeline

    if not isinstance(model, Pipeline):
        return type(model).__name__
    for k in range(1, len(model.steps)):
        try:
            convert_sklearn(Pipeline(model.steps[:k]), initial_types=initial)
        except _CANNOT:
            name, step = model.steps[k - 1]
            return f"step {name!r} ({type(step).__name__}) of the Pipeline"
    name, step = model.steps[-1]
    return f"step {name!r} ({type(step).__name__}) of the Pipeline"


def check_parity(
    model: Any,
    onnx_model: bytes,
    rows: Any,
    *,
    features: Sequence[Feature] | None = None,
    task: str = "classification",
) -> Parity:
    """Run both models on ``rows`` and compare their answers.

    ``rows`` is what the model was fitted on, shape ``[n, n_features]``: a DataFrame (its
    columns in the card's order) or an array. With ``features`` (the card's) the rows reach the
    graph through serving's request converter, as a client's would. ``model.predict`` (and
    ``predict_proba``) are the reference; the graph runs on one thread exactly as serving runs it.
    """
    typed = features is not None and any(f.categorical or f.nullable for f in features)
    mixed = features is not None and any(f.categorical for f in features)
    if typed:
        assert features is not None
        batch: Any = InputSchema(features, max_rows=max(1, len(rows))).from_records(
            request_records(rows), "the parity rows", check_booleans=True
        )
        reference = model_input(rows)
        n = len(rows)
    else:
        batch = np.asarray(rows, dtype=np.float64)
        if batch.ndim != 2 or batch.shape[0] == 0:
            raise ValueError(f"parity needs a non-empty 2-D array of rows, got {batch.shape}")
        reference, n = rows, batch.shape[0]
    session = OnnxSession(
        onnx_model, text_columns=tuple(f.categorical for f in features or ()) if mixed else None
    )
    labels, probabilities = session.run(batch)
    with warnings.catch_warnings():  # an array for a model fitted on a DataFrame is expected
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        expected_labels = np.asarray(model.predict(reference))
        if task == "regression":
            error = regression_error(labels, expected_labels)
            return Parity(
                max_abs_diff=error,
                classes_match=True,
                n_rows=n,
                mismatched_rows=(),
                tolerance=declared_tolerance("onnx", task="regression"),
            )
        expected_probabilities = np.asarray(model.predict_proba(reference), dtype=np.float64)
    if probabilities.shape != expected_probabilities.shape:
        raise ValueError(
            f"ONNX probabilities have shape {probabilities.shape}, scikit-learn "
            f"{expected_probabilities.shape}: the graph does not describe this model"
        )
    diff = np.abs(probabilities.astype(np.float64) - expected_probabilities)
    mismatched = np.flatnonzero(labels != expected_labels)
    return Parity(
        max_abs_diff=float(diff.max()),
        classes_match=mismatched.size == 0,
        n_rows=n,
        mismatched_rows=tuple(int(i) for i in mismatched),
    )
