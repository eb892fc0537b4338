"""A database that is slow to take new connections, as on a loaded machine: the API's short
pool timeout (how long a request waits for a pooled connection) does not stop it starting."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from picasse.runners.api import POOL_TIMEOUT
from picasse.runners.settings import Settings
from tests.integration.api_server import start_api_process
from tests.ports import free_port

SLOWNESS = POOL_TIMEOUT + 0.5  # seconds before each new connection reaches the server


class SlowToConnect:
    """A TCP proxy in front of the real server that holds each new connection for
    SLOWNESS seconds before passing it on, then relays its bytes both ways."""

    def __init__(self, database_url: str) -> None:
        params = conninfo_to_dict(database_url)
        host, port = str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432)
        self._upstream = (
            (socket.AF_UNIX, f"{host}/.s.PGSQL.{port}")
            if host.startswith("/")
            else (socket.AF_INET, (host, port))
        )
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = make_conninfo(
            database_url, host="127.0.0.1", port=str(self._listener.getsockname()[1])
        )
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        time.sleep(SLOWNESS)  # the slowness under test, in the peer
        family, address = self._upstream
        server = socket.socket(family)
        try:
            server.connect(address)
        except OSError:
            client.close()
            return
        threading.Thread(target=_pump, args=(server, client), daemon=True).start()
        _pump(client, server)

    def close(self) -> None:
        self._listener.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def slow_database(database_url: str) -> Iterator[SlowToConnect]:
    proxy = SlowToConnect(database_url)
    yield proxy
    proxy.close()


def test_the_api_starts_on_a_database_slower_to_connect_than_its_pool_timeout(
    slow_database: SlowToConnect, settings: Settings, schema: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PICASSE_")} | {
        "PICASSE_DATA_DIR": str(settings.data_dir),
        "PICASSE_DATABASE_URL": slow_database.url,
        "PICASSE_DATABASE_SCHEMA": schema,
        "PICASSE_HTTP_PORT": str(port),
        "PICASSE_DB_CONNECTIONS": "3",  # the least: fewer slow connections to wait for
    }
    stderr_path = tmp_path / "stderr"
    process, line = start_api_process(env, stderr_path, within=120)
    try:
        assert line == f"api listening on http://127.0.0.1:{port}\n".encode(), (
            stderr_path.read_text(errors="replace")[-2000:]
        )
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=30)
        assert health.status_code == 200, health.text
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, stderr_path.read_text(errors="replace")[-2000:]
