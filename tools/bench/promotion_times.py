"""Promotion: the time `pipeline promote` takes for our image and for one 500+ MB larger, with
the release helper's own functions (pipeline/promotion.py, pipeline/registry.py: oras-py)
against a real local registry (scripts/registry.sh: Debian's docker-registry).

Each image is pushed once by the engine (timed: that part does grow with size), then gets
evidence, then the two are promoted to ``staging`` in turn, so every promotion really moves the
tag. Evidence: a passing report for exactly that digest, written with the writer `pipeline
contract-test` uses (pipeline.release.contract_runner) and pushed with `pipeline attest`'s
function; the bench does not re-run the contract suite (it is not what is timed, and it takes
minutes). The promotion checks that evidence exactly as it checks a real one.

Then the whole process, as a user runs it: `pipeline promote` and `pipeline rollback`, each a
cold interpreter (:func:`_cli_times`).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tools.bench import containers, servers
from tools.bench.plan import Plan
from tools.bench.projects import ROOT, Trained
from tools.bench.stats import Spread
from tools.template import env as project_env

log = logging.getLogger("bench")
REPOSITORY = "bench/breast-cancer-classifier"
# The passing report needs a hostile-input section too (contract_runner.hostile_report): one
# case that says it is the bench's, with nothing measured.
_HOSTILE_CASE = {
    "statuses": {},
    "seconds": 0.0,
    "liveness_max_ms": 0.0,
    "liveness_probes": 0,
    "ready": 200,
    "golden": True,
    "survived": True,
    "problems": ["not run: evidence written by tools/bench/promotion_times.py"],
}


def _registry(action: str, *, port: int, state: Path) -> None:
    env = dict(os.environ, REGISTRY_PORT=str(port), REGISTRY_DIR=str(state))
    subprocess.run(
        [str(ROOT / "scripts/registry.sh"), action],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )


def large_image(ours: str, *, filler_mb: int, work: Path) -> str:
    """Ours plus ``filler_mb`` MB of random bytes (incompressible: the push really sends them)."""
    context = work / "large-image"
    context.mkdir(parents=True, exist_ok=True)
    (context / "Dockerfile").write_text(
        f"FROM {ours}\nUSER 0\nRUN head -c {filler_mb}M /dev/urandom > /opt/filler.bin\n"
        "USER 10001:10001\nLABEL tools.bench.filler_mb=" + str(filler_mb) + "\n"
    )
    tag = f"bench/promo-large:{filler_mb}mb"
    containers.build(context, tag=tag, log=work / "large-image.log")
    return tag


def run_section(lr: Trained, *, work: Path, plan: Plan) -> dict[str, Any]:
    from pipeline import artifacts
    from pipeline.config import ContractParams, Settings
    from pipeline.image.engine import Engine
    from pipeline.release import evidence as release
    from pipeline.release import promotion, signing
    from pipeline.release.contract_runner import build_report
    from pipeline.release.registry import Registry
    from pipeline.release.sbom import image_sbom

    work.mkdir(parents=True, exist_ok=True)
    port, state = servers.free_port(), work / "registry"
    shutil.rmtree(state, ignore_errors=True)
    _registry("start", port=port, state=state)
    images = {
        "small": lr.image,
        "large": large_image(lr.image, filler_mb=plan.filler_mb, work=work),
    }
    pushed_refs: list[str] = []
    result: dict[str, Any] = {"registry": "Debian docker-registry (CNCF distribution) on loopback"}
    keys = Path(tempfile.mkdtemp(prefix="bench-release-key-"))  # a private key stays out of git
    try:
        settings = Settings(
            registry=f"127.0.0.1:{port}",
            image_repository=REPOSITORY,
            registry_insecure=True,
            deploy_dir=work / "deploy",
            mlflow_tracking_uri=f"sqlite:///{lr.project / 'mlflow.db'}",
            promoted_by="bench",
            release_signers_dir=work / "signers",
            release_signing_key_file=keys / "bench.key",
        )
        shutil.rmtree(work / "signers", ignore_errors=True)
        signing.keygen(
            name="bench",
            private_path=keys / "bench.key",
            signers_dir=work / "signers",
        )
        signer = signing.load_signer(settings)
        engine = Engine.connect()
        repository = f"{settings.registry}/{REPOSITORY}"
        digests: dict[str, str] = {}
        for name, ref in images.items():
            info = engine.image(ref)
            assert info is not None, ref
            started = time.monotonic()
            digests[name] = engine.push(info.id, repository=repository, tags=[name])
            pushed = time.monotonic() - started
            pushed_refs.append(f"{repository}:{name}")
            evidence = build_report(
                image=artifacts.TestedImage(ref=ref, id=info.id, digest=digests[name]),
                model=artifacts.TestedModel(
                    model_name=info.labels["ml.model.name"],
                    model_version=info.labels["ml.model.version"],
                    run_id=info.labels["ml.mlflow.run_id"],
                    sha256=info.labels["ml.model.sha256"],
                ),
                summary={
                    "checks": {c: {"passed": 1} for c in (*release.REQUIRED_CHECKS, "hostile")},
                    "failed": [],
                    "properties": {"fuzz_cases": 1, "hostile:bench": _HOSTILE_CASE},
                },
                time_to_ready_s=None,
                started=datetime.now(UTC),
                tools={"bench": "evidence written by tools/bench/promotion_times.py"},
                budgets=ContractParams(latency_p95_ms=25, time_to_ready_s=10, fuzz_cases=1),
                error=None,
                pytest_exit=0,
                suite=[],
            )
            revision = info.labels.get("org.opencontainers.image.revision", "unknown")
            predicates = {
                "contract": evidence.dump(),
                "sbom": image_sbom(engine, ref),
                "provenance": {
                    "buildDefinition": {
                        "resolvedDependencies": [{"digest": {"gitCommit": revision}}]
                    }
                },
            }
            envelopes = release.signed(
                signer, repository=repository, digest=digests[name], predicates=predicates
            )
            release.attach(
                Registry(settings),
                digest=digests[name],
                envelopes=envelopes,
                keys=signing.trusted_keys(settings),
                where="bench",
            )
            result[name] = {
                "image": ref,
                "size_mb": round(info.size / 1e6, 1),
                "digest": digests[name],
                "push_s": round(pushed, 2),
            }
            log.info("pushed %s (%.0f MB) in %.1f s", name, info.size / 1e6, pushed)
        whole: dict[str, list[float]] = {"small": [], "large": []}
        move: dict[str, list[float]] = {"small": [], "large": []}
        # Not counted: the first promotion in a process imports MLflow and opens its store.
        promotion.promote(settings, ref=digests["small"], env="staging")
        for run in range(plan.promote_runs):
            for name in ("large", "small"):
                started = time.monotonic()
                outcome = promotion.promote(settings, ref=digests[name], env="staging")
                whole[name].append(time.monotonic() - started)
                move[name].append(outcome.seconds * 1000)
                if not outcome.changed:
                    raise RuntimeError(f"promotion {run} of {name} changed nothing")
                log.info(
                    "promote %s run %d/%d: %.3f s (tag move %.0f ms)",
                    name,
                    run + 1,
                    plan.promote_runs,
                    whole[name][-1],
                    move[name][-1],
                )
        for name in ("small", "large"):
            result[name]["promote_s"] = Spread.of(whole[name]).as_dict(3)
            result[name]["tag_move_ms"] = Spread.of(move[name]).as_dict(1)
        result["cli"] = _cli_times(
            settings,
            digest=digests["small"],
            away=lambda: promotion.promote(settings, ref=digests["large"], env="staging"),
            lr=lr,
            runs=plan.cli_runs,
        )
    finally:
        shutil.rmtree(keys, ignore_errors=True)
        _registry("stop", port=port, state=state)
        shutil.rmtree(state, ignore_errors=True)
        for ref in [*pushed_refs, images["large"]]:
            containers.remove_image(ref)
    return result


def _cli_times(
    settings: Any, *, digest: str, away: Callable[[], object], lr: Trained, runs: int
) -> dict[str, Any]:
    """Whole-process wall time of `pipeline promote` and `pipeline rollback` as a user types
    them: a cold interpreter each time (imports, settings, registry, evidence check, MLflow
    alias, tag move, state file), both landing on the small image's ``digest``: before each,
    ``away`` (untimed, in-process) moves staging to the large image, so `pipeline promote
    --image <small>` and the rollback (whose previous entry is then the small image) really
    move the tag. Timed from the host's clock around the child process."""
    found = Path(sys.executable).parent / "pipeline"
    cli = [str(found)] if found.is_file() else [sys.executable, "-m", "pipeline.cli"]
    environ = project_env()
    environ |= {
        "REGISTRY": settings.registry,
        "IMAGE_REPOSITORY": REPOSITORY,
        "REGISTRY_INSECURE": "true",
        "DEPLOY_DIR": str(settings.deploy_dir),
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "PROMOTED_BY": "bench",
        "RELEASE_SIGNERS_DIR": str(settings.release_signers_dir),
    }
    commands = {
        "promote": [*cli, "promote", "--image", digest, "--to", "staging"],
        "rollback": [*cli, "rollback", "--env", "staging", "--reason", "bench"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for run in range(runs):
        for name, command in commands.items():
            away()
            started = time.monotonic()
            done = subprocess.run(
                command, cwd=lr.project, env=environ, capture_output=True, text=True, timeout=300
            )
            times[name].append(time.monotonic() - started)
            if done.returncode != 0:
                raise RuntimeError(
                    f"`pipeline {name}` exited {done.returncode}: {done.stderr.strip()[-500:]}"
                )
            log.info("pipeline %s run %d/%d: %.2f s", name, run + 1, runs, times[name][-1])
    return {name: Spread.of(values).as_dict(3) for name, values in times.items()}
