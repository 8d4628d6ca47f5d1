"""`pipeline summary`: the Markdown a CI job appends to ``$GITHUB_STEP_SUMMARY``.

It reads only what the run left on disk, so it works after a failed run as well as after a
good one: a section whose input is missing says so and which step did not get that far, and
the gate table of a failed `validate` shows which gate stopped the run.

- ``ci_summary``: metrics, `dvc metrics diff` against the default branch, quality gates, the
  image (digest, size) and the contract test, from metrics/holdout.json, reports/gates.json,
  build/image.json, build/contract-report.json and a ``dvc metrics diff --json`` file.
- ``release_summary``: one environment's state after `pipeline promote`/`rollback`, from
  deploy/<environment>.yaml.

Pure rendering: no network, no registry, no MLflow.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pipeline import artifacts
from pipeline.artifacts import ContractReport, GateReport, ImageRecord
from pipeline.errors import ArtifactError, MissingInputError
from pipeline.release.state import read_state_file

T = TypeVar("T")


@dataclass(frozen=True)
class RunFiles:
    """Where a pipeline run leaves what the summary shows (the defaults are the stages' outs)."""

    metrics: Path = artifacts.HOLDOUT_METRICS
    gates: Path = artifacts.GATES
    image: Path = artifacts.IMAGE
    contract: Path = artifacts.CONTRACT_REPORT
    metrics_diff: Path | None = None


def ci_summary(files: RunFiles, *, diff_base: str = "") -> str:
    """The job summary of a CI pipeline run, whatever point the run reached."""
    image = _optional(artifacts.read_image, files.image)
    contract = _optional(artifacts.read_report, files.contract)
    gates = _optional(artifacts.read_gates, files.gates)
    verdict = _headline(gates=gates, image=image, contract=contract)
    parts = [
        f"## Pipeline: {verdict}",
        _metrics(_optional(artifacts.read_metrics, files.metrics), files.metrics),
        _metrics_diff(files.metrics_diff, diff_base),
        _gates(gates, files.gates),
        _image(image, files.image),
        _contract(contract, files.contract, image_id=image.id if image else None),
    ]
    return "\n\n".join(parts) + "\n"


def release_summary(state_file: Path) -> str:
    """The summary of a promotion or rollback: what the environment holds now, and before."""
    state = read_state_file(state_file)
    if state is None:
        raise MissingInputError(f"{state_file} does not exist: nothing was promoted")
    previous = state.history[0] if state.history else None
    rows = [
        ("image", f"`{state.image.repository}@{state.image.digest}`"),
        ("model", f"{state.model.name} version {state.model.version}"),
        ("MLflow run", f"`{state.model.mlflow_run_id}`"),
        ("evidence", f"`{state.evidence.digest}` (tag `{state.evidence.tag}`)"),
        ("signed by", state.evidence.signer or "(not recorded)"),
        ("when, who", f"{state.promoted_at}, {state.promoted_by}"),
        ("before", f"`{previous.image.digest}` ({previous.action})" if previous else "nothing"),
        ("state file", f"`{state_file}`, history of {len(state.history)}"),
    ]
    lines = [f"## {state.environment}: {state.action}", "", "| | |", "|---|---|"]
    lines += [f"| {key} | {_cell(value)} |" for key, value in rows]
    return "\n".join(lines) + "\n"


def release_run_summary(image_json: Path, evidence_dir: Path) -> str:
    """The summary of ci.yml's release job: the digest it pushed and the statements it signed
    (read back from the files, not verified here: `pipeline attest` verified them)."""
    image = artifacts.read_image(image_json)
    pushed = image.registry
    lines = ["## Release: " + ("✅ pushed, signed, attested" if pushed else "❌ not pushed"), ""]
    if pushed is not None:
        lines += [f"`{pushed.ref}`", "", f"tags: {_tags(pushed.tags)}", ""]
        lines += [f"Promote it: run the **promote** workflow with image `{pushed.digest}`.", ""]
    lines += ["| evidence | predicate type | signed by key | file |", "|---|---|---|---|"]
    for path in sorted(evidence_dir.glob("*.dsse.json")) if evidence_dir.is_dir() else []:
        try:
            envelope = json.loads(path.read_text())
            statement = json.loads(base64.b64decode(envelope["payload"]))
            keyids = ", ".join(f"`{s.get('keyid', '')[:16]}…`" for s in envelope["signatures"])
            kind = path.name.removesuffix(".dsse.json")
            lines.append(f"| {kind} | `{statement.get('predicateType')}` | {keyids} | `{path}` |")
        except (ValueError, KeyError, TypeError):
            lines.append(f"| ? | not an envelope | | `{path}` |")
    return "\n".join(lines) + "\n"


def _headline(
    *, gates: GateReport | None, image: ImageRecord | None, contract: ContractReport | None
) -> str:
    if gates is not None and not gates.passed:
        return "❌ a quality gate failed; nothing was pushed"
    if contract is not None and contract.verdict != "pass":
        return "❌ the contract test failed"
    if contract is not None:
        pushed = image is not None and image.digest
        return "✅ gates and contract test passed; " + ("pushed" if pushed else "not pushed")
    if image is not None:
        return "⚠️ image built; no contract test ran"
    return "❌ stopped before the image was built"


def _metrics(metrics: Any, path: Path) -> str:
    if metrics is None:
        return f"### Holdout metrics\n\n_{path} was not written: the run stopped before validate._"
    lines = ["### Holdout metrics", "", "| metric | value |", "|---|---:|"]
    lines += [f"| {name} | {_num(value)} |" for name, value in metrics.items()]
    return "\n".join(lines)


def _metrics_diff(path: Path | None, rev: str) -> str:
    base = f"`{rev}`" if rev else "the default branch"
    title = f"### `dvc metrics diff` against {base}"
    if path is None:
        return f"{title}\n\n_not computed_"
    diff = _json(path)
    if diff is None:
        return f"{title}\n\n_{path} was not written_"
    rows = [
        (file, name, change.get("old"), change.get("new"), change.get("diff"))
        for file, metrics in sorted(diff.items())
        for name, change in sorted(metrics.items())
    ]
    if not rows:
        return f"{title}\n\n_no metric changed_"
    lines = [title, "", "| file | metric | before | now | change |", "|---|---|---:|---:|---:|"]
    lines += [
        f"| {f} | {m} | {_num(old)} | {_num(new)} | {_num(d, sign=True)} |"
        for f, m, old, new, d in rows
    ]
    if all(old is None for _, _, old, _, _ in rows):
        lines += ["", f"_{base} has no committed metrics to compare with._"]
    return "\n".join(lines)


def _gates(gates: GateReport | None, path: Path) -> str:
    if gates is None:
        return f"### Quality gates\n\n_{path} was not written: the run stopped before validate._"
    against = (
        f"champion version {gates.champion.version} (@{gates.champion.alias})"
        if gates.champion.version
        else f"no champion (@{gates.champion.alias}): thresholds only"
    )
    verdict = "pass" if gates.passed else "**FAIL**"
    lines = [
        f"### Quality gates: {verdict}",
        "",
        f"{gates.model.name} version {gates.model.version} against {against}.",
        "",
        "| gate | metric | requirement | champion | candidate | result |",
        "|---|---|---|---:|---:|---|",
    ]
    for row in gates.rows:
        result = "pass" if row.passed else "**FAIL**"
        note = f" ({row.note})" if row.note else ""
        cells = [row.gate, row.metric, row.requirement, _num(row.champion)]
        cells += [_num(row.candidate), result + note]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def _image(image: ImageRecord | None, path: Path) -> str:
    if image is None:
        return f"### Image\n\n_{path} was not written: the run stopped before containerize._"
    pushed = image.registry
    rows = [
        ("digest", f"`{image.digest}`" if image.digest else "not pushed"),
        ("pushed as", f"`{pushed.ref}`, tags {_tags(pushed.tags)}" if pushed else "—"),
        ("image", f"`{image.image}` (id `{image.id}`)"),
        ("size", f"{image.size_mb} MB (limit {image.max_size_mb} MB)"),
        ("model", _model_label(image.labels)),
        ("build", _build(image.build)),
    ]
    lines = ["### Image", "", "| | |", "|---|---|"]
    lines += [f"| {key} | {_cell(value)} |" for key, value in rows]
    if image.digest:
        lines += ["", f"Promote it: run the **promote** workflow with image `{image.digest}`."]
    return "\n".join(lines)


def _contract(report: ContractReport | None, path: Path, *, image_id: str | None) -> str:
    if report is None:
        return f"### Contract test\n\n_{path} was not written: the contract test did not run._"
    passed = sum(c.get("passed", 0) for c in report.checks.values())
    failed = sum(c.get("failed", 0) for c in report.checks.values())
    rows = [
        ("verdict", "pass" if report.verdict == "pass" else "**FAIL**"),
        ("tests", f"{passed} passed, {failed} failed"),
        (
            "p95 latency",
            f"{report.latency_ms.get('p95', '?')} ms "
            f"(budget {report.budgets.get('latency_p95_ms')})",
        ),
        ("ready in", f"{report.time_to_ready_s} s"),
        ("fuzz cases", str(report.fuzz_cases)),
    ]
    if report.error:
        rows.append(("error", report.error))
    if image_id and report.image.id != image_id:
        rows.append(("⚠️ stale", f"this report tested image `{report.image.id}`, not `{image_id}`"))
    lines = ["### Contract test", "", "| | |", "|---|---|"]
    lines += [f"| {key} | {_cell(value)} |" for key, value in rows]
    lines += [f"- failed: `{name}`" for name in report.failed]
    return "\n".join(lines)


def _model_label(labels: dict[str, str]) -> str:
    name, version = labels.get("ml.model.name"), labels.get("ml.model.version")
    if not name:
        return "—"
    runtime = labels.get("ml.serving.runtime")
    return f"{name} version {version}" + (f", {runtime} runtime" if runtime else "")


def _build(build: artifacts.BuildSummary | None) -> str:
    if build is None:  # containerize writes null when the tag existed: same inputs, same image
        return "skipped: an image with the same content hash existed"
    return f"{build.seconds} s, {build.steps} steps ({len(build.cached)} cached)"


def _tags(tags: Any) -> str:
    return ", ".join(f"`{t}`" for t in tags or []) or "—"


def _num(value: Any, *, sign: bool = False) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:+.4f}" if sign else f"{value:.4f}"


def _cell(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")


def _optional(read: Callable[[Path], T], path: Path) -> T | None:
    """The record, or None when the run did not get as far as writing it."""
    try:
        return read(path)
    except MissingInputError:
        return None


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path} is not JSON ({exc}): it was cut short or edited") from None
