"""`picasse up` as a supervisor: it restarts what dies, gives up on what keeps dying,
takes its children with it when it dies, and stays within its connection budget.

Its back-offs and its failure window are on the platform's clock: these platforms run on a
test clock, which the tests move past each back-off instead of waiting for it.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import httpx
import psycopg
import pytest

from picasse.adapters.clock import move_file_clock
from picasse.runners.up import FAILURE_WINDOW, FAILURES_TO_GIVE_UP
from tests.e2e.platform import (
    STOP_TIMEOUT,
    RunningUp,
    environment,
    on_test_clock,
    picasse_command,
    processes_using,
    wait_until_none_use,
)

pytestmark = pytest.mark.own_servers

DELIVERY_TIMEOUT = 120.0  # generous: two shared cores, restarts in between
LEFTOVER_TIMEOUT = 60.0
RECOVERY_TIMEOUT = 90.0  # the API's pool retries a lost database with a growing delay
CUSTOMER = [
    "customers", "register", "--org", "Restart BV", "--contact-name", "Rita Restart",
    "--email", "rita@restart.example", "--phone", "+31 6 4444 5555",
    "--billing-address", "Weg 5, Ede",
]  # fmt: skip


def picasse(up: RunningUp, *args: str) -> str:
    """`picasse ARGS` as a CLI process beside `up`, on its data dir; its standard output."""
    result = subprocess.run(
        [*picasse_command(), *args],
        capture_output=True,
        text=True,
        env=environment(up.data_dir),
        timeout=120,
    )
    assert result.returncode == 0, f"picasse {' '.join(args)}: {result.stderr}"
    return result.stdout.strip()


def delivered(up: RunningUp, token: str) -> int:
    """How many e-mails in the development Maildir hold `token` (each send has its own)."""
    inbox = up.data_dir / "maildir" / "email"
    count = 0
    for sub in ("new", "cur"):
        for path in (inbox / sub).glob("*"):
            try:
                count += token.encode() in path.read_bytes()
            except FileNotFoundError:
                continue  # moved from new/ to cur/ meanwhile
    return count


def wait_for_deliveries(up: RunningUp, tokens: list[str]) -> dict[str, int]:
    """How many of each once every one has come (or the time-out passed). That none came
    twice is asked at the end of the test, once the platform has had time to send any."""
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while True:
        counts = {token: delivered(up, token) for token in tokens}
        if all(counts.values()) or time.monotonic() > deadline:
            return counts
        time.sleep(0.5)


def recovered_health(up: RunningUp) -> httpx.Response:
    """`/health` once it answers 200: 503 problem-free JSON while the database cannot be
    used (its pool reconnects by itself after a database restart), then 200."""
    deadline = time.monotonic() + RECOVERY_TIMEOUT
    while True:
        try:
            health = httpx.get(f"{up.api_url()}/health", timeout=10)
        except httpx.TransportError:
            health = None  # the API itself is restarting
        if health is not None and health.status_code == 200:
            return health
        if health is not None:
            assert health.status_code == 503, health.text
            assert health.json()["status"] == "unavailable"
        assert time.monotonic() < deadline, health.text if health else "no answer"
        time.sleep(0.5)


def kill_and_pass_its_backoff(up: RunningUp, clock_file: Path, service: str, pid: int) -> float:
    """Kill `service` (`pid`) with SIGKILL, wait until `up` saw it stop, move the test clock
    past the back-off it announced; the back-off, in seconds."""
    os.kill(pid, signal.SIGKILL)
    backoff = backoff_of(up.wait_for_line(f"{service} stopped", timeout=30))
    move_file_clock(clock_file, timedelta(seconds=backoff))
    return backoff


def restarted_pid(up: RunningUp, service: str) -> int:
    """The pid in `up`'s next line "X restarted: … (pid N)" (the state file follows it)."""
    restarted = up.wait_for_line(f"{service} restarted", timeout=90)
    return int(restarted.rsplit("(pid ", 1)[1].rstrip(")"))


