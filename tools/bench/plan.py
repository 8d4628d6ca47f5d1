"""How long and how often each figure is measured: the full run fits in 20 minutes on the
2-core machines this project runs on; `--quick` is for developing the bench itself."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

KEY_CONCURRENCY = 8  # the cells the targets are about: measured more often and longer
ROWS = (1, 100)
CONCURRENCY = (1, 8, 32)
SECTIONS = ("serving", "startup", "promotion", "pipeline")


@dataclass(frozen=True)
class Plan:
    key_runs: int = 3  # wrk runs per server for the c=8 cells
    key_seconds: int = 3
    other_runs: int = 1  # c=1 and c=32
    other_seconds: int = 2
    warmup_seconds: int = 1
    startup_runs: int = 3  # container start to ready, each image
    cold_runs: int = 3  # cold `dvc repro` of the built-in set (the serving copy is one of them)
    noop_runs: int = 3
    code_runs: int = 3  # code-only change (serving code: only the image is rebuilt)
    params_runs: int = 2  # params-only change (train, validate and the image again)
    data_sizes: tuple[int, ...] = (100_000, 1_000_000)
    data_runs: int = 1
    promote_runs: int = 15  # promotions of each image (about 0.1 s each)
    cli_runs: int = 5  # whole-process `pipeline promote` + `pipeline rollback` pairs
    filler_mb: int = 600  # the large image: ours plus this many MB of random bytes

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


FULL = Plan()
QUICK = Plan(
    key_runs=1,
    key_seconds=2,
    other_runs=1,
    other_seconds=1,
    startup_runs=1,
    cold_runs=1,
    noop_runs=1,
    code_runs=1,
    params_runs=1,
    data_sizes=(100_000,),
    promote_runs=1,
    cli_runs=1,
    filler_mb=500,
)
