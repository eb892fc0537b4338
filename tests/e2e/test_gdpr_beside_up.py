"""GDPR commands as CLI processes beside a running `picasse up` with traffic flowing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from uuid import UUID

import psycopg
import pytest

from picasse.domain.termination import termination_id
from tests.e2e.conftest import Run, cli_runner
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


def _register(picasse: Run, n: int) -> str:
    customer = picasse(
        "customers", "register", "--org", f"Org {n}", "--contact-name", f"Contact {n}",
        "--email", f"contact{n}@example.org", "--phone", f"+31 6 1000 {n:04d}",
        "--billing-address", f"Street {n}, Urk", check=True,
    ).stdout.strip()  # fmt: skip
    picasse("customers", "subscribe", customer, check=True)
    picasse("messages", "send", "--customer", customer, "--channel", "sms",
            "--to", f"+3161000{n:04d}", "--body", "hello", check=True)  # fmt: skip
    return customer


@pytest.mark.slow
@pytest.mark.timeout(600)  # a safety limit: twenty CLI runs beside up on a loaded machine
def test_twenty_gdpr_operations_beside_a_running_platform_all_succeed_and_up_keeps_running(
    running_up: RunningUp, tmp_path: Path
) -> None:
    picasse = cli_runner(environment(running_up.data_dir, COLUMNS="200"))
    with ThreadPoolExecutor(OPERATIONS_AT_ONCE) as pool:
        customers = list(pool.map(lambda n: _register(picasse, n), range(12)))
    staying = customers[-1]

    stop = threading.Event()

    def traffic() -> None:  # keeps the relay, the workers and the views busy meanwhile
        while not stop.is_set():
            picasse("messages", "send", "--customer", staying, "--channel", "email",
                    "--to", "traffic@example.org", "--body", "still here")  # fmt: skip

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
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
            results = list(pool.map(lambda args: picasse(*args), operations))
    finally:
        stop.set()
        sender.join(timeout=90)

    failed = [
        (r.args[3:5], r.returncode, r.stderr.strip().splitlines()[-1:])
        for r in results
        if r.returncode != 0
    ]
    assert failed == []
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
