"""Choosing the container engine (CONTAINER_ENGINE) and reading what each builder prints;
nothing here needs an engine running."""

from __future__ import annotations

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


@pytest.mark.parametrize(
    ("line", "step"),
    [("Step 3/12 : COPY serving /app/serving", (3, 12)), ("STEP 3/12: COPY serving /app", (3, 12))],
)
def test_build_steps_are_read_from_docker_and_podman_output(
    line: str, step: tuple[int, int]
) -> None:
    match = engine._STEP.match(line)
    assert match is not None and (int(match.group(1)), int(match.group(2))) == step


def test_a_podman_short_name_match_by_suffix_is_not_taken_for_the_base() -> None:
    fallback = ["localhost/local/python:3.11-slim-bookworm"]
    assert not engine._names(fallback, "python:3.11-slim-bookworm")
    assert engine._names(fallback, "local/python:3.11-slim-bookworm")
    assert engine._names(["docker.io/library/python:3.11"], "python:3.11")
    assert engine._names(["python:3.11"], "python:3.11")  # Docker's own spelling
