"""NATS over TLS (R12): a `tls://` URL is checked against PICASSE_NATS_TLS_CA, against a real
nats-server that requires TLS with a self-signed certificate."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from picasse.runners.processes import connect_nats
from picasse.runners.servers import nats_server_binary
from picasse.runners.settings import Settings
from tests.integration.api_server import self_signed_certificate


@pytest.fixture
def tls_nats(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A nats-server that speaks TLS only; its tls:// URL and its certificate."""
    cert, key = self_signed_certificate(tmp_path)
    config = tmp_path / "tls.conf"
    config.write_text(f'tls {{\n  cert_file: "{cert}"\n  key_file: "{key}"\n}}\n')
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [str(nats_server_binary()), "--config", str(config), "--addr", "127.0.0.1",
         "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "no nats-server"
                time.sleep(0.05)
        yield f"tls://127.0.0.1:{port}", cert
    finally:
        server.terminate()
        server.wait(10)


def test_a_tls_url_connects_when_the_server_is_signed_by_the_configured_ca(
    tls_nats: tuple[str, Path],
) -> None:
    url, ca = tls_nats

    async def round_trip() -> bytes:
        client = await connect_nats(url, "picasse-tls-test", tls_ca=ca)
        try:
            subscription = await client.subscribe("tls.check")
            await client.publish("tls.check", b"over tls")
            message = await subscription.next_msg(timeout=5)
            return bytes(message.data)
        finally:
            await client.close()

    assert asyncio.run(round_trip()) == b"over tls"


def test_a_tls_url_refuses_a_server_no_trusted_ca_signed(tls_nats: tuple[str, Path]) -> None:
    url, _ = tls_nats

    async def connect() -> None:
        # connect_nats retries for ever (a platform process waits for its server), each
        # time failing the certificate check: no connection within a few seconds.
        client = await asyncio.wait_for(connect_nats(url, "picasse-tls-test"), timeout=3)
        await client.close()

    with pytest.raises((TimeoutError, ssl.SSLError)):
        asyncio.run(connect())


def test_the_ca_is_a_setting() -> None:
    settings = Settings.from_environ({"PICASSE_NATS_TLS_CA": "/etc/picasse/nats-ca.pem"})
    assert settings.nats_tls_ca == Path("/etc/picasse/nats-ca.pem")
    assert Settings.from_environ({}).nats_tls_ca is None
