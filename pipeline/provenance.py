"""Provenance: the git commit of the code and the DVC hash of the prepared data.

Read without taking DVC's repository lock (the stages run inside `dvc repro`, which holds it):
the hash comes from dvc.lock and is trusted only if every file it lists in DVC's cache manifest
still has that md5 in the working tree.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import yaml

UNKNOWN = "unknown"


def git_commit(root: Path = Path()) -> str:
    """HEAD's sha, with '-dirty' when tracked files other than dvc.lock differ; 'unknown'
    outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            # dvc.lock is the run's own record (DVC rewrites it as the stages finish), not source
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!dvc.lock"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return UNKNOWN
    return f"{sha}-dirty" if dirty else sha


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _locked_md5(lock_file: Path, out: str) -> str | None:
    if not lock_file.is_file():
        return None
    lock = yaml.safe_load(lock_file.read_text()) or {}
    for stage in (lock.get("stages") or {}).values():
        for entry in stage.get("outs") or []:
            if Path(entry.get("path", "")) == Path(out):
                md5 = entry.get("md5") or entry.get("hash")
                return str(md5) if md5 else None
    return None


def data_hash(out: Path, *, root: Path = Path()) -> str:
    """DVC's md5 of stage output `out` as dvc.lock records it, if still true; else 'unknown'."""
    md5 = _locked_md5(root / "dvc.lock", str(out))
    if md5 is None:
        return UNKNOWN
    target = root / out
    if not md5.endswith(".dir"):
        return md5 if target.is_file() and _md5(target) == md5 else UNKNOWN
    manifest = root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    if not manifest.is_file():
        return UNKNOWN
    entries = json.loads(manifest.read_text())
    files = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    if files != sorted(e["relpath"] for e in entries):
        return UNKNOWN
    if all(_md5(target / e["relpath"]) == e["md5"] for e in entries):
        return md5
    return UNKNOWN
