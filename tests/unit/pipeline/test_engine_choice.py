"""Choosing the container engine (CONTAINER_ENGINE) and reading what each builder prints;
nothing here needs an engine running."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from pipeline.errors import ConfigError, ImageError
from pipeline.image import engine
from pipeline.image.engine import Engine


def test_an_unknown_container_engine_is_a_config_error_naming_the_variable_and_the_choices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONTAINER_ENGINE", "containerd")
    with pytest.raises(ConfigError) as raised:
        Engine.connect()
    assert raised.value.exit_code == 2
    message = str(raised.value)
    assert "CONTAINER_ENGINE='containerd'" in message and "docker or podman" in message


def test_podman_chosen_but_not_installed_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    socket = tmp_path / "podman" / "podman.sock"  # nothing answers there
    monkeypatch.setattr(engine, "podman_socket", lambda: socket)
    monkeypatch.setenv("CONTAINER_ENGINE", "podman")
    monkeypatch.setenv("PATH", str(tmp_path))  # no podman binary on it
    with pytest.raises(ImageError, match=r"podman is not installed: .*apt-get install podman"):
        Engine.connect()


def test_the_rootless_podman_socket_is_under_the_users_runtime_dir(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engine.os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    assert engine.podman_socket() == Path("/run/user/1000/podman/podman.sock")
    monkeypatch.setattr(engine.os, "geteuid", lambda: 0)
    assert engine.podman_socket() == Path("/run/podman/podman.sock")


def test_build_steps_are_counted_over_all_stages_from_docker_and_podman_output() -> None:
    """Docker counts steps over the whole Dockerfile; Podman per stage, with the stage first."""
    docker_lines = [
        "Step 1/4 : FROM base AS runtime",
        "Step 3/4 : FROM base",
        "Step 4/4 : COPY a b",
    ]
    podman_lines = [
        "[1/2] STEP 1/2: FROM base AS runtime",
        "[2/2] STEP 1/2: FROM base",
        "[2/2] STEP 2/2: COPY a b",
    ]
    for lines in (docker_lines, podman_lines):
        stream = [{"stream": line + "\n --> Using cache 0123456789abcdef\n"} for line in lines]
        built = Engine.__new__(Engine)
        built.client = _Client(stream)
        report = built.build(io.BytesIO(), tag="t", buildargs={})
        assert report.steps == 4 and report.cached[-1] == 4, (lines, report)


class _Client:
    """Replays what a builder streamed (the engine's parsing, not the engine, is under test)."""

    def __init__(self, chunks: list[dict[str, str]]) -> None:
        self.api = self
        self._chunks = chunks

    def build(self, **_: object) -> list[dict[str, str]]:
        return self._chunks


def test_a_podman_short_name_match_by_suffix_is_not_taken_for_the_base() -> None:
    fallback = ["localhost/local/python:3.11-slim-bookworm"]
    assert not engine._names(fallback, "python:3.11-slim-bookworm")
    assert engine._names(fallback, "local/python:3.11-slim-bookworm")
    assert engine._names(["docker.io/library/python:3.11"], "python:3.11")
    assert engine._names(["python:3.11"], "python:3.11")  # Docker's own spelling
