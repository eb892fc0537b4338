"""`picasse up` as a user runs it: the servers it starts, its lock, and how it stops."""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql

from tests.e2e.platform import RunningUp, environment, picasse_command, processes_using


def answers_queries(database_url: str) -> bool:
    try:
        with psycopg.connect(database_url, connect_timeout=5) as connection:
            return connection.execute("SELECT 1").fetchone() == (1,)
    except psycopg.OperationalError:
        return False


@pytest.fixture
def running_up(shared_up: RunningUp) -> RunningUp:
    return shared_up


def test_up_prints_where_postgresql_and_nats_listen_and_the_data_dir(
    running_up: RunningUp,
) -> None:
    lines = running_up.lines

    assert any(line.startswith("PostgreSQL  embedded  postgresql://") for line in lines), lines
    assert any(line.startswith("NATS        embedded  nats://127.0.0.1:") for line in lines), lines
    assert f"Data dir    {running_up.data_dir}" in lines
    assert not running_up.url_of("NATS").endswith(":4222")  # not the machine's own NATS


def test_a_second_up_on_the_same_data_dir_refuses_and_the_first_keeps_working(
    running_up: RunningUp,
) -> None:
    second = subprocess.run(
        [*picasse_command(), "up"],
        capture_output=True,
        text=True,
        env=environment(running_up.data_dir),
        timeout=30,
    )

    assert second.returncode != 0
    assert (
        f"picasse is already running on {running_up.data_dir} (pid {running_up.process.pid})"
        in second.stderr
    )
    assert running_up.process.poll() is None
    assert answers_queries(running_up.url_of("PostgreSQL"))


def holders_of_listening_socket(port: int) -> set[int]:
    """Pids of the processes holding the socket that listens on `port` (Linux /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if int(local.rsplit(":", 1)[1], 16) == port and state == "0A":  # LISTEN
                inodes.add(f"socket:[{inode}]")
    holders = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            descriptors = [os.readlink(fd) for fd in (entry / "fd").iterdir()]
        except OSError:
            continue  # gone meanwhile, or not ours to look into
        if inodes.intersection(descriptors):
            holders.add(int(entry.name))
    return holders


def test_the_api_socket_is_held_by_up_and_its_api_and_by_no_other_process(
    running_up: RunningUp,
) -> None:
    port = int(running_up.api_url().rsplit(":", 1)[1])

    holders = holders_of_listening_socket(port)

    assert holders == {running_up.process.pid, running_up.pid_of("API")}, holders


def test_up_on_a_port_already_taken_exits_1_with_one_line_before_starting_anything(
    fresh_data_dir: Path,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        up = subprocess.run(
            [*picasse_command(), "up"],
            capture_output=True,
            text=True,
            env=environment(fresh_data_dir / "data", PICASSE_HTTP_PORT=str(port)),
            timeout=60,
        )

    assert up.returncode == 1, up.stderr
    assert up.stderr == (f"picasse up: cannot listen on 127.0.0.1:{port}: Address already in use\n")
    assert not (fresh_data_dir / "data" / "postgres").exists()  # no server was started


def test_a_command_run_beside_up_uses_its_database_and_leaves_it_running(
    running_up: RunningUp,
) -> None:
    database_url = running_up.url_of("PostgreSQL")
    with psycopg.connect(database_url) as connection:
        started = connection.execute("SELECT pg_postmaster_start_time()").fetchone()

    command = subprocess.run(
        [
            *picasse_command(),
            "customers",
            "register",
            "--org=Beside Up BV",
            "--contact-name=Ann Example",
            "--email=ann@example.com",
            "--phone=+31 6 12345678",
            "--billing-address=Dorpsstraat 1, Utrecht",
        ],
        capture_output=True,
        text=True,
        env=environment(running_up.data_dir),
        timeout=60,
    )

    assert command.returncode == 0, command.stderr
    with psycopg.connect(database_url) as connection:
        assert connection.execute("SELECT pg_postmaster_start_time()").fetchone() == started


@pytest.mark.slow
def test_sigterm_stops_up_with_exit_status_0_and_no_server_left_running(
    fresh_data_dir: Path,
) -> None:
    up = RunningUp(fresh_data_dir / "data")
    up.wait_until_up()
    assert processes_using(up.data_dir)  # the embedded servers run under the data dir

    status = up.terminate()

    assert status == 0, up.stderr()
    assert processes_using(up.data_dir) == []
    assert not answers_queries(up.url_of("PostgreSQL"))


def test_up_with_configured_servers_uses_them_and_starts_none(
    fresh_data_dir: Path, database_url: str, nats_url: str
) -> None:
    schema = f"e2e_{uuid.uuid4().hex[:12]}"  # its data dir's key files go with a schema of its own
    up = RunningUp(
        fresh_data_dir / "data",
        PICASSE_DATABASE_URL=database_url,
        PICASSE_NATS_URL=nats_url,
        PICASSE_DATABASE_SCHEMA=schema,
    )
    try:
        lines = up.wait_until_up()
    finally:
        status = up.terminate()
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))

    assert f"PostgreSQL  external  {database_url}" in lines
    password = urlsplit(nats_url).password  # the session's embedded NATS has one
    shown = nats_url.replace(f":{password}@", ":***@") if password else nats_url
    assert f"NATS        external  {shown}" in lines
    assert not password or password not in "\n".join(lines)
    assert status == 0, up.stderr()
    assert not (up.data_dir / "postgres").exists()
    assert not (up.data_dir / "nats").exists()
