"""Typed, validated configuration: `Params` (params.yaml) and `Settings` (environment).

params.yaml is read once, here, into frozen pydantic models with `extra="forbid"`, so a typo is an
error that names the key. Stages receive the sub-model they need, never the raw dict.
Environment settings (where MLflow lives, ...) are separate: they describe the machine, not the
experiment, and do not belong in a DVC-tracked file.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.errors import ConfigError

#: `builtin:<name>` data sets: scikit-learn's bundled tables and the Palmer penguins (shipped in
#: the `palmerpenguins` package: categorical columns, missing values, string labels). None of
#: them downloads anything.
BUILTIN_DATASETS = ("breast_cancer", "wine", "penguins", "diabetes")
ModelType = Literal["logistic_regression", "random_forest", "gradient_boosting", "custom"]
Task = Literal["classification", "regression"]
CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss")
REGRESSION_METRICS = ("rmse", "mae", "r2")
Metric = Literal[
    "accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "rmse", "mae", "r2"
]
LOWER_IS_BETTER: frozenset[str] = frozenset({"log_loss", "rmse", "mae"})
#: Where a `train.model: custom` factory module must live, so that DVC tracks it: dvc.yaml lists
#: this folder as a dependency of `train` (an installed package is pinned by the lock instead).
CUSTOM_DIR = "estimators"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BaseParams(_Section):
    seed: int = Field(description="one seed for the split and every estimator")


class DataParams(_Section):
    source: str = Field(
        description="'builtin:breast_cancer', 'builtin:wine', or a .csv/.parquet path"
    )
    target: str = Field(min_length=1)
    test_size: float = Field(gt=0.0, lt=1.0)
    expectations: Path = Field(description="Great Expectations suite (JSON) run on the raw data")
    features: list[str] | None = Field(
        default=None, min_length=1, description="the model's columns (default: all but target)"
    )
    drop: list[str] = Field(default_factory=list, description="columns kept out of the model")

    @model_validator(mode="after")
    def _source_exists(self, info: ValidationInfo) -> DataParams:
        if self.features is not None and self.drop:
            raise ValueError("set data.features or data.drop, not both")
        for key, names in (("features", self.features or []), ("drop", self.drop)):
            if self.target in names:
                raise ValueError(f"data.{key} names the target {self.target!r}")
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise ValueError(f"data.{key} repeats {repeated}")
        if self.source.startswith("builtin:"):
            name = self.source.removeprefix("builtin:")
            if name not in BUILTIN_DATASETS:
                raise ValueError(f"unknown built-in data set {name!r}; allowed: {BUILTIN_DATASETS}")
        else:
            path = Path(self.source)
            if path.suffix.lower() not in {".csv", ".parquet"}:
                raise ValueError(f"source {self.source!r} must end in .csv or .parquet")
            if not path.is_file():
                raise ValueError(f"source file {self.source!r} does not exist")
        suite_optional = bool((info.context or {}).get("suite_optional"))
        if not self.expectations.is_file() and not suite_optional:
            raise ValueError(
                f"expectations suite {str(self.expectations)!r} does not exist (write one with "
                "`pipeline suggest-expectations --output PATH`)"
            )
        return self


class LogisticRegressionParams(_Section):
    C: float = Field(default=1.0, gt=0)
    max_iter: int = Field(default=1000, ge=1)


class RandomForestParams(_Section):
    n_estimators: int = Field(default=200, ge=1)
    max_depth: int | None = Field(default=None, ge=1)
    min_samples_leaf: int = Field(default=1, ge=1)


class GradientBoostingParams(_Section):
    n_estimators: int = Field(default=100, ge=1)
    learning_rate: float = Field(default=0.1, gt=0)
    max_depth: int = Field(default=3, ge=1)


class CustomParams(_Section):
    """`train.model: custom`: your own estimator, built by ``factory(**params)``.

    The factory may also take ``numeric`` and ``categorical`` keyword arguments: the positions
    of those columns in the model's input (see README "Your own estimator")."""

    factory: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$",
        description="'package.module:function' returning a scikit-learn estimator or pipeline",
    )
    params: dict[str, Any] = Field(default_factory=dict, description="passed to the factory")


