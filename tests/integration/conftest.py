"""The release tests' shared world (tests/support/release_world.py): one `dvc repro`, one
registry and one release key for test_release.py and test_release_integrity.py, which run in
that order and build on each other as a release does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.image.engine import Engine
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
