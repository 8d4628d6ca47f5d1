"""Run this project's GitHub workflows on this machine with act (nektos/act), for real.

Used by the end-to-end tests and by `make workflows`
(`python -m tools.act EVENT [--workflow FILE] [act arguments, e.g. --input k=v, -j JOB]`).

act runs in self-hosted mode (``-P ubuntu-latest=-self-hosted``): each job's steps run directly
on this machine, in a copy of the working tree (files in .gitignore left out), so the workflow
installs its own ``.venv`` with ``make install`` and uses this machine's Docker engine. GitHub is
unreachable, so a ``uses:`` is served locally:

- ``actions/checkout`` of the same repository: act skips it and uses the copy of the working tree
  (with its .git, so ``origin`` is the working copy's ``origin``);
- every other action: the stand-in ``tools/actions/<name>/action.yml`` (``--local-repository``
  for the exact ``owner/name@sha`` the workflow pins). A pinned action without a stand-in is an
  error here, not a silent skip.

The registry and MLflow store come in as workflow variables (``--var``), as on GitHub.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ACT = Path(sys.executable).parent / "act"
STAND_INS = Path(__file__).resolve().parent / "actions"
PLATFORM = "ubuntu-latest=-self-hosted"
USES = re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+)@(?P<ref>[\w.-]+)$")
# act prefixes each line with "[workflow/job]", the name padded with spaces to a common width.
SUMMARY = re.compile(r"^\[(?P<job>[^\]]+?)\s*\]\s+⚙\s+Summary - (?P<first>.*)$")
RESULT = re.compile(r"^\[(?P<job>[^\]]+?)\s*\]\s+🏁\s+Job (?P<result>succeeded|failed)")


@dataclass(frozen=True)
class ActRun:
    """One act invocation: its exit code, whole log, wall time and uploaded artifacts."""

    returncode: int
    output: str
    seconds: float
    artifacts: Path

    def summaries(self) -> dict[str, str]:
        """Each job's $GITHUB_STEP_SUMMARY as act printed it, by ``workflow/job`` name."""
        found: dict[str, list[str]] = {}
        current: list[str] | None = None
        for line in self.output.splitlines():
            match = SUMMARY.match(line)
            if match:
                current = found.setdefault(match["job"], [])
                current.append(match["first"])
            elif line.startswith("["):
                current = None
            elif current is not None:
                current.append(line)
        return {job: "\n".join(lines) for job, lines in found.items()}

    def jobs(self) -> dict[str, str]:
        """``workflow/job`` name -> ``succeeded`` or ``failed``."""
        return {m["job"]: m["result"] for m in map(RESULT.match, self.output.splitlines()) if m}


def stand_ins(workflows: Path, actions: Path = STAND_INS) -> list[str]:
    """``--local-repository`` flags serving every pinned action (checkout aside) from
    ``actions/<name>``."""
    flags: set[str] = set()
    for path in sorted(workflows.glob("*.yml")):
        for job in (yaml.safe_load(path.read_text()).get("jobs") or {}).values():
            for step in job.get("steps") or []:
                uses = step.get("uses")
                if not uses or uses.startswith(("./", "docker://")):
                    continue
                match = USES.match(uses)
                if match is None:
                    raise ValueError(f"{path}: `uses: {uses}` is not owner/name@ref")
                if match["repo"] == "actions/checkout":
                    continue  # act uses the working copy
                folder = actions / match["repo"].split("/")[1]
                if not (folder / "action.yml").is_file():
                    raise ValueError(
                        f"{path}: {uses} has no stand-in in {folder}: GitHub is unreachable, so "
                        "write one (or make the step a `run:`)"
                    )
                flags.add(f"{uses}={folder}")
    return [arg for flag in sorted(flags) for arg in ("--local-repository", flag)]


