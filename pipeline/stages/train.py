"""Stage `train`: fit, export ONNX, log to MLflow, register a version, write models/."""

from __future__ import annotations

import logging
import time
from typing import Any

import pandas as pd
import sklearn

from pipeline import artifacts, config, console, provenance
from pipeline.config import Params, Settings
from pipeline.ml import data, parallel, tracking, training
from serving.card import Feature, OnnxEntry

log = logging.getLogger("pipeline")


def train(params: Params, settings: Settings) -> dict[str, Any]:
    split = artifacts.read_split()
    features, target = data.features_and_target(split.train, params.data.target)
    test_x, _ = data.features_and_target(split.test, params.data.target)
    everything = pd.concat([split.train, split.test])[params.data.target]
    task, why = data.infer_task(everything, params.train.task)
    columns = training.columns_of(features)
    log.info(
        "fitting %s for %s (%s) on %d rows: %d numeric, %d categorical column(s)",
        params.train.model,
        task,
        why,
        len(features),
        len(columns.numeric),
        len(columns.categorical),
    )
    estimator = training.build(params.train, seed=params.base.seed, task=task, columns=columns)
    with parallel.backend(params.train.parallel) as backend:
        started = time.perf_counter()
        model = training.fit(estimator, features, target, task=task)
        fit_seconds = time.perf_counter() - started
    log.info(
        "fitted in %.2f s (joblib backend %s, %d worker(s), scheduler %s)",
        fit_seconds,
        backend.name,
        backend.workers,
        backend.scheduler,
    )
    training.check_servable(model)
    card_features = training.card_features(model, features)
    score = float(model.score(training.model_input(features), target))
    train_metrics = {"train_r2" if task == "regression" else "train_accuracy": score}
    onnx = _export_onnx(model, _servable_rows(test_x, card_features), card_features, task)
    model_path = training.write_model(model)
    facts = {
        "git_commit": provenance.git_commit(),
        "data_hash": provenance.data_hash(artifacts.PREPARED_DIR),
    }
    log.info("logging the run to MLflow at %s", tracking.redact(settings.mlflow_tracking_uri))
    tracking.connect(settings, experiment=params.train.experiment)
    registered = tracking.log_training(
        model=model,
        registered_name=params.train.registered_model_name,
        params={
            **training.hyperparameters(params.train),
            "task": task,
            "seed": params.base.seed,
            "data.source": params.data.source,
            "data.test_size": params.data.test_size,
        },
        metrics={**train_metrics, "fit_seconds": fit_seconds},  # the time: MLflow only
        tags={
            "mlflow.source.git.commit": facts["git_commit"],
            "dvc.data_hash": facts["data_hash"],
            # a queued DVC experiment (a sweep trial): which one, to join the two records
            **({"dvc.exp_name": settings.dvc_exp_name} if settings.dvc_exp_name else {}),
            **backend.tags(),  # where the fit ran; the model is the same whichever
        },
        parent_run_id=settings.sweep_parent_run_id,
        train_frame=split.train,
        target=params.data.target,
        input_example=training.model_input(features.head(3)),
        pip_requirements=[f"scikit-learn=={sklearn.__version__}"],
    )
    card = training.model_card(
        model=model,
        features=card_features,
        target=params.data.target,
        task=task,
        model_type=params.train.model,
        registered=registered.__dict__,
        sha256=training.sha256_file(model_path),
        onnx=onnx,
        provenance=facts,
    )
    artifacts.write_card(card)
    artifacts.write_metrics(train_metrics, artifacts.TRAIN_METRICS)
    log.info(
        "registered %s version %s (run %s)", registered.name, registered.version, registered.run_id
    )
    return {**registered.__dict__, **train_metrics}


def _servable_rows(frame: pd.DataFrame, features: tuple[Feature, ...]) -> pd.DataFrame:
    """The holdout rows serving would take: none missing a value where no null is allowed."""
    strict = [f.name for f in features if not f.nullable]
    return frame[frame[strict].notna().all(axis=1)].reset_index(drop=True)


def _export_onnx(
    model: Any, sample: pd.DataFrame, features: tuple[Feature, ...], task: str
) -> OnnxEntry | None:
    """model.onnx when skl2onnx converts the pipeline and agrees with it on the holdout rows."""
    from pipeline.ml import onnx_export

    if sample.empty:
        log.warning("ONNX export skipped: no holdout row to check it on")
        return None
    graph = onnx_export.to_onnx(model, features=features, task=task)
    if graph is None:
        return None
    parity = onnx_export.check_parity(model, graph, sample, features=features, task=task)
    what = "relative |y - y_sklearn|" if task == "regression" else "|p - p_sklearn|"
    if not parity.ok:
        log.warning(
            "ONNX export dropped: max %s = %.2g > %.0g or labels differ on rows %s; serving "
            "will use scikit-learn",
            what,
            parity.max_abs_diff,
            parity.tolerance,
            list(parity.mismatched_rows)[:5],
        )
        return None
    path = artifacts.ONNX_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(graph)
    log.info(
        "ONNX export agrees on %d holdout rows (max %s %.2g <= %.0g)",
        parity.n_rows,
        what,
        parity.max_abs_diff,
        parity.tolerance,
    )
    return OnnxEntry(
        file=path.name,
        sha256=training.sha256_file(path),
        max_abs_diff=parity.max_abs_diff,
        tolerance=parity.tolerance,
    )


def main() -> None:
    console.run_stage(lambda: train(config.load_params(), config.load_settings()))


if __name__ == "__main__":
    main()
