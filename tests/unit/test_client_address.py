"""The one computation of a client's address: forwarded headers only from trusted proxies."""

from __future__ import annotations

import pytest

from picasse.adapters.http.clients import networks, resolve
from picasse.runners.settings import Settings, SettingsError

PROXIES = networks(["10.0.0.0/8", "2001:db8::1"])


def headers(**values: str) -> list[tuple[bytes, bytes]]:
    return [(name.replace("_", "-").encode(), value.encode()) for name, value in values.items()]


def test_a_forwarded_header_from_an_untrusted_peer_is_ignored() -> None:
    spoofed = headers(x_forwarded_for="203.0.113.9", forwarded="for=203.0.113.9")
    assert resolve("198.51.100.7", spoofed, PROXIES) == "198.51.100.7"
    assert resolve("127.0.0.1", spoofed, ()) == "127.0.0.1"  # none trusted by default


def test_from_a_trusted_proxy_the_nearest_untrusted_hop_is_the_client() -> None:
    # What the client wrote itself (the left) is not believed past an untrusted hop.
    chain = headers(x_forwarded_for="6.6.6.6, 203.0.113.9, 10.1.2.3")
    assert resolve("10.0.0.1", chain, PROXIES) == "203.0.113.9"
    assert resolve("10.0.0.1", headers(x_forwarded_for="203.0.113.9"), PROXIES) == "203.0.113.9"


def test_forwarded_takes_precedence_and_its_ports_and_brackets_are_dropped() -> None:
    both = headers(
        forwarded='for="[2001:db8:cafe::17]:4711";proto=https, for=10.0.0.2',
        x_forwarded_for="6.6.6.6",
    )
    assert resolve("10.0.0.1", both, PROXIES) == "2001:db8:cafe::17"
    assert resolve("10.0.0.1", headers(forwarded="for=192.0.2.60:8080"), PROXIES) == "192.0.2.60"


def test_an_unusable_hop_leaves_the_last_proxy_as_the_client() -> None:
    assert resolve("10.0.0.1", headers(forwarded="for=unknown"), PROXIES) == "10.0.0.1"
    assert resolve("2001:db8::1", headers(x_forwarded_for="_hidden"), PROXIES) == "2001:db8::1"


def test_trusted_proxies_are_a_setting_of_addresses_and_networks(tmp_path: object) -> None:
    settings = Settings.from_environ({"PICASSE_TRUSTED_PROXIES": " 10.0.0.1, 192.168.0.0/16,::1"})
    assert settings.trusted_proxies == ("10.0.0.1/32", "192.168.0.0/16", "::1/128")
    assert Settings.from_environ({}).trusted_proxies == ()
    with pytest.raises(SettingsError, match="PICASSE_TRUSTED_PROXIES"):
        Settings.from_environ({"PICASSE_TRUSTED_PROXIES": "localhost"})
