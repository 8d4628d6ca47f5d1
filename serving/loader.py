"""Turn a model directory into a verified, warmed-up runtime, or into a reason it cannot be.

Readiness means all of this succeeded, in order:

1. ``model.json`` parses and has every key docs/model-card.md promises;
2. ``model.pkl`` hashes to the card's ``sha256`` (and ``model.onnx`` to ``onnx.sha256``);
3. the runtime loads (``SERVING_RUNTIME``: ``auto`` tries ONNX, then falls back to
   scikit-learn, logging why; ``onnx``/``sklearn`` insist);
4. on every golden row (converted exactly as a request is: :mod:`serving.schema`) the runtime
   returns exactly the validated label and probabilities within its declared tolerance (a
   regressor: its value within the declared relative tolerance);
5. one warm-up prediction succeeds.

A tampered file is never "fallen back" from: a hash mismatch is fatal in every mode.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

from serving.card import (
    CARD_FILE,
    GoldenSet,
    Label,
    ModelCard,
    find_golden,
    read_bytes_verified,
    read_card,
    read_golden,
    read_holdout,
)
from serving.errors import ModelLoadError, ServingError
from serving.runtime import OnnxRuntime, Runtime, SklearnRuntime, regression_error
from serving.schema import Batch, InputSchema
from serving.settings import Settings

__all__ = ["LoadedModel", "ModelState", "load_model"]

_log = logging.getLogger("serving")
T = TypeVar("T")


@dataclass(frozen=True)
class Golden:
    """Golden rows as the runtimes take them, with the validated answers."""

    x: Batch
    labels: tuple[Label, ...]
    probabilities: npt.NDArray[np.float64]


def golden_batch(golden: GoldenSet, card: ModelCard) -> Golden:
    """The golden rows through the request converter (so a null or a category is read exactly
    as a client's would be), with their answers checked against the card's shape."""
    schema = InputSchema(card.features, max_rows=max(1, len(golden.rows)))
    try:
        x = schema.from_records([r.inputs for r in golden.rows], "golden.json", check_booleans=True)
    except ServingError as exc:
        raise ModelLoadError(f"golden.json does not fit model.json: {exc.message}") from None
    width = 0 if card.regression else len(card.classes)
    probabilities = np.array([row.probabilities for row in golden.rows], dtype=np.float64)
    probabilities = probabilities.reshape(len(golden.rows), -1)
    if probabilities.shape != (len(golden.rows), width):
        raise ModelLoadError(
            f"golden.json: probabilities have shape {probabilities.shape}, expected "
            f"({len(golden.rows)}, {width}) for classes {list(card.classes)}"
        )
    return Golden(x=x, labels=tuple(r.label for r in golden.rows), probabilities=probabilities)


@dataclass(frozen=True)
class LoadedModel:
    card: ModelCard
    runtime: Runtime
    holdout_metrics: dict[str, float] | None
    #: Max abs probability difference measured on the golden rows at start-up (None: no rows).
    golden_max_abs_diff: float | None
    load_seconds: float


def load_model(model_dir: Path, *, settings: Settings) -> LoadedModel:
    started = time.perf_counter()
    card = read_card(model_dir / CARD_FILE)
    model_bytes = read_bytes_verified(model_dir / card.model_file, sha256=card.sha256)
    golden_file = find_golden(settings.golden, model_dir)
    golden = None if golden_file is None else golden_batch(read_golden(golden_file), card)
    if golden is None:
        _log.warning("no golden.json for %s: serving without the golden-set check", model_dir)
    runtime, diff = _choose_runtime(model_dir, card, model_bytes, golden, settings=settings)
    runtime.predict_with_probabilities(golden.x if golden is not None else _warm_up_row(card))
    loaded = LoadedModel(
        card=card,
        runtime=runtime,
        holdout_metrics=read_holdout(settings.holdout_metrics, model_dir),
        golden_max_abs_diff=diff,
        load_seconds=time.perf_counter() - started,
    )
    _log.info(
        "model %s version %s ready on %s runtime in %.3f s (golden max abs diff %s, tolerance %g)",
        card.model_name,
        card.model_version,
        runtime.name,
        loaded.load_seconds,
        diff,
        runtime.tolerance,
    )
    return loaded


def _choose_runtime(
    model_dir: Path,
    card: ModelCard,
    model_bytes: bytes,
    golden: Golden | None,
    *,
    settings: Settings,
) -> tuple[Runtime, float | None]:
    names = card.feature_names
    mixed = any(f.categorical for f in card.features)
    text_columns = tuple(f.categorical for f in card.features) if mixed else None
    if settings.runtime != "sklearn":
        if card.onnx is None:
            if settings.runtime == "onnx":
                raise ModelLoadError("SERVING_RUNTIME=onnx but model.json has no 'onnx' entry")
            _log.info("model.json has no ONNX model: serving with scikit-learn")
        else:
            onnx_bytes = read_bytes_verified(model_dir / card.onnx.file, sha256=card.onnx.sha256)
            try:
                onnx = OnnxRuntime(onnx_bytes, feature_names=names, text_columns=text_columns)
                return onnx, _check_golden(onnx, card, golden)
            except ModelLoadError as exc:
                if settings.runtime == "onnx":
                    raise
                _log.warning("ONNX runtime rejected (%s): falling back to scikit-learn", exc)
    sklearn = SklearnRuntime(model_bytes, feature_names=names, regression=card.regression)
    return sklearn, _check_golden(sklearn, card, golden)


def _warm_up_row(card: ModelCard) -> Batch:
    row = {f.name: (f.categories or ("",))[0] if f.categorical else 0 for f in card.features}
    return InputSchema(card.features, max_rows=1).from_records(
        [row], "warm-up row", check_booleans=False
    )


def _check_golden(runtime: Runtime, card: ModelCard, golden: Golden | None) -> float | None:
    if golden is None:
        onnx = card.onnx if isinstance(runtime, OnnxRuntime) else None
        if onnx is not None and not onnx.max_abs_diff <= runtime.tolerance:
            raise ModelLoadError(
                f"model.json records ONNX max_abs_diff {onnx.max_abs_diff:g} above the "
                f"ONNX runtime's tolerance {runtime.tolerance:g}"
            )
        return None
    labels, probabilities = runtime.predict_with_probabilities(golden.x)
    if card.regression:
        error = regression_error(labels, np.asarray(golden.labels, dtype=np.float64))
        if not error <= runtime.tolerance:
            raise ModelLoadError(
                f"{runtime.name} runtime predictions differ from golden.json by {error:g} "
                f"(relative), above its declared tolerance {runtime.tolerance:g}"
            )
        return error
    got = labels.tolist()
    wrong = [i for i, (a, b) in enumerate(zip(got, golden.labels, strict=True)) if a != b]
    if wrong:
        i = wrong[0]
        raise ModelLoadError(
            f"{runtime.name} runtime disagrees with golden.json on {len(wrong)} of "
            f"{len(got)} rows (first: row {i}, label {got[i]!r} vs validated "
            f"{golden.labels[i]!r}); this is not the validated model"
        )
    diff = float(np.abs(probabilities.astype(np.float64) - golden.probabilities).max())
    if not diff <= runtime.tolerance:
        raise ModelLoadError(
            f"{runtime.name} runtime probabilities differ from golden.json by {diff:g}, above "
            f"its declared tolerance {runtime.tolerance:g}"
        )
    return diff


class ModelState(Generic[T]):
    """Liveness answers at once; readiness is one fact: :attr:`served` is set.

    A background thread runs :func:`load_model` and then ``prepare`` (what the handlers need
    from the model); :attr:`served` is assigned only when both succeeded, else :attr:`error`
    says why the model will never be ready."""

    def __init__(
        self, model_dir: Path, *, settings: Settings, prepare: Callable[[LoadedModel], T]
    ) -> None:
        self._model_dir = model_dir
        self._settings = settings
        self._prepare = prepare
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.served: T | None = None
        self.error: str | None = None

    def start(self) -> None:
        """Load in a background thread (idempotent)."""
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._load, name="model-loader", daemon=True)
            self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until loading ended; True when the model is ready."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.served is not None

    @property
    def status(self) -> str:
        if self.served is not None:
            return "ready"
        return "failed" if self.error is not None else "loading"

    def _load(self) -> None:
        try:
            self.served = self._prepare(load_model(self._model_dir, settings=self._settings))
        except ModelLoadError as exc:
            self.error = str(exc)
            _log.error("model in %s will never be ready: %s", self._model_dir, exc)
        except Exception as exc:  # the thread must report every failure, not die silently
            self.error = f"{type(exc).__name__}: {exc}"
            _log.exception("model in %s will never be ready", self._model_dir)
