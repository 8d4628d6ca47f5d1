"""The files the train and validate stages hand to serving, read AND written here only.

``model.json`` is the model card (:class:`ModelCard`), ``golden.json`` the validated rows with
their expected answers (:class:`GoldenSet`), ``holdout.json`` the holdout metrics. The train and
validate stages build these records and call :func:`write_card` / :func:`write_golden`; the
server, the smoke check and the contract tests read them with :func:`read_card` /
:func:`read_golden`, so writer and readers cannot drift apart (format: docs/model-card.md).
Every problem is a :class:`ModelLoadError` naming the file and the key, because a server that
cannot read these must say why it never gets ready.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from serving.errors import ModelLoadError

__all__ = [
    "CARD_FILE",
    "Feature",
    "GoldenRow",
    "GoldenSet",
    "ModelCard",
    "OnnxEntry",
    "read_bytes_verified",
    "read_card",
    "read_golden",
    "write_card",
    "write_golden",
]

CARD_FILE = "model.json"
#: dtypes a numeric feature may declare; every one is served as a float64 column.
NUMERIC_DTYPES = frozenset({"float64", "float32", "int64", "int32", "int16", "int8"})
#: the dtype of a categorical feature: served as text, one-hot encoded (or as the model wants)
TEXT_DTYPE = "string"
KINDS = ("numeric", "categorical")
TASKS = ("classification", "regression")
Label = int | str | float


@dataclass(frozen=True)
class Feature:
    """One input column. ``nullable``: nulls were seen in training and the model handles them,
    so serving accepts a null there; ``categories``: the values seen in training (categorical
    columns; others are accepted and ignored by the model)."""

    name: str
    dtype: str
    kind: str = "numeric"
    nullable: bool = False
    categories: tuple[str, ...] | None = None

    @property
    def integer(self) -> bool:
        return self.dtype.startswith("int")

    @property
    def categorical(self) -> bool:
        return self.kind == "categorical"


@dataclass(frozen=True)
class OnnxEntry:
    file: str
    sha256: str
    #: max |p_onnx - p_sklearn| measured on the holdout rows at export
    max_abs_diff: float
    #: the bound it was checked against (serving.runtime.ONNX_TOLERANCE at export time)
    tolerance: float


@dataclass(frozen=True)
class ModelCard:
    model_name: str
    model_version: str
    run_id: str
    model_file: str
    sha256: str
    onnx: OnnxEntry | None
    model_type: str
    target: str
    features: tuple[Feature, ...]
    #: class labels in the model's order (classification); empty for regression
    classes: tuple[Label, ...]
    git_commit: str
    data_hash: str
    library_versions: dict[str, str]
    created: str
    task: str = "classification"

    @property
    def regression(self) -> bool:
        return self.task == "regression"

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(feature.name for feature in self.features)

    @property
    def runtime(self) -> str:
        """The runtime the image promises: ONNX when the card carries a verified graph."""
        return "onnx" if self.onnx is not None else "sklearn"


@dataclass(frozen=True)
class GoldenRow:
    """One request row (``None`` where a value is missing) and the validated answer: the class
    and its probabilities, or for regression the predicted value and no probabilities."""

    inputs: dict[str, Any]
    label: Label
    probabilities: tuple[float, ...]


@dataclass(frozen=True)
class GoldenSet:
    """Holdout rows with the in-process model's exact answers (reports/golden.json)."""

    features: tuple[str, ...]
    classes: tuple[Label, ...]
    rows: tuple[GoldenRow, ...]


def write_card(card: ModelCard, path: Path) -> Path:
    """``model.json``: every key always present (``onnx`` may be null)."""
    data = asdict(card)
    data["features"] = [
        {**asdict(f), "categories": None if f.categories is None else list(f.categories)}
        for f in card.features
    ]
    data["classes"] = list(card.classes)
    return _write_json(data, path)