class ParallelParams(_Section):
    """Where the estimators' joblib work runs (random_forest's trees, a custom factory's
    searches): ``loky`` processes on this machine, or ``dask`` workers (a local cluster started
    for the run, or the scheduler at ``address``). The fitted model is the same either way."""

    backend: Literal["loky", "dask"] = "loky"
    n_jobs: int = Field(
        default=-1,
        ge=-1,
        le=1024,
        description="parallel jobs; -1: every core (loky), every worker thread (dask)",
    )
    address: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        pattern=r"^([a-z][a-z0-9+]*://)?[^\s/]+$",
        description="a running Dask scheduler, e.g. tcp://127.0.0.1:8786 (backend dask only)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ParallelParams:
        if self.n_jobs == 0:
            raise ValueError("n_jobs must be -1 (all) or at least 1, not 0")
        if self.address is not None and self.backend != "dask":
            raise ValueError(
                f"address is set ({self.address!r}) but backend is "
                f"{self.backend!r}: an address names a Dask scheduler; set backend: dask, or "
                "remove address"
            )
        if self.backend == "dask" and importlib.util.find_spec("distributed") is None:
            raise ValueError(
                "backend is 'dask' but the package 'distributed' is not "
                "installed: run `make install` (requirements/pipeline.lock has it) or "
                "`pip install distributed`; or set backend: loky"
            )
        return self


class TrainParams(_Section):
    model: ModelType
    task: Task | None = Field(
        default=None, description="classification | regression; inferred from the target if unset"
    )
    experiment: str = Field(min_length=1)
    registered_model_name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    logistic_regression: LogisticRegressionParams = LogisticRegressionParams()
    random_forest: RandomForestParams = RandomForestParams()
    gradient_boosting: GradientBoostingParams = GradientBoostingParams()
    custom: CustomParams | None = None
    parallel: ParallelParams = ParallelParams()

    @model_validator(mode="after")
    def _custom_is_set(self) -> TrainParams:
        if self.model == "custom" and self.custom is None:
            raise ValueError(
                "train.model is 'custom' but train.custom is missing: set train.custom.factory "
                "('package.module:function') and optionally train.custom.params"
            )
        return self


class Gate(_Section):
    """One metric's gate, in the manner of MLflow's MetricThreshold.

    `threshold` is absolute. Against the champion, `min_absolute_change` and
    `min_relative_change` bound candidate - champion (in the metric's better direction);
    negative values are tolerated regressions, positive values demand an improvement.
    """

    threshold: float | None = None
    min_absolute_change: float | None = None
    min_relative_change: float | None = None
    greater_is_better: bool | None = None


class ChampionParams(_Section):
    enabled: bool = True
    alias: str = "production"


class ValidateParams(_Section):
    gates: dict[Metric, Gate]
    champion: ChampionParams = ChampionParams()
    golden_rows: Annotated[int, Field(ge=1, le=1000)] = 40


class ImageParams(_Section):
    name: str = Field(min_length=1, pattern=r"^[a-z0-9]+([._/-][a-z0-9]+)*$")
    base: str = Field(min_length=1, description="BASE_IMAGE; pulled if absent")
    fallback_base: str = Field(
        min_length=1, description="used when `base` is neither present nor pullable"
    )
    max_size_mb: float = Field(gt=0)
    labels: dict[str, str] = Field(default_factory=dict)
    smoke_timeout_s: float = Field(default=60, gt=0)


class ContractParams(_Section):
    """Budgets for the contract tests run against the built container."""

    latency_p95_ms: float = Field(gt=0, description="p95 of sequential 1-row requests")
    latency_requests: int = Field(default=300, ge=20)
    time_to_ready_s: float = Field(gt=0, description="container start to ready")
    fuzz_cases: int = Field(default=500, ge=1, description="schemathesis cases, at least")
    memory_mb: int = Field(default=512, ge=64, description="container memory limit")
    cpus: float = Field(default=1.0, gt=0, description="container CPU limit")
    probability_tolerance: float | None = Field(
        default=None,
        ge=0,
        description=(
            "max |p - p_golden|; may only tighten the tolerance the serving runtime declares "
            "(serving.runtime: ONNX 1e-5, scikit-learn 1e-12); unset: the runtime's own"
        ),
    )


class Params(_Section):
    base: BaseParams
    data: DataParams
    train: TrainParams
    validate_: ValidateParams = Field(alias="validate")
    image: ImageParams
    contract: ContractParams


