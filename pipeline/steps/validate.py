"""Stage `validate`: holdout metrics, plots, gates, champion comparison, golden set."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline import data, evaluation, gates, tracking, training
from pipeline.config import Params, Settings
from pipeline.errors import GateFailed

log = logging.getLogger("pipeline")
GOLDEN_FILE = Path("reports/golden.json")
GATES_FILE = Path("reports/gates.json")  # the gate table, pass or fail: the CI job summary reads it


@dataclass(frozen=True)
class Verdict:
    metrics: dict[str, float]
    rows: list[gates.GateRow]
    champion_version: str | None


def validate(params: Params, settings: Settings) -> Verdict:
    split = data.read_split(params.data.prepared_dir)
    features, target = data.features_and_target(split.test, params.data.target)
    model = training.load_model(params.train.model_dir)
    card = training.read_card(params.train.model_dir)
    candidate = tracking.RegisteredModel(card["run_id"], card["model_name"], card["model_version"])
    scores = evaluation.holdout_metrics(model, features, target)
    evaluation.write_json(scores, params.validate_.metrics_file)
    plots = evaluation.write_plots(model, features, target, params.validate_.plots_dir)
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
            champion_scores = evaluation.holdout_metrics(found[1], features, target)
        elif found is None:
            log.info("no champion holds @%s yet: thresholds only", params.validate_.champion.alias)
    rows = gates.evaluate(
        gates={str(k): v for k, v in params.validate_.gates.items()},
        candidate=scores,
        champion=champion_scores,
    )
    tracking.log_evaluation(
        run_id=candidate.run_id, metrics=scores, files=[params.validate_.metrics_file, *plots]
    )
    verdict = Verdict(scores, rows, champion_version)
    evaluation.write_json(
        {
            "passed": gates.passed(rows),
            "model": {"name": candidate.name, "version": candidate.version},
            "champion": {"alias": params.validate_.champion.alias, "version": champion_version},
            "rows": [asdict(row) for row in rows],
        },
        GATES_FILE,
    )
    if not gates.passed(rows):
        raise GateFailed(
            f"{candidate.name} version {candidate.version} failed "
            f"{sum(not r.passed for r in rows)} quality gate(s); no alias set",
            rows=rows,
        )
    golden = evaluation.golden_set(model, features, rows=params.validate_.golden_rows)
    evaluation.write_json(golden, GOLDEN_FILE)
    tracking.set_alias(candidate, "candidate")
    log.info(
        "%s version %s passed every gate: alias @candidate set", candidate.name, candidate.version
    )
    return verdict