def write_golden(golden: GoldenSet, path: Path) -> Path:
    """``golden.json``; floats keep Python's shortest round-trip repr, so a reader gets the
    very same doubles back."""
    data = {
        "features": list(golden.features),
        "classes": list(golden.classes),
        "rows": [
            {"inputs": r.inputs, "label": r.label, "probabilities": list(r.probabilities)}
            for r in golden.rows
        ],
    }
    return _write_json(data, path)


def _write_json(data: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
    return path


def read_json(path: Path) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise ModelLoadError(f"{path} does not exist") from None
    except orjson.JSONDecodeError as exc:
        raise ModelLoadError(f"{path} is not valid JSON: {exc}") from None


def read_bytes_verified(path: Path, *, sha256: str) -> bytes:
    """Return the file's bytes only if they hash to ``sha256`` (the bytes loaded are the ones
    hashed, so the file cannot change between check and use)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelLoadError(f"{path} does not exist") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256.lower():
        raise ModelLoadError(
            f"sha256 of {path} is {actual} but model.json records {sha256}: the file is not "
            "the one the train stage wrote (tampered or stale); refusing to serve it"
        )
    return data


def read_card(path: Path) -> ModelCard:
    """``model.json`` as a :class:`ModelCard`, every key checked."""
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{path} must hold a JSON object")
    where = str(path)
    features = _get(raw, "features", list, where)
    if not features:
        raise ModelLoadError(f"{where}: 'features' is empty")
    parsed: list[Feature] = []
    for i, item in enumerate(features):
        if not isinstance(item, dict):
            raise ModelLoadError(f"{where}: features[{i}] must be an object")
        parsed.append(_feature(item, f"{where} features[{i}]"))
    names = [feature.name for feature in parsed]
    if len(set(names)) != len(names):
        raise ModelLoadError(f"{where}: feature names repeat")
    task = raw.get("task", "classification")  # cards written before regression existed
    if task not in TASKS:
        raise ModelLoadError(f"{where}: 'task' must be one of {list(TASKS)}, got {task!r}")
    classes = _get(raw, "classes", list, where)
    if task == "regression" and classes:
        raise ModelLoadError(f"{where}: a regression model has no 'classes' (got {classes})")
    if task == "classification" and (
        not classes
        or not all(isinstance(c, int | str) and not isinstance(c, bool) for c in classes)
    ):
        raise ModelLoadError(f"{where}: 'classes' must be a non-empty list of ints or strings")
    onnx_raw = raw.get("onnx", ...)
    if onnx_raw is ...:
        raise ModelLoadError(f"{where}: missing key 'onnx' (null when there is no ONNX model)")
    onnx = None
    if onnx_raw is not None:
        if not isinstance(onnx_raw, dict):
            raise ModelLoadError(f"{where}: 'onnx' must be an object or null")
        onnx = OnnxEntry(
            file=_get(onnx_raw, "file", str, f"{where} onnx"),
            sha256=_get(onnx_raw, "sha256", str, f"{where} onnx"),
            max_abs_diff=float(_get(onnx_raw, "max_abs_diff", int | float, f"{where} onnx")),
            tolerance=float(_get(onnx_raw, "tolerance", int | float, f"{where} onnx")),
        )
    versions = _get(raw, "library_versions", dict, where)
    return ModelCard(
        model_name=_get(raw, "model_name", str, where),
        model_version=str(_get(raw, "model_version", str | int, where)),
        run_id=_get(raw, "run_id", str, where),
        model_file=_get(raw, "model_file", str, where),
        sha256=_get(raw, "sha256", str, where),
        onnx=onnx,
        model_type=_get(raw, "model_type", str, where),
        target=_get(raw, "target", str, where),
        features=tuple(parsed),
        classes=tuple(classes),
        git_commit=_get(raw, "git_commit", str, where),
        data_hash=_get(raw, "data_hash", str, where),
        library_versions={str(k): str(v) for k, v in versions.items()},
        created=_get(raw, "created", str, where),
        task=task,
    )


def _feature(item: dict[str, Any], where: str) -> Feature:
    name = _get(item, "name", str, where)
    dtype = _get(item, "dtype", str, where)
    kind = item.get("kind", "numeric")  # cards written before categorical columns existed
    nullable = item.get("nullable", False)
    if kind not in KINDS or not isinstance(nullable, bool):
        raise ModelLoadError(
            f"{where} ({name!r}): 'kind' must be one of {list(KINDS)} and 'nullable' a boolean"
        )
    categories = item.get("categories")
    if kind == "numeric":
        if dtype not in NUMERIC_DTYPES:
            raise ModelLoadError(
                f"{where}: feature {name!r} has dtype {dtype!r}; serving handles "
                f"{', '.join(sorted(NUMERIC_DTYPES))} (or kind 'categorical', dtype "
                f"{TEXT_DTYPE!r})"
            )
        if categories is not None:
            raise ModelLoadError(f"{where}: numeric feature {name!r} cannot list categories")
        return Feature(name=name, dtype=dtype, nullable=nullable)
    if dtype != TEXT_DTYPE:
        raise ModelLoadError(
            f"{where}: categorical feature {name!r} must have dtype {TEXT_DTYPE!r}, not {dtype!r}"
        )
    if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
        raise ModelLoadError(
            f"{where}: categorical feature {name!r} needs 'categories', a list of strings"
        )
    return Feature(
        name=name, dtype=dtype, kind=kind, nullable=nullable, categories=tuple(categories)
    )


def find_golden(path: Path | None, model_dir: Path) -> Path | None:
    """The golden rows the validate stage wrote: ``path`` if given, else the first that exists
    of MODEL_DIR/golden.json and MODEL_DIR/../reports/golden.json."""
    if path is not None:
        return path
    candidates = (model_dir / "golden.json", model_dir.parent / "reports" / "golden.json")
    return next((c for c in candidates if c.exists()), None)


def read_golden(path: Path) -> GoldenSet:
    """``golden.json`` as a :class:`GoldenSet`."""
    raw = read_json(path)
    rows = raw.get("rows") if isinstance(raw, dict) else None
    if not isinstance(rows, list) or not rows:
        raise ModelLoadError(f"{path}: 'rows' must be a non-empty list")
    try:
        parsed = tuple(
            GoldenRow(
                inputs=dict(row["inputs"]),
                label=_label(row["label"]),
                probabilities=tuple(float(p) for p in row["probabilities"]),
            )
            for row in rows
        )
        return GoldenSet(
            features=tuple(str(f) for f in raw["features"]),
            classes=tuple(raw["classes"]),
            rows=parsed,
        )
    except KeyError as exc:
        raise ModelLoadError(f"{path}: missing key {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"{path}: not a golden set ({exc})") from None


def read_holdout(path: Path | None, model_dir: Path) -> dict[str, float] | None:
    """Holdout metrics (flat JSON of floats), or None when no candidate file exists."""
    candidates = (
        [path]
        if path
        else [model_dir / "holdout.json", model_dir.parent / "metrics" / "holdout.json"]
    )
    for candidate in candidates:
        if candidate.exists():
            raw = read_json(candidate)
            if not isinstance(raw, dict):
                raise ModelLoadError(f"{candidate}: holdout metrics must be a JSON object")
            return {str(k): float(v) for k, v in raw.items() if _is_number(v)}
    return None


def _label(value: Any) -> Label:
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        return value
    raise TypeError(f"label {value!r} is not a number or a string")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _get(raw: dict[str, Any], key: str, kind: Any, where: str) -> Any:
    if key not in raw:
        raise ModelLoadError(f"{where}: missing key {key!r}")
    value = raw[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ModelLoadError(f"{where}: {key!r} has the wrong type ({type(value).__name__})")
    return value
