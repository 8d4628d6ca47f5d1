"""Stage `validate`: holdout metrics, plots, gates, champion comparison, golden set."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

from pipeline import artifacts, config, console
from pipeline.config import CLASSIFICATION_METRICS, REGRESSION_METRICS, Params, Settings
from pipeline.errors import ConfigError, GateFailed
from pipeline.ml import data, evaluation, gates, tracking, training

log = logging.getLogger("pipeline")


@dataclass(frozen=True)
class Verdict:
    metrics: dict[str, float]
    rows: list[gates.GateRow]
    champion_version: str | None


def validate(params: Params, settings: Settings) -> Verdict:
    split = artifacts.read_split()
    features, target = data.features_and_target(split.test, params.data.target)
    model = training.load_model()
    card = artifacts.read_card()
    task = card.task
    known = REGRESSION_METRICS if task == "regression" else CLASSIFICATION_METRICS
    other = [str(m) for m in params.validate_.gates if m not in known]
    if other:
        raise ConfigError(
            f"params.yaml: validate.gates: {other} are not {task} metrics; a {task} model is "
            f"scored on {list(known)}"
        )
    candidate = tracking.RegisteredModel(card.run_id, card.model_name, card.model_version)
    scores = evaluation.holdout_metrics(model, features, target, task=task)
    artifacts.write_metrics(scores, artifacts.HOLDOUT_METRICS)
    plots = evaluation.write_plots(model, features, target, artifacts.PLOTS_DIR, task=task)
    tracking.connect(settings, experiment=params.train.experiment)
    champion_scores, champion_version = None, None
    if params.validate_.champion.enabled:
        found = tracking.champion(candidate.name, alias=params.validate_.champion.alias)
        if found is not None and found[0] != candidate.version:
            champion_version = found[0]
            log.info(
                "comparing with champion version %s (@%s) on the same holdout rows",
                champion_version,
                params.validate_.champion.alias,
            )
            champion_scores = evaluation.holdout_metrics(found[1], features, target, task=task)
        elif found is None:
            log.info("no champion holds @%s yet: thresholds only", params.validate_.champion.alias)
    rows = gates.evaluate(
        gates={str(k): v for k, v in params.validate_.gates.items()},
        candidate=scores,
        champion=champion_scores,
    )
    report = artifacts.GateReport(
        passed=gates.passed(rows),
        model=artifacts.ModelRef(name=candidate.name, version=candidate.version),
        champion=artifacts.ChampionRef(
            alias=params.validate_.champion.alias, version=champion_version
        ),
        rows=[artifacts.GateRowRecord(**asdict(row)) for row in rows],
    )
    artifacts.write_gates(report)
    tracking.log_evaluation(
        run_id=candidate.run_id,
        metrics=scores,
        files=[artifacts.HOLDOUT_METRICS, artifacts.GATES, *plots],
    )
    if not report.passed:
        raise GateFailed(
            f"{candidate.name} version {candidate.version} failed "
            f"{sum(not r.passed for r in rows)} quality gate(s); no alias set",
            rows=rows,
        )
    artifacts.write_golden(
        evaluation.golden_set(
            model,
            features,
            rows=params.validate_.golden_rows,
            schema=card.features,
            task=task,
        )
    )
    if settings.sweep_parent_run_id is not None:
        # A sweep trial: the sweep ranks the trials; `dvc exp apply` + `dvc repro` re-runs this
        # stage in the workspace for the winner, and that run sets @candidate (docs/sweep.md).
        log.info(
            "%s version %s passed every gate (sweep trial: @candidate left alone)",
            candidate.name,
            candidate.version,
        )
        return Verdict(scores, rows, champion_version)
    tracking.move_alias(settings, name=candidate.name, version=candidate.version, alias="candidate")
    log.info(
        "%s version %s passed every gate: alias @candidate set", candidate.name, candidate.version
    )
    return Verdict(scores, rows, champion_version)


def _run() -> None:
    verdict = validate(config.load_params(), config.load_settings())
    console.gate_table(verdict.rows, console=console.out)


def main() -> None:
    console.run_stage(_run)


if __name__ == "__main__":
    main()
