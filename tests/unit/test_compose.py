"""compose.yaml, read as Compose reads it (YAML, merge keys): Compose cannot run on this
machine, so each service's command is checked against the CLI's own parser, and the NATS
nodes against each other."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from picasse.runners import children, cli
from picasse.runners.settings import Settings, nats_servers

COMPOSE = Path(__file__).parents[2] / "compose.yaml"
POSTGRES_MAX_CONNECTIONS = 100  # the postgres image's default
# What each long-running command is, by the function the CLI runs for it.
ROLES = {
    cli.cmd_api: "api",
    cli.cmd_worker: "worker",
    cli.cmd_relay: "relay",
    cli.cmd_project: "projections",
    cli.cmd_scheduler: "scheduler",
}
ONCE = {"relay", "projections", "scheduler"}  # each holds its roles' advisory locks
REPLICATED = {"api", "worker"}


def _interpolated(text: str) -> str:
    """As Compose fills in variables: ${VAR:-default} unset, the required ones set."""

    def value(match: re.Match[str]) -> str:
        _, unset, default = match[1].partition(":-")
        return default if unset else "secret"

    return re.sub(r"\$\{([^}]*)\}", value, text)


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load(_interpolated(COMPOSE.read_text()))
    assert isinstance(document, dict) and isinstance(document["services"], dict)
    return document["services"]


def _picasse(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if s.get("image") == "picasse"}


def _nats(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if s.get("image", "").startswith("nats:")}


def _replicas(service: dict[str, Any]) -> int:
    return int(service.get("deploy", {}).get("replicas", 1))


def _role(command: list[str]) -> str:
    """The role of a `picasse …` command, as the CLI's parser reads it."""
    assert command[0] == "picasse"
    try:
        args = cli.build_parser().parse_args(command[1:])
    except SystemExit:
        pytest.fail(f"the CLI refuses {command}")
    assert args.run in ROLES, f"{command} is not one of the platform's long-running roles"
    return ROLES[args.run]


def test_each_role_is_a_service_of_its_own_whose_command_the_cli_takes(
    services: dict[str, dict[str, Any]],
) -> None:
    roles = {name: _role(s["command"]) for name, s in _picasse(services).items()}
    assert sorted(roles.values()) == sorted(ROLES.values())  # each role once, `up` nowhere


def test_api_and_workers_have_replicas_and_the_role_holders_run_once(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in _picasse(services).items():
        role = _role(service["command"])
        if role in REPLICATED:
            assert _replicas(service) >= 2, name
        else:
            assert role in ONCE and _replicas(service) == 1, name


def test_every_service_runs_on_the_same_servers_keys_and_a_three_node_cluster(
    services: dict[str, dict[str, Any]],
) -> None:
    picasse = _picasse(services)
    nodes = _nats(services)
    environments = [Settings.from_environ(s["environment"]) for s in picasse.values()]
    assert len({(e.database_url, e.nats_url, e.master_key_path) for e in environments}) == 1
    settings = environments[0]
    assert (
        settings.nats_url is not None and urlsplit(settings.database_url or "").hostname in services
    )
    # The clients know every node, and the streams are kept on each of them.
    assert {urlsplit(url).hostname for url in nats_servers(settings.nats_url)} == set(nodes)
    assert len(nodes) == 3 and settings.nats_replicas == 3
    # One volume holds the key files, mounted by every service.
    for service in picasse.values():
        mounts = dict(volume.split(":", 1) for volume in service["volumes"])
        assert settings.master_key_path.parent.as_posix() in mounts.values()
    assert len({tuple(s["volumes"]) for s in picasse.values()}) == 1


def _flags(command: list[str]) -> dict[str, str | bool]:
    """nats-server's long options: `--name x` → {"name": "x"}, `--jetstream` → True."""
    flags: dict[str, str | bool] = {}
    for i, word in enumerate(command):
        if word.startswith("--"):
            following = command[i + 1] if i + 1 < len(command) else "--"
            flags[word[2:]] = following if not following.startswith("--") else True
    return flags


def test_the_nats_nodes_form_one_jetstream_cluster_routed_to_each_other(
    services: dict[str, dict[str, Any]],
) -> None:
    nodes = {name: _flags(s["command"]) for name, s in _nats(services).items()}
    routes = {f"nats://{name}:6222" for name in nodes}
    for name, flags in nodes.items():
        assert flags["jetstream"] is True and flags["store_dir"], name
        assert flags["name"] == name  # each a server name of its own
        assert flags["cluster"] == "nats://0.0.0.0:6222"
        assert set(str(flags["routes"]).split(",")) == routes
        targets = {config["target"] for config in services[name]["configs"]}
        assert flags["config"] in targets
        assert services[name]["volumes"], f"{name} keeps its JetStream files in no volume"
    assert len({flags["cluster_name"] for flags in nodes.values()}) == 1
    assert len({str(s["volumes"]) for s in _nats(services).values()}) == len(nodes)


def test_the_connections_fit_postgres_and_each_role_gets_what_it_uses_under_up(
    services: dict[str, dict[str, Any]],
) -> None:
    total = 0
    for name, service in _picasse(services).items():
        role = _role(service["command"])
        connections = Settings.from_environ(service["environment"]).db_connections
        assert connections >= children.CONNECTIONS.get(role, children.MIN_API), name
        total += connections * _replicas(service)
    assert total <= POSTGRES_MAX_CONNECTIONS
