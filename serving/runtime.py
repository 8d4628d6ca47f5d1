"""The two ways to compute a prediction, and what each promises.

=============  ===========================================  =============================
runtime        labels                                       probabilities (absolute)
=============  ===========================================  =============================
``sklearn``    ``model.predict`` itself                     ``predict_proba``, tolerance
                                                            :data:`SKLEARN_TOLERANCE` (same
                                                            library versions; only BLAS
                                                            summation order may differ)
``onnx``       the graph's ``label`` output, equal to       float32 arithmetic, tolerance
               ``predict`` on every golden row              :data:`ONNX_TOLERANCE`
=============  ===========================================  =============================

Measured on this project's breast-cancer LogisticRegression (1 row, one core): onnxruntime
≈ 7 µs per call, scikit-learn ``predict_proba`` ≈ 200-240 µs (almost all input validation).
The max abs probability difference ONNX vs scikit-learn on the golden rows is ≈ 4e-7.

scikit-learn and onnxruntime are imported only when a runtime of that kind is built, so an
ONNX-served model never pays scikit-learn's import time or memory.
"""

from __future__ import annotations

import contextlib
import pickle
import warnings
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from serving.errors import ModelLoadError, ServingError

__all__ = [
    "ONNX_TOLERANCE",
    "SKLEARN_TOLERANCE",
    "TOLERANCES",
    "OnnxRuntime",
    "OnnxSession",
    "Runtime",
    "SklearnRuntime",
    "declared_tolerance",
]

#: Max abs difference promised between ONNX and scikit-learn probabilities (float32 graph).
ONNX_TOLERANCE = 1e-5
#: Max abs difference promised between served and validated scikit-learn probabilities.
SKLEARN_TOLERANCE = 1e-12
#: THE tolerances: what each runtime promises. The server checks the golden rows against them at
#: start-up, the containerize smoke check and the contract tests hold the served answers to them
#: (params.yaml ``contract.probability_tolerance`` may only tighten them).
TOLERANCES: dict[str, float] = {"onnx": ONNX_TOLERANCE, "sklearn": SKLEARN_TOLERANCE}


def declared_tolerance(runtime: str, *, tighter: float | None = None) -> float:
    """The bound served probabilities must keep for ``runtime``, tightened by ``tighter``."""
    try:
        declared = TOLERANCES[runtime]
    except KeyError:
        raise ValueError(f"unknown runtime {runtime!r}; known: {sorted(TOLERANCES)}") from None
    return declared if tighter is None else min(declared, tighter)


_FLOAT32_MAX = float(np.finfo(np.float32).max)

Matrix = npt.NDArray[np.float64]
Labels = npt.NDArray[Any]


class Runtime(Protocol):
    name: str
    tolerance: float
    #: Open Inference Protocol datatype of the probabilities this runtime returns.
    probability_datatype: str

    def predict(self, x: Matrix) -> Labels:
        """Class labels for each row of ``x`` (shape ``[n, n_features]``, finite float64)."""

    def predict_with_probabilities(self, x: Matrix) -> tuple[Labels, npt.NDArray[Any]]:
        """Labels and probabilities (shape ``[n, n_classes]``, columns in class order)."""


class OnnxSession:
    """An onnxruntime session pinned to one intra-op and one inter-op thread.

    One thread is faster than two for the small batches serving sees on a 2-core machine, and
    leaves the other core to the event loop and the kernel's network stack.
    """

    def __init__(self, model: bytes) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                model, sess_options=options, providers=["CPUExecutionProvider"]
            )
        # onnxruntime's errors (Fail, InvalidGraph, InvalidProtobuf, ...) share no base class.
        except Exception as exc:
            raise ModelLoadError(f"onnxruntime cannot load the graph: {exc}") from None
        inputs = self._session.get_inputs()
        outputs = [output.name for output in self._session.get_outputs()]
        if len(inputs) != 1 or outputs != ["label", "probabilities"]:
            raise ModelLoadError(
                "the ONNX graph must take one tensor and output ['label', 'probabilities'] "
                f"(zipmap disabled); it takes {[i.name for i in inputs]} and outputs {outputs}"
            )
        self._input = inputs[0].name

    def run(self, x: Matrix) -> tuple[Labels, npt.NDArray[np.float32]]:
        labels, probabilities = self._session.run(None, {self._input: x.astype(np.float32)})
        return labels, probabilities


class OnnxRuntime:
    name = "onnx"
    tolerance = ONNX_TOLERANCE
    probability_datatype = "FP32"

    def __init__(self, model: bytes, *, feature_names: tuple[str, ...]) -> None:
        self._session = OnnxSession(model)
        self._feature_names = feature_names

    def predict(self, x: Matrix) -> Labels:
        return self.predict_with_probabilities(x)[0]

    def predict_with_probabilities(self, x: Matrix) -> tuple[Labels, npt.NDArray[np.float32]]:
        if np.abs(x).max() > _FLOAT32_MAX:
            row, col = np.argwhere(np.abs(x) > _FLOAT32_MAX)[0]
            raise ServingError.invalid(
                f"column {self._feature_names[col]!r} (row {row}): {x[row, col]!r} is beyond "
                "float32 range, which this model's ONNX runtime computes in"
            )
        return self._session.run(x)


class SklearnRuntime:
    name = "sklearn"
    tolerance = SKLEARN_TOLERANCE
    probability_datatype = "FP64"

    def __init__(self, model: bytes, *, feature_names: tuple[str, ...]) -> None:
        import sklearn

        self._sklearn = sklearn
        try:
            estimator = pickle.loads(model)
        except (pickle.UnpicklingError, AttributeError, ImportError, EOFError, TypeError) as exc:
            raise ModelLoadError(f"model.pkl cannot be unpickled: {exc!r}") from None
        for method in ("predict", "predict_proba"):
            if not callable(getattr(estimator, method, None)):
                raise ModelLoadError(f"model.pkl holds {type(estimator).__name__}, no {method}()")
        fitted = getattr(estimator, "feature_names_in_", None)
        if fitted is not None and tuple(str(n) for n in fitted) != feature_names:
            raise ModelLoadError(
                "model.pkl was fitted on columns in a different order or set than model.json "
                f"'features': {list(fitted)} vs {list(feature_names)}"
            )
        self._model = estimator

    def predict(self, x: Matrix) -> Labels:
        with self._context():
            return np.asarray(self._model.predict(x))

    def predict_with_probabilities(self, x: Matrix) -> tuple[Labels, npt.NDArray[np.float64]]:
        with self._context():
            labels = np.asarray(self._model.predict(x))
            probabilities = np.asarray(self._model.predict_proba(x), dtype=np.float64)
        return labels, probabilities

    @contextlib.contextmanager
    def _context(self) -> Iterator[None]:
        # Serving already rejected NaN/inf: skipping sklearn's own scan saves ~15 % per call.
        # Rows arrive as an array ordered like feature_names_in_ (checked at load), never a
        # DataFrame (no pandas in the image), so the "no feature names" warning is moot.
        with self._sklearn.config_context(assume_finite=True), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="X does not have valid feature names")
            yield
