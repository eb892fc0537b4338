"""GDPR commands as CLI processes beside a running `picasse up` with traffic flowing.

The customers are registered, and the traffic sent, by this process on the platform's
database (as the API would): the processes started are the twenty operations under test."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from uuid import UUID

import psycopg
import pytest

from picasse.domain.accounts import Accounts
from picasse.domain.messaging import Messages, SendRequest
from picasse.domain.termination import termination_id
from picasse.runners.settings import Settings
from picasse.runners.wiring import open_accounts, open_messages
from tests.e2e.conftest import cli_runner
from tests.e2e.platform import RunningUp, environment

pytestmark = pytest.mark.own_servers

OPERATIONS_AT_ONCE = 4


@pytest.fixture
def running_up(fresh_data_dir: Path) -> Iterator[RunningUp]:
    up = RunningUp(fresh_data_dir)
    try:
        up.wait_until_up()
        yield up
    finally:
        up.terminate()


def _register(accounts: Accounts, messages: Messages, n: int) -> str:
    customer = accounts.register_customer(
        organisation=f"Org {n}", contact_name=f"Contact {n}", email=f"contact{n}@example.org",
        phone=f"+31 6 1000 {n:04d}", billing_address=f"Street {n}, Urk",
    )  # fmt: skip
    accounts.start_subscription(customer)
    messages.send(customer, SendRequest(channel="sms", to=[f"+3161000{n:04d}"], body="hello"))
    return str(customer)


@pytest.mark.slow
@pytest.mark.timeout(600)  # a safety limit: twenty CLI runs beside up on a loaded machine
def test_twenty_gdpr_operations_beside_a_running_platform_all_succeed_and_up_keeps_running(
    running_up: RunningUp, tmp_path: Path
) -> None:
    env = environment(running_up.data_dir, COLUMNS="200")
    picasse = cli_runner(env)
    settings = Settings.from_environ(env)
    database_url = running_up.url_of("PostgreSQL")
    accounts = open_accounts(settings, database_url)
    messages = open_messages(settings, database_url)
    try:
        customers = [_register(accounts, messages, n) for n in range(12)]
    finally:
        accounts.close()
    staying = customers[-1]

    # Traffic keeps the relay, the workers and the views busy meanwhile: a message to the
    # staying customer as each operation starts, from this process (so not one more process
    # each), and every one must be taken while keys are destroyed and epochs replaced.
    started = threading.Semaphore(0)
    stop = threading.Event()
    traffic_failures: list[str] = []
    sent = 0

    def traffic() -> None:
        nonlocal sent
        while started.acquire() and not stop.is_set():
            try:
                messages.send(
                    UUID(staying),
                    SendRequest(channel="email", to=["traffic@example.org"], body="still here"),
                )
                sent += 1
            except Exception as error:  # reported by the assertion below
                traffic_failures.append(repr(error))

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()

    def operate(args: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
        started.release()
        return picasse(*args)

    leaving, erased = customers[:8], customers[8:11]
    operations: list[tuple[str, ...]] = [
        *(("customers", "terminate", c, "--out", str(tmp_path / c)) for c in leaving),
        *(("gdpr", "erase", "--customer", c, "--contact") for c in erased),
        ("gdpr", "erase", "--customer", staying, "--contact"),
        *(
            ("gdpr", "export", "--customer", c, "--out", str(tmp_path / f"export-{c}.zip"))
            for c in [*erased, staying]
        ),
        *(
            (
                "gdpr",
                "disclose",
                "--customer",
                c,
                "--from",
                "2020-01-01",
                "--to",
                "2099-12-31",
                "--authority",
                "Politie",
                "--legal-basis",
                "art. 126ng Sv",
                "--out",
                str(tmp_path / f"disclosed-{c}.zip"),
            )
            for c in [*erased, staying]
        ),
    ]
    assert len(operations) == 20
    try:
        with ThreadPoolExecutor(OPERATIONS_AT_ONCE) as pool:
            results = list(pool.map(operate, operations))
    finally:
        stop.set()
        started.release()
        sender.join(timeout=90)
        messages.close()

    failed = [
        (r.args[3:5], r.returncode, r.stderr.strip().splitlines()[-1:])
        for r in results
        if r.returncode != 0
    ]
    assert failed == []
    assert traffic_failures == []
    assert sent >= 1
    for customer in leaving:
        picasse("gdpr", "verify-statement", str(tmp_path / customer / "statement.json"), check=True)
    assert _statements_signed(running_up.url_of("PostgreSQL")) == {
        termination_id(UUID(c)): 1 for c in leaving
    }
    assert running_up.process.poll() is None, running_up.stderr()
    # Every erasure replaced the key epoch: one epoch file is left, and the platform's
    # processes (which heard of each replacement) still read and write live data.
    assert len(list(running_up.data_dir.glob("epoch-*.key"))) == 1
    picasse(
        "gdpr", "export", "--customer", staying, "--out", str(tmp_path / "after.zip"), check=True
    )


def _statements_signed(database_url: str) -> dict[UUID, int]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT originator_id, count(*) FROM picasse_events"
            " WHERE topic LIKE '%Termination.StatementSigned' GROUP BY originator_id"
        ).fetchall()
    return {UUID(str(originator)): int(n) for originator, n in rows}