def backoff_of(stopped: str) -> float:
    """The back-off of `up`'s line "X stopped: …; restarting in 0.5 s", in seconds."""
    return float(stopped.rsplit("restarting in ", 1)[1].removesuffix(" s"))


def asked_while_restarting(up: RunningUp) -> socket.socket:
    """While the API is down: its port cannot be taken (`up` holds the socket), and a
    request sent now is accepted; the connection, whose answer the next API writes."""
    host, port = up.api_url().removeprefix("http://").rsplit(":", 1)
    with socket.socket() as intruder:
        intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            intruder.bind((host, int(port)))
        except OSError as error:
            assert error.errno == errno.EADDRINUSE, error
        else:
            raise AssertionError(f"port {port} was free while the API restarted")
    connection = socket.create_connection((host, int(port)), timeout=90)
    connection.sendall(
        f"GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    )
    return connection


def status_line(connection: socket.socket) -> str:
    with connection, connection.makefile("rb") as answer:
        return answer.readline().decode().strip()


def kill_and_check_deliveries(
    up: RunningUp, clock_file: Path, customer: str, service: str
) -> list[str]:
    """Kill `service` and see it restarted, with a message sent before and one after it
    delivered; their tokens."""
    before = f"before-{service.replace(' ', '-')}-{os.urandom(4).hex()}"
    after = f"after-{service.replace(' ', '-')}-{os.urandom(4).hex()}"
    send = ["messages", "send", "--customer", customer, "--channel", "email"]
    picasse(up, *send, "--to", "ann@rcpt.example", "--body", before)

    os.kill(up.pid_of(service), signal.SIGKILL)
    stopped = up.wait_for_line(f"{service} stopped", timeout=30)
    # Before the clock moves past the back-off, while the API is down.
    waiting = asked_while_restarting(up) if service == "API" else None
    move_file_clock(clock_file, timedelta(seconds=backoff_of(stopped)))

    up.wait_for_line(f"{service} restarted", timeout=90)
    if waiting is not None:
        assert status_line(waiting) == "HTTP/1.1 200 OK"
    picasse(up, *send, "--to", "bob@rcpt.example", "--body", after)
    assert all(wait_for_deliveries(up, [before, after]).values()), service
    assert up.process.poll() is None, up.stderr()
    health = recovered_health(up)
    restarted = {p["name"]: p["restarts"] for p in health.json()["processes"]}
    assert restarted[service] >= 1, health.json()
    return [before, after]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("services", "then_keep_killing"),
    [(("Worker 1", "Relay", "Projections"), "Relay"), (("API", "NATS", "PostgreSQL"), None)],
    ids=["platform-processes", "api-and-servers"],
)
def test_up_restarts_each_killed_child_and_stops_only_when_one_keeps_dying(
    fresh_data_dir: Path, services: tuple[str, ...], then_keep_killing: str | None
) -> None:
    # One `up` for each half of the sequence: the halves run beside each other.
    clock_file, clock_env = on_test_clock(fresh_data_dir / "data")
    up = RunningUp(fresh_data_dir / "data", PICASSE_DRAIN_SECONDS="5", **clock_env)
    try:
        up.wait_until_up()
        customer = picasse(up, *CUSTOMER)
        picasse(up, "customers", "subscribe", customer)

        tokens = []
        for service in services:
            listening = up.api_url()
            tokens += kill_and_check_deliveries(up, clock_file, customer, service)
            # PICASSE_HTTP_PORT=0 (the tests' platform): up bound one port, the API keeps
            # it through restarts, and the public URL in every child's links names it.
            assert up.api_url() == listening == up.url_of("Public URL"), up.lines

        if then_keep_killing:
            backoffs = keep_killing(up, clock_file, then_keep_killing)
            status = up.process.wait(60)
    finally:
        if up.process.poll() is None:
            up.terminate()

    if then_keep_killing:
        # Its second failure waits twice as long as its first (above); after a quiet
        # window on the platform's clock the back-off starts over and nothing is held
        # against it; five failures within the window stop the platform.
        assert backoffs == [1.0, 0.5, 1.0, 2.0, 4.0], up.lines
        assert status == 1
        reasons = [line for line in up.stderr().splitlines() if line.startswith("picasse up: ")]
        assert len(reasons) == 1, up.stderr()
        keeps_failing = (
            f"{then_keep_killing} keeps failing ({FAILURES_TO_GIVE_UP} times in 2 minutes"
        )
        assert keeps_failing in reasons[0], up.stderr()
    else:  # a platform that recovered from every kill stops cleanly when asked
        assert up.process.returncode == 0, up.stderr()
    assert wait_until_none_use(up.data_dir, LEFTOVER_TIMEOUT) == []
    # Every message sent around a kill was delivered once: none lost, none twice.
    assert {token: delivered(up, token) for token in tokens} == dict.fromkeys(tokens, 1)


