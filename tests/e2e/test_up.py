"""`picasse up` as a user runs it: the servers it starts, its lock, and how it stops."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

START_TIMEOUT = 90.0  # a first start runs initdb; two cores under load can be slow
STOP_TIMEOUT = 10.0
READY_LINE = "picasse is up"


def picasse_command() -> list[str]:
    """The console script installed beside this Python, else the module."""
    script = Path(sys.executable).parent / "picasse"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "picasse.runners.cli"]


def environment(data_dir: Path, **overrides: str) -> dict[str, str]:
    """This environment without configured servers, so `up` starts embedded ones."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"PICASSE_DATABASE_URL", "PICASSE_NATS_URL"}
    }
    env["PICASSE_DATA_DIR"] = str(data_dir)
    env["PICASSE_HTTP_PORT"] = "0"  # any free port: tests may run beside a real platform
    env.update(overrides)
    return env


class RunningUp:
    """A `picasse up` process whose standard output is read line by line as it comes."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.stderr_path = data_dir.parent / f"{data_dir.name}.up-stderr"
        with self.stderr_path.open("w") as stderr:
            self.process = subprocess.Popen(
                [*picasse_command(), "up"],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=environment(data_dir, **env),
            )
        self.lines: list[str] = []
        self._incoming: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._incoming.put(line.rstrip("\n"))
        self._incoming.put(None)

    def wait_until_up(self) -> list[str]:
        while True:
            try:
                line = self._incoming.get(timeout=START_TIMEOUT)
            except queue.Empty:
                pytest.fail(f"picasse up printed nothing new for {START_TIMEOUT:.0f}s")
            if line is None:
                pytest.fail(f"picasse up exited while starting: {self.stderr()}")
            self.lines.append(line)
            if line.startswith(READY_LINE):
                return self.lines

    def url_of(self, server: str) -> str:
        for line in self.lines:
            if line.startswith(server):
                return line.split()[-1]
        raise AssertionError(f"no line for {server} in {self.lines}")

    def terminate(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def stderr(self) -> str:
        return self.stderr_path.read_text()


def processes_using(data_dir: Path) -> list[str]:
    """Command lines of running processes that name the data dir (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # gone meanwhile
        if str(data_dir) in command:
            found.append(command)
    return found


def answers_queries(database_url: str) -> bool:
    try:
        with psycopg.connect(database_url, connect_timeout=5) as connection:
            return connection.execute("SELECT 1").fetchone() == (1,)
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="module")
def running_up(servers_root: Path) -> Iterator[RunningUp]:
    up = RunningUp(servers_root / "shared-up")
    try:
        up.wait_until_up()
        yield up
    finally:
        up.terminate()


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
    up = RunningUp(
        fresh_data_dir / "data", PICASSE_DATABASE_URL=database_url, PICASSE_NATS_URL=nats_url
    )
    try:
        lines = up.wait_until_up()
    finally:
        status = up.terminate()

    assert f"PostgreSQL  external  {database_url}" in lines
    assert f"NATS        external  {nats_url}" in lines
    assert status == 0, up.stderr()
    assert not (up.data_dir / "postgres").exists()
    assert not (up.data_dir / "nats").exists()
