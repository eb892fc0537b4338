"""A NATS cluster in the settings: every node's URL in PICASSE_NATS_URL, and how many copies
of each stream JetStream keeps (PICASSE_NATS_REPLICAS)."""

from __future__ import annotations

from pathlib import Path

import pytest

from picasse.runners.settings import Settings, SettingsError, nats_servers
from picasse.runners.signals import StopRequest
from picasse.runners.up import MessagingServer


def test_a_comma_separated_url_names_each_node_of_a_cluster_with_its_credentials() -> None:
    url = "nats://picasse:pw@nats-1:4222, nats://picasse:pw@nats-2:4222,tls://nats-3:4222"
    assert nats_servers(url) == [
        "nats://picasse:pw@nats-1:4222",
        "nats://picasse:pw@nats-2:4222",
        "tls://nats-3:4222",
    ]
    assert nats_servers("nats://127.0.0.1:4222") == ["nats://127.0.0.1:4222"]


def test_streams_are_kept_once_unless_the_replicas_setting_says_more() -> None:
    cluster = {"PICASSE_NATS_URL": "nats://nats-1:4222,nats://nats-2:4222,nats://nats-3:4222"}
    assert Settings.from_environ({}).nats_replicas == 1
    assert Settings.from_environ(cluster | {"PICASSE_NATS_REPLICAS": "3"}).nats_replicas == 3


def test_more_than_one_copy_on_the_embedded_server_is_refused_before_anything_starts() -> None:
    with pytest.raises(SettingsError, match="PICASSE_NATS_REPLICAS=3 needs a NATS cluster"):
        Settings.from_environ({"PICASSE_NATS_REPLICAS": "3"})


@pytest.mark.parametrize("bad", ["0", "6", "three", "2.5", "-1"])
def test_a_replica_count_jetstream_cannot_keep_is_refused_with_its_name(bad: str) -> None:
    with pytest.raises(SettingsError, match="PICASSE_NATS_REPLICAS"):
        Settings.from_environ({"PICASSE_NATS_REPLICAS": bad})


def test_up_shows_each_node_of_an_external_cluster_without_its_password() -> None:
    settings = Settings(
        data_dir=Path("unused"),
        nats_url="nats://picasse:s3cret@nats-1:4222,nats://picasse:s3cret@nats-2:4222",
    )
    stop = StopRequest()
    try:
        shown = MessagingServer(settings).start(stop)
    finally:
        stop.close()
    assert shown == "external  nats://picasse:***@nats-1:4222,nats://picasse:***@nats-2:4222"
