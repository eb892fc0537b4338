"""A view that cannot take an event stops alone under `picasse up`: /health names it, the
other views, the API and message delivery go on. Personal values never stop a view any
more (the views hold them sealed, as bytes): the value no text column holds is a plan."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest

from picasse.domain.customers import Customer
from picasse.runners.settings import Settings
from picasse.runners.wiring import open_accounts
from tests.e2e.platform import RunningUp, environment, picasse_command

pytestmark = pytest.mark.own_servers


@pytest.fixture
def up(tmp_path: Path) -> Iterator[RunningUp]:
    running = RunningUp(tmp_path / "data")
    try:
        running.wait_until_up()
        yield running
    finally:
        running.terminate()


def _cli(up: RunningUp) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*picasse_command(), *args],
            capture_output=True,
            text=True,
            env=environment(up.data_dir),
            timeout=90,
        )

    return run


def _api(up: RunningUp) -> str:
    for line in up.lines:
        if found := re.search(r"listening on (\S+)", line):
            return found.group(1)
    raise AssertionError(up.lines)


def _until(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, what
        time.sleep(0.2)
    return result


def _unwritable_plan(up: RunningUp, customer: UUID) -> None:
    """A subscription no view column can hold (a NUL in the plan, which is not personal and
    stored as text), recorded past the command's checks."""
    settings = Settings(data_dir=up.data_dir, database_url=up.url_of("PostgreSQL"))
    accounts = open_accounts(settings, up.url_of("PostgreSQL"))
    try:
        aggregate: object = accounts.repository.get(customer)
        assert isinstance(aggregate, Customer)
        aggregate._subscription_started("Nul\x00Plan")  # past the guard, as old data would be
        accounts.save(aggregate)
    finally:
        accounts.close()


def _delivered(up: RunningUp) -> int:
    with psycopg.connect(up.url_of("PostgreSQL"), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM traffic_view_deliveries WHERE status = 'delivered'"
        ).fetchone()
    return int(row[0]) if row else 0


def test_a_view_that_cannot_take_an_event_stops_alone_while_the_rest_goes_on(
    up: RunningUp,
) -> None:
    picasse = _cli(up)
    registered = picasse(
        "customers", "register", "--org", "Stuckco", "--contact-name", "Sam Stuck",
        "--email", "sam@stuck.example", "--phone", "+31 6 5555 6666", "--billing-address", "Wal 1, Hoorn",
    )  # fmt: skip
    assert registered.returncode == 0, registered.stderr
    customer = registered.stdout.strip()
    assert picasse("customers", "subscribe", customer).returncode == 0
    _unwritable_plan(up, UUID(customer))

    health = _until(
        lambda: (
            (h := httpx.get(f"{_api(up)}/health", timeout=10).json()).get("stopped_views") and h
        ),
        "the accounts view shows as stopped on /health",
    )
    assert health["status"] == "degraded"
    (stopped,) = health["stopped_views"]
    assert (stopped["view"], stopped["error_type"]) == ("accounts", "DataError")
    assert stopped["failing_at"] > 0 and "Nul" not in str(health)

    sent = picasse(
        "messages", "send", "--customer", customer, "--channel", "email",
        "--to", "someone@rcpt.example", "--body", "still going",
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    _until(lambda: _delivered(up) == 1, "the message is delivered and the traffic view shows it")

    assert up.process.poll() is None
    assert "Failed to record tracking" not in up.stderr()
