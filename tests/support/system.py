"""Debian packages the tests drive (Podman, docker-registry), installed when absent on root
Debian, and how the suite is split over pytest-xdist workers.

`make test` runs the suite on two workers (`-n 2 --dist loadgroup`). A worker runs whole groups:
every module is one group (its module-scoped world is built once), the release tests' shared
world is one, and everything that drives the Swarm or act is one more, run by a single worker in
collection order, because the Swarm is one per machine and act's self-hosted runs share a
work folder per workflow and job. The groups that take longest are handed out first.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import registry

PODMAN_PACKAGES = ("podman", "catatonit", "runc")  # crun fails on these hosts' cgroup layout
SERIAL = "swarm-and-act"  # the group of tests marked swarm or e2e
RELEASE = "release-world"  # tests/support/release_world.py's session world
RELEASE_MODULES = (
    "tests/integration/test_release.py",
    "tests/integration/test_release_integrity.py",
)
# Longest first (measured: the serial group ~20 min, release ~8, the modules below 2-6 each);
# modules not named follow in collection order.
LONGEST_FIRST = (
    SERIAL,
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


def group_of(item: pytest.Item) -> str:
    if item.get_closest_marker("swarm") or item.get_closest_marker("e2e"):
        return SERIAL
    module = item.nodeid.split("::", 1)[0]
    return RELEASE if module in RELEASE_MODULES else module


def split_for_workers(items: list[pytest.Item]) -> None:
    """Mark each item with its xdist group and order the groups longest first (stable)."""
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    for item in items:
        item.add_marker(pytest.mark.xdist_group(group_of(item)))
    items.sort(key=lambda item: rank.get(group_of(item), len(rank)))
