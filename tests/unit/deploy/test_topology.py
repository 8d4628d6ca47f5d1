"""deploy/topology.yaml: validated like params.yaml, one line per problem, naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.deploy.topology import load_topology
from pipeline.errors import ConfigError


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def shipped(topology_file: Path) -> dict:  # type: ignore[type-arg]
    return dict(yaml.safe_load(topology_file.read_text()))


def test_the_shipped_topology_is_valid_and_its_environments_use_different_ports(
    topology_file: Path,
) -> None:
    topology = load_topology(topology_file)
    staging, production = topology.get("staging"), topology.get("production")
    assert staging.entry.port != production.entry.port
    assert staging.stack != production.stack


def test_an_unknown_key_is_an_error_naming_it(tmp_path: Path, topology_file: Path) -> None:
    data = shipped(topology_file)
    data["environments"]["production"]["replics"] = 3
    with pytest.raises(ConfigError) as error:
        load_topology(write(tmp_path, data))
    message = str(error.value)
    assert "environments.production.replics: unknown key" in message
    assert "\n" not in message


def test_an_out_of_range_value_names_the_key_and_the_value(
    tmp_path: Path, topology_file: Path
) -> None:
    data = shipped(topology_file)
    data["environments"]["staging"]["entry"]["port"] = 80
    with pytest.raises(ConfigError, match=r"environments\.staging\.entry\.port: .*\(got 80\)"):
        load_topology(write(tmp_path, data))


def test_two_environments_on_one_port_are_refused(tmp_path: Path, topology_file: Path) -> None:
    data = shipped(topology_file)
    data["environments"]["staging"]["entry"]["port"] = data["environments"]["production"]["entry"][
        "port"
    ]
    with pytest.raises(ConfigError, match="both publish port"):
        load_topology(write(tmp_path, data))


def test_a_missing_file_and_bad_yaml_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_topology(tmp_path / "absent.yaml")
    (tmp_path / "bad.yaml").write_text("environments: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_topology(tmp_path / "bad.yaml")


def test_an_environment_the_file_lacks_is_named(tmp_path: Path, topology_file: Path) -> None:
    data = shipped(topology_file)
    del data["environments"]["staging"]
    topology = load_topology(write(tmp_path, data))
    with pytest.raises(ConfigError, match="no environment 'staging' \\(it has: production\\)"):
        topology.get("staging")
