"""Convert the fitted scikit-learn pipeline to ONNX and prove the conversion faithful.

The train stage calls :func:`to_onnx` and, when it returns bytes, :func:`check_parity` on the
golden rows; it writes ``models/model.onnx`` and the ``onnx`` entry of ``models/model.json``
only when ``parity.ok`` holds. Serving then prefers onnxruntime (about 6 µs per 1-row call
against about 230 µs for ``predict_proba``) and re-checks the same promise at start-up.

The promise, per runtime (see :mod:`serving.runtime`): class labels identical on every
checked row; probabilities within :data:`ONNX_TOLERANCE` absolute. ONNX computes in float32, so
a 1e-9 match is neither expected nor claimed.

This module imports skl2onnx, which is not in the serving image: serving never imports it.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.runtime import ONNX_TOLERANCE, OnnxSession

__all__ = ["ONNX_TOLERANCE", "Parity", "check_parity", "to_onnx"]

_log = logging.getLogger(__name__)

#: Name of the single float32 input tensor, shape ``[None, n_features]`` (docs/model-card.md).
INPUT_NAME = "input"


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


def to_onnx(model: Any, *, n_features: int) -> bytes | None:
    """Return the serialized ONNX graph of ``model``, or None when skl2onnx cannot convert it.

    ZipMap is disabled so the graph outputs ``label`` and a plain ``probabilities`` tensor of
    shape ``[n, n_classes]``. A model skl2onnx has no converter for (or converts into a graph
    onnxruntime refuses) is not an error: the reason is logged and serving falls back to
    scikit-learn.
    """
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    try:
        graph = convert_sklearn(
            model,
            initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
            options={"zipmap": False},
        )
    # skl2onnx signals "cannot convert" through all of these, depending on the estimator.
    except (RuntimeError, ValueError, TypeError, NotImplementedError, AttributeError) as exc:
        _log.warning(
            "ONNX export skipped: skl2onnx cannot convert %s (%s: %s); serving will use "
            "scikit-learn",
            type(model).__name__,
            type(exc).__name__,
            str(exc).splitlines()[0] if str(exc) else "",
        )
        return None
    data: bytes = graph.SerializeToString()
    outputs = [output.name for output in graph.graph.output]
    if outputs != ["label", "probabilities"]:
        _log.warning(
            "ONNX export skipped: graph outputs %s, expected ['label', 'probabilities'] "
            "(is the model a classifier with predict_proba?)",
            outputs,
        )
        return None
    return data


def check_parity(model: Any, onnx_model: bytes, rows: Any) -> Parity:
    """Run both models on ``rows`` and compare their answers.

    ``rows`` is what the model was fitted on, shape ``[n, n_features]``: a DataFrame (its
    columns in the card's order) or an array. ``model.predict`` and ``model.predict_proba`` are
    the reference; the ONNX graph runs on one intra-op thread exactly as serving runs it.
    """
    x = np.asarray(rows, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"parity needs a non-empty 2-D array of rows, got shape {x.shape}")
    session = OnnxSession(onnx_model)
    labels, probabilities = session.run(x)
    with warnings.catch_warnings():  # an array for a model fitted on a DataFrame is expected
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        expected_labels = np.asarray(model.predict(rows))
        expected_probabilities = np.asarray(model.predict_proba(rows), dtype=np.float64)
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
        n_rows=int(x.shape[0]),
        mismatched_rows=tuple(int(i) for i in mismatched),
    )
