"""Servers for every test: the configured external ones, or embedded ones for the session."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from picasse.runners import servers
from picasse.runners.settings import Settings


@pytest.fixture(scope="session")
def servers_root() -> Iterator[Path]:
    """Where data dirs with embedded servers go: outside pytest's own temp root.

    Run as root, the embedded PostgreSQL runs as the user `embedded_postgres`, who must
    pass through every directory above its data. Each pytest session that starts closes
    /tmp/pytest-of-<user> to 0700 again, which would lock out a server being started
    by another session running at the same time.
    """
    root = Path(tempfile.mkdtemp(prefix="picasse-tests-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def fresh_data_dir(servers_root: Path) -> Path:
    """An empty directory of the test's own to use as a data dir."""
    return Path(tempfile.mkdtemp(prefix="t-", dir=servers_root))


@pytest.fixture(scope="session")
def environ_settings() -> Settings:
    """PICASSE_DATABASE_URL / PICASSE_NATS_URL as the platform reads them (None: embedded)."""
    return Settings.from_environ()


@pytest.fixture(scope="session")
def embedded_settings(servers_root: Path) -> Iterator[Settings]:
    """A session data dir whose embedded servers start on first use and stop at the end."""
    settings = Settings(data_dir=Path(tempfile.mkdtemp(prefix="session-", dir=servers_root)))
    yield settings
    servers.stop_nats(settings)
    servers.stop_postgres(settings)


@pytest.fixture(scope="session")
def database_url(environ_settings: Settings, embedded_settings: Settings) -> str:
    return servers.postgres_url(_prefer_external(environ_settings, embedded_settings))


@pytest.fixture(scope="session")
def nats_url(environ_settings: Settings, embedded_settings: Settings) -> str:
    return servers.nats_url(_prefer_external(environ_settings, embedded_settings))


def _prefer_external(environ: Settings, embedded: Settings) -> Settings:
    return msgspec.structs.replace(
        embedded, database_url=environ.database_url, nats_url=environ.nats_url
    )