class Settings(BaseSettings):
    """Machine settings from the environment; nothing here is part of an experiment."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    mlflow_tracking_uri: str = Field(
        default="sqlite:///mlflow.db",
        description="MLFLOW_TRACKING_URI; default: a SQLite store in the working directory",
    )
    mlflow_artifacts_dir: Path = Field(
        default=Path("mlartifacts"),
        description="MLFLOW_ARTIFACTS_DIR; where a local store keeps artifacts",
    )
    # The release flow (push, attest, promote, rollback): see docs/release.md.
    registry: str = Field(
        default="ghcr.io",
        pattern=r"^[A-Za-z0-9.\-]+(:[0-9]+)?$",
        description="REGISTRY; host[:port] of the OCI registry, e.g. 127.0.0.1:5000",
    )
    image_repository: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]+([._/-][a-z0-9]+)*$",
        description="IMAGE_REPOSITORY; e.g. acme/breast-cancer-classifier (required to release)",
    )
    registry_insecure: bool = Field(
        default=False, description="REGISTRY_INSECURE; plain HTTP (a registry on loopback)"
    )
    registry_username: str | None = Field(default=None, description="REGISTRY_USERNAME")
    registry_password: SecretStr | None = Field(
        default=None, description="REGISTRY_PASSWORD; on GitHub Actions: the GITHUB_TOKEN"
    )
    registry_token: SecretStr | None = Field(
        default=None, description="REGISTRY_TOKEN; a bearer token sent as is"
    )
    registry_timeout_s: float = Field(
        default=30, gt=0, description="REGISTRY_TIMEOUT_S; per request to the registry"
    )
    deploy_dir: Path = Field(
        default=Path("deploy"), description="DEPLOY_DIR; the desired state, one YAML per env"
    )
    promote_lock_timeout_s: float = Field(
        default=120, ge=0, description="PROMOTE_LOCK_TIMEOUT_S; wait for a running promotion"
    )
    release_signing_key: SecretStr | None = Field(
        default=None,
        description="RELEASE_SIGNING_KEY; the release key's PEM (the release job's secret)",
    )
    release_signing_key_file: Path | None = Field(
        default=None, description="RELEASE_SIGNING_KEY_FILE; or the key's file (`pipeline keygen`)"
    )
    release_signers_dir: Path = Field(
        default=Path("release/signers"),
        description="RELEASE_SIGNERS_DIR; the trusted public keys (*.pub), committed",
    )
    # `pipeline sweep` (docs/sweep.md): set by the sweep for its queued trials, and by DVC.
    sweep_parent_run_id: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{32}$",
        description="PIPELINE_SWEEP_PARENT_RUN_ID; a sweep trial: nest the run under this one, "
        "leave @candidate alone",
        validation_alias=AliasChoices("PIPELINE_SWEEP_PARENT_RUN_ID"),
    )
    dvc_exp_name: str | None = Field(
        default=None,
        description="DVC_EXP_NAME; set by DVC in a queued experiment, tagged on its MLflow run",
        validation_alias=AliasChoices("DVC_EXP_NAME"),
    )
    promoted_by: str | None = Field(
        default=None,
        validation_alias=AliasChoices("PROMOTED_BY", "GITHUB_ACTOR"),
        description="PROMOTED_BY (or GITHUB_ACTOR); default: the git user, else the login",
    )


def _describe(err: ValidationError, raw: object) -> str:
    parts = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        key = key.replace("validate_", "validate")
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see params.yaml in the template)"
        value = e.get("input")
        shown = "" if e["type"] in ("missing", "extra_forbidden") else f" (got {value!r})"
        parts.append(f"{key}: {msg}{shown}")
    return "; ".join(parts)


def load_params(path: Path = Path("params.yaml"), *, suite_optional: bool = False) -> Params:
    """Read and validate params.yaml; any problem is a `ConfigError` naming the key.

    ``suite_optional``: ``data.expectations`` need not exist yet (while one is being written)."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} not found: run from the project root") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must be a mapping of sections (base, data, train, validate)")
    try:
        return Params.model_validate(raw, context={"suite_optional": suite_optional})
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc, raw)}") from None


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(f"environment: {_describe(exc, None)}") from None
