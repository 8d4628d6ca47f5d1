"""Debian packages the tests drive (Podman, docker-registry), installed when absent on root
Debian, and how the suite is split over pytest-xdist workers.

`make test` runs the suite on two workers (`TEST_WORKERS=2`: `-n 2 --dist loadscope`, scheduled
by `GroupScheduling`; `TEST_WORKERS=0` runs it in one process). A worker runs whole groups:
every module is one group (its module-scoped world is built once), the release tests' shared
world is one, and the two Swarm modules are one, so no two Swarm tests run at once (the Swarm is
one per machine). The longest groups are handed out first.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from xdist.scheduler import LoadScopeScheduling

from tests.support import registry

PODMAN_PACKAGES = ("podman", "catatonit", "runc")  # crun fails on these hosts' cgroup layout
SWARM = "swarm"  # the one-node Swarm: one per machine, and its tests time rollouts under load
SWARM_MODULES = (
    "tests/integration/deploy/test_swarm.py",
    "tests/integration/ab/test_swarm_split.py",
)
RELEASE = "release-world"  # tests/support/release_world.py's session world
RELEASE_MODULES = (
    "tests/integration/test_release.py",
    "tests/integration/test_release_integrity.py",
)
# Longest first (measured serially: Swarm ~11 min, e2e ~10, release ~8, the others 2-6 each);
# modules not named follow in collection order.
LONGEST_FIRST = (
    SWARM,
    "tests/e2e/test_workflows.py",
    RELEASE,
    "tests/integration/test_containerize.py",
    "tests/integration/test_real_data_repro.py",
    "tests/integration/test_sweep.py",
    "tests/integration/test_train_image.py",
    "tests/integration/ab/test_experiment_release.py",
    "tests/integration/test_pipeline_repro.py",
    "tests/integration/test_parallel.py",
)


def root_debian() -> bool:
    return os.geteuid() == 0 and Path("/etc/debian_version").is_file()


def ensure_podman() -> str | None:
    """The podman binary; installed with apt-get when absent on root Debian, else None."""
    if shutil.which("podman") is None and root_debian():
        command = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PODMAN_PACKAGES]
        environ = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        if subprocess.run(command, env=environ, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "-qq", "update"], capture_output=True, check=True)
            subprocess.run(command, env=environ, capture_output=True, check=True)
    return shutil.which("podman")


def install_before_workers() -> None:
    """apt-get takes a machine-wide lock: two workers installing at once would fail one of them,
    so the controller installs what the tests would, before any worker starts."""
    if root_debian():
        registry.ensure_installed()
        ensure_podman()


def group_of(nodeid: str) -> str:
    """The group a test runs in, from its node id alone (the controller sees no marks)."""
    module = nodeid.split("::", 1)[0]
    if module in SWARM_MODULES:
        return SWARM
    return RELEASE if module in RELEASE_MODULES else module


def longest_first(items: list[pytest.Item]) -> None:
    """Order the items group by group, the longest groups first (stable): workers collect, and
    xdist hands out the groups in the order of that collection."""
    for item in items:
        if item.get_closest_marker("swarm") and group_of(item.nodeid) != SWARM:
            raise pytest.UsageError(
                f"{item.nodeid} is marked swarm but its module is not in "
                "tests/support/system.py's SWARM_MODULES: add it, so one worker runs it"
            )
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(group_of(item.nodeid), len(rank)))


class GroupScheduling(LoadScopeScheduling):
    """xdist's scope scheduling, with `group_of` as the scope. (xdist's own `loadgroup` reads
    `xdist_group` marks into the node id, which pytest 9's node ids no longer take.)"""

    def _split_scope(self, nodeid: str) -> str:
        return group_of(nodeid)
