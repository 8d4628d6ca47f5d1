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

A regressor's promise is its predicted value, relative to its size: ``|y - y_golden| <=
tolerance * max(1, |y_golden|)`` with :data:`REGRESSION_TOLERANCES` (float32 keeps about seven
significant digits, so an absolute bound would depend on the target's unit).

A model with categorical columns takes :class:`serving.schema.Columns` (an ONNX graph with one
input per column, string tensors for text); a numeric model takes one float64 matrix.

Measured on this project's breast-cancer LogisticRegression (1 row, one core): onnxruntime
≈ 7 µs per call, scikit-learn ``predict_proba`` ≈ 200-240 µs (almost all input validation).
The max abs probability difference ONNX vs scikit-learn on the golden rows is ≈ 4e-7.

scikit-learn and onnxruntime are imported only when a runtime of that kind is built, so an
ONNX-served model never pays scikit-learn's import time or memory.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import warnings
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from serving.errors import ModelLoadError, ServingError
from serving.schema import Batch, Columns

__all__ = [
    "ONNX_TOLERANCE",
    "REGRESSION_TOLERANCES",
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
#: THE regression tolerances: max ``|y - y_golden| / max(1, |y_golden|)`` per runtime.
REGRESSION_TOLERANCES: dict[str, float] = {"onnx": 1e-5, "sklearn": 1e-12}


def declared_tolerance(
    runtime: str, *, tighter: float | None = None, task: str = "classification"
) -> float:
    """The bound served answers must keep for ``runtime`` (probabilities, or relative values
    for a regressor), tightened by ``tighter``."""
    table = REGRESSION_TOLERANCES if task == "regression" else TOLERANCES
    try:
        declared = table[runtime]
    except KeyError:
        raise ValueError(f"unknown runtime {runtime!r}; known: {sorted(table)}") from None
    return declared if tighter is None else min(declared, tighter)


def regression_error(values: npt.ArrayLike, expected: npt.ArrayLike) -> float:
    """The largest relative difference the regression tolerances bound."""
    got, want = np.asarray(values, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if got.size == 0:
        return 0.0
    return float((np.abs(got - want) / np.maximum(1.0, np.abs(want))).max())


_FLOAT32_MAX = float(np.finfo(np.float32).max)

Matrix = npt.NDArray[np.float64]
Labels = npt.NDArray[Any]


class Runtime(Protocol):
    name: str
    tolerance: float
    #: Open Inference Protocol datatype of the probabilities this runtime returns.
    probability_datatype: str

    def predict(self, x: Batch) -> Labels:
        """Class labels (or, for a regressor, float64 values) for each row of ``x``."""

    def predict_with_probabilities(self, x: Batch) -> tuple[Labels, npt.NDArray[Any]]:
        """Labels and probabilities (shape ``[n, n_classes]``, columns in class order); a
        regressor's values and an empty ``[n, 0]`` array."""


class OnnxSession:
    """An onnxruntime session pinned to one intra-op and one inter-op thread.

    One thread is faster than two for the small batches serving sees on a 2-core machine, and
    leaves the other core to the event loop and the kernel's network stack.
    """

    def __init__(self, model: bytes, *, text_columns: tuple[bool, ...] | None = None) -> None:
        """``text_columns``: for a graph with one input per column (a model with categorical
        columns), which of them are strings, in model order; None: one matrix input."""
        # Before onnxruntime initialises, which latches the choice: no usage telemetry
        # uploaded from wherever a model is served or checked (the image sets it too).
        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
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
        texts = tuple(i.type == "tensor(string)" for i in inputs)
        expected = (False,) if text_columns is None else text_columns
        if texts != expected or outputs not in (["label", "probabilities"], ["variable"]):
            raise ModelLoadError(
                "the ONNX graph must take "
                + ("one tensor" if text_columns is None else "one tensor per column")
                + " and output ['label', 'probabilities'] (zipmap disabled) or ['variable'] "
                f"(a regressor); it takes {[(i.name, i.type) for i in inputs]} and outputs "
                f"{outputs}"
            )
        self.regression = outputs == ["variable"]
        self._inputs = [i.name for i in inputs]
        self._outputs = outputs
        # InferenceSession.run checks each call that every input is fed (reading the inputs'
        # metadata through pybind, ~6-13 us of a 1-row call's ~20) before calling the
        # compiled session with the same arguments. Our feeds always hold every input, by
        # name, as NumPy arrays (built below from the names read here), so the call goes
        # to the compiled session directly; the wrapper stays the path if it ever lacks one.
        # Both take (output names, feeds, run options).
        direct = getattr(getattr(self._session, "_sess", None), "run", None)
        self._run = direct if callable(direct) else self._session.run

    def run(self, x: Batch) -> tuple[Labels, npt.NDArray[Any]]:
        """(labels, probabilities), or (float64 values, an empty [n, 0] array) for a regressor."""
        if isinstance(x, Columns):
            feeds = {
                name: (a if a.dtype == object else a.astype(np.float32)).reshape(-1, 1)
                for name, a in zip(self._inputs, x.arrays, strict=True)
            }
        else:
            feeds = {self._inputs[0]: x.astype(np.float32)}
        answers = self._run(self._outputs, feeds, None)
        if self.regression:
            values = np.asarray(answers[0], dtype=np.float64).reshape(-1)
            return values, np.empty((len(values), 0))
        return answers[0], answers[1]


class OnnxRuntime:
    name = "onnx"
    tolerance = ONNX_TOLERANCE
    probability_datatype = "FP32"

    def __init__(
        self,
        model: bytes,
        *,
        feature_names: tuple[str, ...],
        text_columns: tuple[bool, ...] | None = None,
    ) -> None:
        self._session = OnnxSession(model, text_columns=text_columns)
        self._feature_names = feature_names
        if self._session.regression:
            self.probability_datatype = "FP64"  # no probabilities; values are returned as FP64
            self.tolerance = REGRESSION_TOLERANCES[self.name]

    def predict(self, x: Batch) -> Labels:
        return self.predict_with_probabilities(x)[0]

    def predict_with_probabilities(self, x: Batch) -> tuple[Labels, npt.NDArray[Any]]:
        self.check(x)
        return self._session.run(x)

    @property
    def session(self) -> OnnxSession:
        return self._session

    def check(self, x: Batch) -> None:
        """A request's own 400 for a value beyond float32 (before it joins a micro-batch)."""
        numeric = (
            [(j, a) for j, a in enumerate(x.arrays) if a.dtype != object]
            if isinstance(x, Columns)
            else [(None, x)]
        )
        for j, values in numeric:
            beyond = np.abs(values) > _FLOAT32_MAX  # NaN compares False: no nan_to_num copy
            if beyond.any():
                where = np.argwhere(beyond)[0]
                row, col = (int(where[0]), j) if j is not None else (int(where[0]), int(where[1]))
                raise ServingError.invalid(
                    f"column {self._feature_names[col]!r} (row {row}): "
                    f"{values[tuple(where)]!r} is beyond float32 range, which this model's "
                    "ONNX runtime computes in"
                )


class SklearnRuntime:
    name = "sklearn"
    tolerance = SKLEARN_TOLERANCE
    probability_datatype = "FP64"

    def __init__(
        self, model: bytes, *, feature_names: tuple[str, ...], regression: bool = False
    ) -> None:
        try:
            import sklearn
        except ImportError:  # the ONNX image (requirements/serving-onnx.lock) ships none
            raise ModelLoadError(
                "scikit-learn is not installed in this environment (an ONNX-only image): "
                "serve this model with SERVING_RUNTIME=onnx, or build the image with the "
                "scikit-learn environment (requirements/serving.lock)"
            ) from None
        self._sklearn = sklearn
        self._regression = regression
        if regression:
            self.tolerance = REGRESSION_TOLERANCES[self.name]
        try:
            estimator = pickle.loads(model)
        except (pickle.UnpicklingError, AttributeError, ImportError, EOFError, TypeError) as exc:
            raise ModelLoadError(f"model.pkl cannot be unpickled: {exc!r}") from None
        for method in ("predict",) if regression else ("predict", "predict_proba"):
            if not callable(getattr(estimator, method, None)):
                raise ModelLoadError(f"model.pkl holds {type(estimator).__name__}, no {method}()")
        fitted = getattr(estimator, "feature_names_in_", None)
        if fitted is not None and tuple(str(n) for n in fitted) != feature_names:
            raise ModelLoadError(
                "model.pkl was fitted on columns in a different order or set than model.json "
                f"'features': {list(fitted)} vs {list(feature_names)}"
            )
        self._model = estimator

    def predict(self, x: Batch) -> Labels:
        with self._context():
            answers = np.asarray(self._model.predict(_table(x)))
        return answers.astype(np.float64) if self._regression else answers

    def predict_with_probabilities(self, x: Batch) -> tuple[Labels, npt.NDArray[np.float64]]:
        table = _table(x)
        with self._context():
            labels = np.asarray(self._model.predict(table))
            if self._regression:
                return labels.astype(np.float64), np.empty((len(labels), 0))
            probabilities = np.asarray(self._model.predict_proba(table), dtype=np.float64)
        return labels, probabilities

    @contextlib.contextmanager
    def _context(self) -> Iterator[None]:
        # Serving already rejected NaN/inf where the model takes no missing values: skipping
        # sklearn's own scan saves ~15 % per call (imputers find NaN whatever this says).
        # Rows arrive as an array ordered like feature_names_in_ (checked at load), never a
        # DataFrame (no pandas in the image), so the "no feature names" warning is moot.
        with self._sklearn.config_context(assume_finite=True), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="X does not have valid feature names")
            yield


def _table(x: Batch) -> npt.NDArray[Any]:
    """What a scikit-learn pipeline takes: the matrix, or typed columns as one object array
    (the built-in pipelines select columns by position; text stays ``str``, numbers float)."""
    if not isinstance(x, Columns):
        return x
    table = np.empty((x.n, len(x.arrays)), dtype=object)
    for j, column in enumerate(x.arrays):
        table[:, j] = column
    return table