def clean_env() -> dict[str, str]:
    """This environment without the calling virtualenv: the workflow installs its own."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "VIRTUAL_"))}
    ours = str(Path(sys.executable).parent)
    environ["PATH"] = os.pathsep.join(p for p in environ["PATH"].split(os.pathsep) if p != ours)
    for name in ("MLFLOW_TRACKING_URI", "REGISTRY", "IMAGE_REPOSITORY", "REGISTRY_INSECURE"):
        environ.pop(name, None)  # the workflow takes these from --var, as from GitHub's `vars`
    return environ


def run(
    event: str,
    *,
    repo: Path,
    variables: dict[str, str],
    artifacts: Path,
    default_branch: str,
    inputs: dict[str, str] | None = None,
    secrets: dict[str, str] | None = None,
    workflow: str | None = None,
    job: str | None = None,
    extra: list[str] | None = None,
    log: Path | None = None,
    timeout: float = 1800,
    echo: bool = False,
) -> ActRun:
    """Run act for ``event`` in ``repo``; the log goes to ``log`` (and stdout if ``echo``)."""
    if {"-n", "--dryrun"} & set(extra or []):
        # Seen with act 0.2.89: in self-hosted mode a dry run still executes every `run:` step.
        raise ValueError("act's --dryrun runs the steps anyway in self-hosted mode: not offered")
    artifacts.mkdir(parents=True, exist_ok=True)
    command = [str(ACT), event, "-P", PLATFORM, "--defaultbranch", default_branch]
    # No workflow here uses actions/cache; without the server, runs at once share no state.
    command += ["--no-cache-server"]
    workflows = repo / ".github" / "workflows"
    command += ["-W", str(workflows / workflow) if workflow else str(workflows)]
    own = repo / "tools" / "actions"  # the repository's own stand-ins, if it has them
    command += stand_ins(workflows, own if own.is_dir() else STAND_INS)
    command += ["--env", f"ACT_ARTIFACTS_DIR={artifacts}"]
    command += [arg for name, value in variables.items() for arg in ("--var", f"{name}={value}")]
    command += [arg for k, v in (inputs or {}).items() for arg in ("--input", f"{k}={v}")]
    # Secrets go in through a file only act reads (mode 0600, removed after the run): not on its
    # command line, where `ps` and the log's first line would show them, and not in its
    # environment, which in self-hosted mode every step of every job would inherit.
    secret_file = None
    if secrets:
        fd, name = tempfile.mkstemp(prefix="act-secrets-", suffix=".env")
        with os.fdopen(fd, "w") as out:
            for key, value in secrets.items():
                escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
                out.write(f'{key}="{escaped}"\n')
        secret_file = Path(name)
    command += ["--secret-file", str(secret_file) if secret_file else os.devnull]
    environ = clean_env()
    command += ["-j", job] if job else []
    command += extra or []
    log = log or artifacts.parent / f"{artifacts.name}.log"
    started = time.monotonic()
    with log.open("w") as handle:
        handle.write("$ " + " ".join(command) + "\n")
        process = subprocess.Popen(
            command,
            cwd=repo,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        timer = threading.Timer(timeout, process.kill)  # a hung step must not hang the suite
        timer.start()
        try:
            assert process.stdout is not None
            for line in process.stdout:
                handle.write(line)
                handle.flush()
                if echo:
                    sys.stdout.write(line)
        finally:
            timer.cancel()
            returncode = process.wait()
            if secret_file is not None:
                secret_file.unlink(missing_ok=True)
    return ActRun(returncode, log.read_text(), time.monotonic() - started, artifacts)


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


def main(argv: list[str]) -> int:
    """`make workflows`: run EVENT's workflows here against a local registry and MLflow store."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.act", description=main.__doc__, allow_abbrev=False
    )
    parser.add_argument("event", help="push, pull_request, workflow_dispatch, ...")
    parser.add_argument("--workflow", help="one file in .github/workflows (default: all)")
    args, extra = parser.parse_known_args(argv)
    event = args.event
    if {"-n", "--dryrun"} & set(extra):
        print("error: act's --dryrun runs the steps anyway in self-hosted mode", file=sys.stderr)
        return 2
    from pipeline.config import load_params

    registry = os.environ.get("REGISTRY")
    if not registry:
        port = os.environ.get("REGISTRY_PORT", "5000")
        subprocess.run([str(ROOT / "scripts/registry.sh"), "start"], check=True)
        registry = f"127.0.0.1:{port}"
    loopback = registry.startswith(("127.", "localhost"))
    variables = {
        "REGISTRY": registry,
        "REGISTRY_INSECURE": os.environ.get("REGISTRY_INSECURE", str(loopback).lower()),
        "IMAGE_REPOSITORY": os.environ.get(
            "IMAGE_REPOSITORY", f"local/{load_params(ROOT / 'params.yaml').image.name}"
        ),
        # This working copy's MLflow store: the CI run registers there, a promotion reads it.
        "MLFLOW_TRACKING_URI": os.environ.get(
            "MLFLOW_TRACKING_URI", f"sqlite:///{ROOT / 'mlflow.db'}"
        ),
        "MLFLOW_ARTIFACTS_DIR": os.environ.get("MLFLOW_ARTIFACTS_DIR", str(ROOT / "mlartifacts")),
    }
    # The release job signs with RELEASE_SIGNING_KEY (a secret on GitHub): from the caller's
    # environment, or the file RELEASE_SIGNING_KEY_FILE names (`pipeline keygen`).
    secrets = {}
    key_file = os.environ.get("RELEASE_SIGNING_KEY_FILE")
    if os.environ.get("RELEASE_SIGNING_KEY"):
        secrets["RELEASE_SIGNING_KEY"] = os.environ["RELEASE_SIGNING_KEY"]
    elif key_file:
        secrets["RELEASE_SIGNING_KEY"] = Path(key_file).expanduser().read_text()
    default = _git("symbolic-ref", "--short", "refs/remotes/origin/HEAD").removeprefix("origin/")
    default = default or _git("branch", "--show-current") or "main"
    stamp = time.strftime("%Y%m%dT%H%M%S")
    artifacts = ROOT / "build" / "act" / f"{event}-{stamp}"
    print(f"act {event}: registry {registry}, artifacts and log in {artifacts}*", file=sys.stderr)
    try:
        outcome = run(
            event,
            repo=ROOT,
            variables=variables,
            artifacts=artifacts,
            default_branch=default,
            workflow=args.workflow,
            secrets=secrets,
            extra=extra,
            echo=True,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"act {event}: exit {outcome.returncode} in {outcome.seconds:.0f} s", file=sys.stderr)
    return outcome.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
