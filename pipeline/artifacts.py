"""Every file that crosses a stage boundary: its path, its typed record, its one reader.

These files are the system's real interfaces (dvc.yaml lists them as outs, the image, the
release commands and the CI summary read them), so each is named once, here. A missing file is
a :class:`MissingInputError` naming the stage that writes it; a file that is there but is not
its record is an :class:`ArtifactError`.

==============================  =====================  ==========================================
file                            written by             record
==============================  =====================  ==========================================
data/prepared/{train,test}.pq   prepare                :class:`Split` (two DataFrames)
reports/data_docs/              prepare                Great Expectations Data Docs (HTML)
models/model.pkl, model.onnx    train                  the fitted pipeline, its ONNX graph
models/model.json               train                  :class:`serving.card.ModelCard`
metrics/train.json              train                  flat metrics
metrics/holdout.json            validate               flat metrics
reports/gates.json              validate               :class:`GateReport`
reports/golden.json             validate               :class:`serving.card.GoldenSet`
plots/                          validate               DVC plots (CSV) and PNGs
build/image.json                containerize, push     :class:`ImageRecord`
build/contract-report.json      contract-test          :class:`ContractReport`
==============================  =====================  ==========================================

The model card and the golden set are read by the serving image as well, so their reader and
writer live in :mod:`serving.card`; this module hands them on with the pipeline's errors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.errors import ArtifactError, MissingInputError
from serving import card as serving_card
from serving.card import GoldenSet, ModelCard
from serving.errors import ModelLoadError

if TYPE_CHECKING:
    import pandas as pd

PREPARED_DIR = Path("data/prepared")
TRAIN_SPLIT = PREPARED_DIR / "train.parquet"
TEST_SPLIT = PREPARED_DIR / "test.parquet"
DATA_DOCS = Path("reports/data_docs")
MODEL_DIR = Path("models")
MODEL_FILE = MODEL_DIR / "model.pkl"
ONNX_FILE = MODEL_DIR / "model.onnx"
MODEL_CARD = MODEL_DIR / serving_card.CARD_FILE
TRAIN_METRICS = Path("metrics/train.json")
HOLDOUT_METRICS = Path("metrics/holdout.json")
GATES = Path("reports/gates.json")
GOLDEN = Path("reports/golden.json")
PLOTS_DIR = Path("plots")
IMAGE = Path("build/image.json")
CONTRACT_REPORT = Path("build/contract-report.json")

#: which stage (or command) writes each file: what a MissingInputError tells the user to run
WRITER: dict[Path, str] = {
    TRAIN_SPLIT: "the prepare stage (`dvc repro prepare`)",
    TEST_SPLIT: "the prepare stage (`dvc repro prepare`)",
    MODEL_FILE: "the train stage (`dvc repro train`)",
    MODEL_CARD: "the train stage (`dvc repro train`)",
    TRAIN_METRICS: "the train stage (`dvc repro train`)",
    HOLDOUT_METRICS: "the validate stage (`dvc repro validate`)",
    GATES: "the validate stage (`dvc repro validate`)",
    GOLDEN: "the validate stage (`dvc repro validate`)",
    IMAGE: "the containerize stage (`dvc repro` or `make repro`)",
    CONTRACT_REPORT: "`pipeline contract-test` (or `make contract-test`)",
}
R = TypeVar("R", bound=BaseModel)


def missing(path: Path) -> MissingInputError:
    """The error for a stage input that is not there, naming what writes it."""
    writer = WRITER.get(path, "the stage that writes it (`dvc repro`)")
    return MissingInputError(f"{path} does not exist: run {writer} first")


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- data/prepared ---------------------------------------------------------------------------


class Split:
    """The stratified split the prepare stage wrote (target column included)."""

    def __init__(self, *, train: pd.DataFrame, test: pd.DataFrame) -> None:
        self.train = train
        self.test = test


def write_split(split: Split, directory: Path = PREPARED_DIR) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    split.train.to_parquet(directory / TRAIN_SPLIT.name, index=False)
    split.test.to_parquet(directory / TEST_SPLIT.name, index=False)


def read_split(directory: Path = PREPARED_DIR) -> Split:
    import pandas as pd
    import pyarrow

    frames = {}
    for name in (TRAIN_SPLIT.name, TEST_SPLIT.name):
        path = directory / name
        if not path.is_file():
            raise missing(PREPARED_DIR / name)
        try:
            frames[name] = pd.read_parquet(path)
        except (OSError, ValueError, pyarrow.ArrowException) as exc:
            raise ArtifactError(
                f"{path} is not a Parquet table ({exc}): run the prepare stage again "
                "(`dvc repro -f prepare`)"
            ) from None
    return Split(train=frames[TRAIN_SPLIT.name], test=frames[TEST_SPLIT.name])


# -- models/ and reports/golden.json (records owned by serving.card) --------------------------


def read_card(path: Path = MODEL_CARD) -> ModelCard:
    if not path.is_file():
        raise missing(path)
    try:
        return serving_card.read_card(path)
    except ModelLoadError as exc:
        raise ArtifactError(f"{exc}: run the train stage again (`dvc repro -f train`)") from None


def write_card(card: ModelCard, path: Path = MODEL_CARD) -> Path:
    return serving_card.write_card(card, path)


def read_golden(path: Path = GOLDEN) -> GoldenSet:
    if not path.is_file():
        raise missing(path)
    try:
        return serving_card.read_golden(path)
    except ModelLoadError as exc:
        raise ArtifactError(
            f"{exc}: run the validate stage again (`dvc repro -f validate`)"
        ) from None


def write_golden(golden: GoldenSet, path: Path = GOLDEN) -> Path:
    return serving_card.write_golden(golden, path)


# -- metrics -----------------------------------------------------------------------------------


def write_metrics(metrics: dict[str, float], path: Path) -> Path:
    return _write(metrics, path)


def read_metrics(path: Path = HOLDOUT_METRICS) -> dict[str, float]:
    raw = _load(path)
    if not isinstance(raw, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in raw.values()
    ):
        raise ArtifactError(f"{path} must be a flat JSON object of numbers")
    return {str(k): float(v) for k, v in raw.items()}


# -- reports/gates.json ------------------------------------------------------------------------


class GateRowRecord(Record):
    gate: str
    metric: str
    requirement: str
    champion: float | None
    candidate: float
    passed: bool
    note: str = ""


class ModelRef(Record):
    name: str
    version: str


class ChampionRef(Record):
    alias: str
    version: str | None


class GateReport(Record):
    """The gate table of the validate stage, written whether the gates passed or not."""

    passed: bool
    model: ModelRef
    champion: ChampionRef
    rows: list[GateRowRecord]


def read_gates(path: Path = GATES) -> GateReport:
    return _read_record(path, GateReport)


def write_gates(report: GateReport, path: Path = GATES) -> Path:
    return _write(report.model_dump(mode="json"), path)


# -- build/image.json --------------------------------------------------------------------------


class BaseImage(Record):
    ref: str
    id: str
    fallback: bool


class BuildSummary(Record):
    seconds: float
    steps: int
    cached: list[int]


class Pushed(Record):
    repository: str
    digest: str
    ref: str
    tags: list[str]
    pushed_at: str
    seconds: float


class ImageRecord(Record):
    """What the containerize stage built (and, after `pipeline push`, where it went)."""

    image: str  # name:content-hash tag
    id: str  # the image id (config digest)
    tags: list[str]
    labels: dict[str, str]
    size_bytes: int
    size_mb: float
    max_size_mb: float
    content_hash: str
    base: BaseImage
    build: BuildSummary | None  # None: skipped, an image with the same content hash existed
    smoke: dict[str, Any]
    engine: str
    digest: str | None = None
    registry: Pushed | None = None


def read_image(path: Path = IMAGE) -> ImageRecord:
    return _read_record(path, ImageRecord)


def write_image(record: ImageRecord, path: Path = IMAGE) -> Path:
    return _write(record.model_dump(mode="json"), path)


# -- build/contract-report.json ----------------------------------------------------------------

REPORT_SCHEMA: Literal["gitops-ml-pipeline/contract-report/v1"] = (
    "gitops-ml-pipeline/contract-report/v1"
)


class TestedImage(Record):
    ref: str
    id: str
    digests: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    digest: str | None = None


class TestedModel(Record):
    model_name: str
    model_version: str
    run_id: str
    sha256: str


class HostileCase(Record):
    """One case of tests/hostile: what the server answered, and how it came out of it."""

    name: str
    statuses: dict[str, int]  # status (or "closed") -> answers
    seconds: float
    liveness_max_ms: float  # slowest /v2/health/live answer while the case ran
    liveness_probes: int
    ready: int  # /v2/health/ready after the case
    golden: bool  # a golden row got the validated label after the case
    survived: bool  # all of the above held, and the container's own checks
    problems: list[str]
    peak_mb: float | None = None  # the container's memory high-water mark (None: no container)
    peak_since: str | None = None  # "case start" (reset before the case) or "container start"
    memory_source: str | None = None
    memory_limit_mb: float | None = None
    container: dict[str, Any] | None = None  # status, oom_killed, restarts after the case


class HostileReport(Record):
    """The hostile-input suite's part of the evidence: every case, and whether all of them
    passed (a test of the suite that failed for any other reason fails it too)."""

    passed: bool
    cases: list[HostileCase]
    peak_mb: float | None  # the highest case peak
    memory_limit_mb: float | None


class ContractReport(Record):
    """The evidence `pipeline contract-test` writes (docs/contract-report.md). A passing
    verdict requires a passing hostile-input section."""

    schema_: Literal["gitops-ml-pipeline/contract-report/v1"] = Field(alias="schema")
    verdict: Literal["pass", "fail"]
    error: str | None
    image: TestedImage
    model: TestedModel
    started: str
    duration_s: float
    time_to_ready_s: float | None
    latency_ms: dict[str, float | None]
    fuzz_cases: int | None
    budgets: dict[str, Any]
    checks: dict[str, dict[str, int]]
    failed: list[str]
    tools: dict[str, str]
    hostile: HostileReport | None = None
    suite: list[str] = Field(default_factory=list)  # every check module the suite has
    pytest_exit: int | None = None  # the suite's exit code (0: every test ran and passed)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _pass_needs_hostile(self) -> ContractReport:
        if self.verdict == "pass" and (
            self.hostile is None or not self.hostile.passed or not self.hostile.cases
        ):
            raise ValueError(
                "verdict 'pass' needs a passing 'hostile' section (tests/hostile): this report "
                "was written without it, or by an older pipeline; run `pipeline contract-test`"
            )
        return self

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def parse_report(raw: Any, *, where: str) -> ContractReport:
    """A report from any source (a file, a registry artifact): ArtifactError if it is not one."""
    try:
        return ContractReport.model_validate(raw)
    except ValidationError as exc:
        raise ArtifactError(f"{where} is not a contract report: {_first_error(exc)}") from None


def read_report(path: Path = CONTRACT_REPORT) -> ContractReport:
    return parse_report(_load(path), where=str(path))


def write_report(report: ContractReport, path: Path = CONTRACT_REPORT) -> Path:
    return _write(report.dump(), path)


# -- shared ------------------------------------------------------------------------------------


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise missing(path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path} is not JSON ({exc}): it was cut short or edited") from None


def _read_record(path: Path, record: type[R]) -> R:
    raw = _load(path)
    try:
        return record.model_validate(raw)
    except ValidationError as exc:
        raise ArtifactError(
            f"{path} is not a {record.__name__} ({_first_error(exc)}): it was edited by hand or "
            f"written by another version; run {WRITER.get(path, 'its stage')} again"
        ) from None


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    return f"{where}: {first['msg']}"


def _write(data: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