def keep_killing(up: RunningUp, clock_file: Path, service: str) -> list[float]:
    """Kill `service` once more, let the failure window pass on the test clock, then kill
    it each time it is back until `up` gives up; the back-offs `up` announced."""
    backoffs = [kill_and_pass_its_backoff(up, clock_file, service, up.pid_of(service))]
    pid = restarted_pid(up, service)
    move_file_clock(clock_file, timedelta(seconds=FAILURE_WINDOW))
    for _ in range(FAILURES_TO_GIVE_UP - 1):
        backoffs.append(kill_and_pass_its_backoff(up, clock_file, service, pid))
        pid = restarted_pid(up, service)
    os.kill(pid, signal.SIGKILL)  # the fifth within the window
    return backoffs


def connections_held(up: RunningUp) -> int:
    with psycopg.connect(up.url_of("PostgreSQL"), autocommit=True) as connection:
        row = connection.execute(
            # up's children name their connections "picasse <role>" (PGAPPNAME).
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name LIKE 'picasse %'"
        ).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.slow
def test_up_killed_with_sigkill_leaves_no_process_using_its_data_dir_and_held_its_budget(
    fresh_data_dir: Path,
) -> None:
    up = RunningUp(fresh_data_dir / "data", PICASSE_DRAIN_SECONDS="5")
    up.wait_until_up()
    assert processes_using(up.data_dir)
    customer = up.cli(
        "customers", "register", "--org=Budget BV", "--contact-name=Ann",
        "--email=ann@example.com", "--phone=+31612345678", "--billing-address=Street 1",
    ).strip()  # fmt: skip
    up.cli("customers", "subscribe", customer)
    held = connections_held(up)
    for n in range(5):  # while messages flow through relay, worker and views
        up.cli(
            "messages", "send", f"--customer={customer}", "--channel=email",
            f"--to=budget{n}@example.com", "--body=Hello",
        )  # fmt: skip
        held = max(held, connections_held(up))

    up.process.kill()
    up.process.wait()

    left = wait_until_none_use(up.data_dir, LEFTOVER_TIMEOUT)
    handles = up.data_dir / "postgres" / ".handle_pids.json"
    # What the guard may have said, and who still held the server, if it did not stop.
    assert left == [], (
        up.stderr()[-3000:],
        handles.read_text() if handles.exists() else "no handle list",
    )
    assert 0 < held <= 20  # PICASSE_DB_CONNECTIONS's default


def test_sigterm_during_start_up_stops_everything_cleanly(fresh_data_dir: Path) -> None:
    up = RunningUp(fresh_data_dir / "data", PICASSE_DRAIN_SECONDS="5")
    up.wait_for_line("NATS")  # the servers run; the children are starting

    up.process.send_signal(signal.SIGTERM)
    status = up.process.wait(STOP_TIMEOUT)  # a safety limit: it stops, on a busy machine too

    assert status == 0, up.stderr()
    assert wait_until_none_use(up.data_dir, LEFTOVER_TIMEOUT) == []
