"""What each DVC stage imports from the project, against what dvc.yaml lists as its deps.

DVC re-runs a stage only when one of its deps changed, so a module a stage imports but dvc.yaml
does not list is a stage DVC may wrongly skip; a module listed but not imported re-runs a stage
for nothing (editing `pipeline promote`'s help text must not retrain). The imports are read
from the source (``import`` and ``from ... import`` anywhere in a module, function bodies
included), followed transitively inside the ``pipeline`` and ``serving`` packages; a package's
``__init__.py`` counts for every module under it, as Python runs it on import.

``python -m tools.stage_deps`` prints each stage's differences (exit 1 when there are any).
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

PACKAGES = ("pipeline", "serving")
ROOT = Path(__file__).resolve().parents[1]


def _files_of(module: str, root: Path) -> list[Path]:
    """The files Python runs to import ``module``: each package's __init__, then the module."""
    parts = module.split(".")
    found = []
    for end in range(1, len(parts) + 1):
        path = Path(*parts[:end])
        for candidate in (path.with_suffix(".py"), path / "__init__.py"):
            if (root / candidate).is_file():
                found.append(candidate)
    return found


def _imported_modules(source: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(source.read_bytes(), filename=str(source))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
    return [name for name in names if name.split(".")[0] in PACKAGES]


def imports_of(module: str, *, root: Path = ROOT) -> set[Path]:
    """Every project file (relative to ``root``) that running ``python -m module`` executes."""
    seen: set[Path] = set()
    todo = _files_of(module, root)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imported_modules(root / path):
            todo += _files_of(name, root)
    return seen


@dataclass(frozen=True)
class Difference:
    stage: str
    #: imported by the stage, covered by no dep: DVC could skip a stage whose code changed
    missing: list[str]
    #: listed as a dep, imported by nothing the stage runs: re-runs the stage for nothing
    extra: list[str]


def check(dvc_yaml: dict[str, object], *, root: Path = ROOT) -> list[Difference]:
    """One :class:`Difference` per stage whose Python deps differ from its imports."""
    differences = []
    stages = dvc_yaml.get("stages")
    assert isinstance(stages, dict), "dvc.yaml has no stages"
    for name, stage in stages.items():
        command = str(stage["cmd"]).split()
        if command[:3] != ["python", "-m", command[2]] or not command[2].startswith(PACKAGES):
            continue
        needed = imports_of(command[2], root=root)
        listed = [Path(str(d)) for d in stage.get("deps") or []]
        python = [
            d
            for d in listed
            if d.parts and d.parts[0] in PACKAGES and (d.suffix == ".py" or (root / d).is_dir())
        ]
        missing = sorted(
            str(p) for p in needed if not any(p == d or d in p.parents for d in python)
        )
        extra = sorted(str(d) for d in python if not any(p == d or d in p.parents for p in needed))
        if missing or extra:
            differences.append(Difference(stage=name, missing=missing, extra=extra))
    return differences


def main() -> int:
    differences = check(yaml.safe_load((ROOT / "dvc.yaml").read_text()))
    for d in differences:
        for path in d.missing:
            print(f"{d.stage}: add `{path}` to its deps (the stage imports it)")
        for path in d.extra:
            print(f"{d.stage}: remove `{path}` from its deps (nothing the stage runs imports it)")
    if not differences:
        print("dvc.yaml lists exactly what each stage imports")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
