"""The release tests' shared world (tests/support/release_world.py): one `dvc repro`, one
registry and one release key for test_release.py and test_release_integrity.py, which run in
that order and build on each other as a release does. And Podman, for the tests that drive it
(test_containerize.py through its API socket, deploy/test_swarm.py with `podman kube play`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.image.engine import Engine
from tests.support import system
from tests.support.release_world import IMAGE_NAME, REPOSITORY, World, new_world


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    engine = Engine.connect()
    yield engine
    for image in engine.client.images.list():
        for tag in image.tags:
            if IMAGE_NAME in tag or REPOSITORY in tag:
                engine.untag(tag)


@pytest.fixture(scope="session")
def world(
    template_root: Path, tmp_path_factory: pytest.TempPathFactory, engine: Engine
) -> Iterator[World]:
    world = new_world(tmp_path_factory.mktemp("release"), template_root)
    try:
        yield world
    finally:
        world.registry.stop()


@pytest.fixture(scope="session")
def podman() -> str:
    """The podman binary; on root Debian installed with apt-get when absent (with catatonit and
    runc: crun fails on these hosts' cgroup layout), elsewhere the test is skipped."""
    binary = system.ensure_podman()
    if binary is None and system.root_debian():
        pytest.fail("apt-get installed podman, yet it is not on PATH")
    if binary is None:
        pytest.skip("podman is not installed (on root Debian the test installs it)")
    return binary
