"""PICASSE_PUBLIC_URL: one setting, one function for its effective value (issue 11)."""

from __future__ import annotations

import pytest

from picasse.runners.settings import Settings, SettingsError


def test_without_a_setting_it_is_our_listener_with_https_when_tls_is_on() -> None:
    plain = Settings.from_environ({"PICASSE_HTTP_PORT": "8443"})
    tls = Settings.from_environ(
        {"PICASSE_HTTP_PORT": "8443", "PICASSE_TLS_CERT": "c.pem", "PICASSE_TLS_KEY": "k.pem"}
    )
    assert plain.public_url == "http://127.0.0.1:8443"
    assert tls.public_url == "https://127.0.0.1:8443"


def test_the_setting_wins_without_its_trailing_slash() -> None:
    settings = Settings.from_environ(
        {"PICASSE_PUBLIC_URL": "https://picasse.example/", "PICASSE_TLS_CERT": "c.pem"}
    )
    assert settings.public_url == "https://picasse.example"


@pytest.mark.parametrize("bad", ["picasse.example", "ftp://picasse.example", "https://"])
def test_a_public_url_that_is_no_http_url_is_refused(bad: str) -> None:
    with pytest.raises(SettingsError, match="PICASSE_PUBLIC_URL"):
        Settings.from_environ({"PICASSE_PUBLIC_URL": bad})


def test_on_the_port_picked_for_port_0_a_url_made_from_the_listener_names_it() -> None:
    """`up` picks the port for PICASSE_HTTP_PORT=0; only settings.py reads the setting."""
    made = Settings.from_environ({"PICASSE_HTTP_PORT": "0"}).on_port(40123)
    tls = Settings.from_environ(
        {"PICASSE_HTTP_PORT": "0", "PICASSE_TLS_CERT": "c.pem", "PICASSE_TLS_KEY": "k.pem"}
    ).on_port(40123)
    configured = Settings.from_environ(
        {"PICASSE_HTTP_PORT": "0", "PICASSE_PUBLIC_URL": "https://picasse.example/"}
    ).on_port(40123)
    assert (made.http_port, made.public_url) == (40123, "http://127.0.0.1:40123")
    assert tls.public_url == "https://127.0.0.1:40123"
    assert (configured.http_port, configured.public_url) == (40123, "https://picasse.example")
