"""One writer per view, with `picasse project` as processes: the holder advances a view,
a second projector stands by and takes over, commands wait for the holder, and a
rebuild refuses to run beside it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from picasse.adapters.master_key import create_master_key
from picasse.domain.accounts import Accounts
from picasse.runners.project import VIEWS, LiveViews, Views, ViewStuck
from picasse.runners.settings import Settings
from picasse.runners.wiring import open_accounts

from .conftest import Run

READY_TIMEOUT = 60.0


class Projector:
    """`picasse project` as a process on the test's schema."""

    def __init__(self, env: dict[str, str], stderr: Path) -> None:
        self.stderr_path = stderr
        with stderr.open("w") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "picasse.runners.cli", "project"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.startswith("projections running"), self.stderr()

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def settings(cli_env: dict[str, str], database_url: str) -> Settings:
    settings = Settings(
        data_dir=Path(cli_env["PICASSE_DATA_DIR"]),
        database_url=database_url,
        database_schema=cli_env["PICASSE_DATABASE_SCHEMA"],
    )
    create_master_key(settings.master_key_path)
    return settings


@pytest.fixture
def accounts(settings: Settings, database_url: str) -> Iterator[Accounts]:
    app = open_accounts(settings, database_url)
    yield app
    app.close()


@pytest.fixture
def projectors(cli_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[[], Projector]]:
    started: list[Projector] = []

    def start() -> Projector:
        projector = Projector(cli_env, tmp_path / f"projector-{len(started)}.stderr")
        started.append(projector)
        return projector

    yield start
    for projector in started:
        projector.stop()


@pytest.fixture
def views(settings: Settings, database_url: str) -> Iterator[Views]:
    opened = Views(settings, database_url)
    yield opened
    opened.close()


def _register(accounts: Accounts, n: int) -> Any:
    return accounts.register_customer(
        organisation=f"Writerco {n}", contact_name=f"Wim Writer {n}", email=f"wim{n}@writer.example",
        phone=f"+31 6 2222 33{n:02d}", billing_address=f"Kade {n}, Delft",
    )  # fmt: skip


def _holders(database_url: str, schema: str) -> dict[str, int]:
    """Which backend holds each view's role (pid of its connection)."""
    holders = {}
    with psycopg.connect(database_url, autocommit=True) as conn:
        for name in VIEWS:
            row = conn.execute(
                sql.SQL(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                    " AND ((classid::bigint << 32) | objid::bigint) = hashtextextended(%s, 0)"
                ),
                (f"picasse:{schema}:view:{name}",),
            ).fetchone()
            if row:
                holders[name] = row[0]
    return holders


def _until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_two_projectors_one_advances_each_view_and_the_other_takes_over_after_a_kill(
    projectors: Callable[[], Projector], accounts: Accounts, views: Views, settings: Settings,
    database_url: str,
) -> None:  # fmt: skip
    first = projectors()
    schema = settings.database_schema
    _until(lambda: len(_holders(database_url, schema)) == len(VIEWS), "the first projector claims")
    second = projectors()
    customers = [_register(accounts, n) for n in range(5)]
    live = LiveViews(views)
    live.catch_up(timeout=30)
    assert {row.id for row in live.view("accounts").customers()} == set(customers)
    held_by = set(_holders(database_url, schema).values())
    assert len(held_by) == 1  # one connection, one process, holds all three

    first.process.kill()  # SIGKILL: its claims end with its connection
    first.process.wait()
    _until(
        lambda: (
            len(h := _holders(database_url, schema)) == len(VIEWS) and set(h.values()) != held_by
        ),
        "the second projector takes the views over",
    )
    later = [_register(accounts, n) for n in range(5, 10)]
    live.catch_up(timeout=30)
    assert {row.id for row in live.view("accounts").customers()} == set(customers + later)
    assert second.process.poll() is None
    for projector in (first, second):
        assert "Failed to record tracking" not in projector.stderr()


def test_a_projector_killed_while_catching_up_leaves_whole_pages_and_the_next_goes_on(
    projectors: Callable[[], Projector], accounts: Accounts, views: Views, settings: Settings,
    database_url: str,
) -> None:  # fmt: skip
    """A page of events goes into a view in one transaction with its position: a SIGKILL
    leaves the view at the end of a page, holding the rows of exactly the events up to
    there; the next projector goes on from there and takes nothing twice."""
    from picasse.domain.customers import Contact, Customer
    from picasse.domain.values import EmailAddress, PhoneNumber
    from picasse.runners.project import BATCH

    backlog = [
        Customer(
            organisation=f"Backlogco {n}",
            contact=Contact(
                name=f"Bea Backlog {n}",
                email=EmailAddress.parse(f"bea{n}@backlog.example"),
                phone=PhoneNumber.parse(f"+31 6 3333 {n:04d}"),
            ),
            billing_address=f"Gracht {n}, Gouda",
        )
        for n in range(BATCH * 12)
    ]
    accounts.save(*backlog)  # as a projector that was down finds it
    follower = views.followers["accounts"]
    ids = [
        n.id
        for n in views.reader.recorder.select_notifications(
            0, len(backlog), topics=follower.topics, inclusive_of_start=False
        )
    ]
    first = projectors()
    _until(lambda: follower.position() > 0, "the first projector takes a page in", timeout=60)
    first.process.kill()
    first.process.wait()
    position = follower.position()
    assert position in ids[BATCH - 1 :: BATCH] and position < ids[-1]  # a page's end
    taken = ids.index(position) + 1
    assert len(follower.view.customers()) == taken  # the rows of those events, all of them
    assert follower.view.customer_counts() == {"registered": taken}

    second = projectors()
    LiveViews(views).catch_up(timeout=60)
    assert {row.id for row in follower.view.customers()} == {c.id for c in backlog}
    assert follower.view.customer_counts() == {"registered": len(backlog)}
    assert "Failed to record tracking" not in second.stderr()


def test_a_command_beside_a_running_projector_waits_for_it_instead_of_writing(
    projectors: Callable[[], Projector], accounts: Accounts, views: Views, settings: Settings,
    database_url: str,
) -> None:  # fmt: skip
    projector = projectors()
    schema = settings.database_schema
    _until(lambda: len(_holders(database_url, schema)) == len(VIEWS), "the projector claims")
    live = LiveViews(views)
    os.kill(projector.process.pid, signal.SIGSTOP)  # it holds the views but takes nothing in
    try:
        customer = _register(accounts, 1)
        with pytest.raises(ViewStuck, match="no process took it in"):
            live.catch_up(timeout=2)
        assert live.view("accounts").customers() == []  # the command wrote nothing
    finally:
        os.kill(projector.process.pid, signal.SIGCONT)
    live.catch_up(timeout=30)
    assert [row.id for row in live.view("accounts").customers()] == [customer]
    assert "Failed to record tracking" not in projector.stderr()


def test_a_rebuild_beside_a_running_projector_is_refused_in_one_line(
    projectors: Callable[[], Projector], picasse: Run, settings: Settings, database_url: str
) -> None:
    projectors()
    schema = settings.database_schema
    _until(lambda: len(_holders(database_url, schema)) == len(VIEWS), "the projector claims")
    result = picasse("project", "--rebuild", "accounts")
    assert result.returncode == 1, result.stderr
    assert "running projector" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    once = picasse("project", "--once")
    assert once.returncode == 1 and "running projector" in once.stderr


def test_a_rebuild_without_a_projector_builds_the_view_again_from_the_log(
    picasse: Run, accounts: Accounts, views: Views
) -> None:
    customers = [_register(accounts, n) for n in range(3)]
    LiveViews(views).catch_up(timeout=30)
    before = views.followers["accounts"].view.customers()
    result = picasse("project", "--rebuild", "accounts")
    assert result.returncode == 0, result.stderr
    assert "accounts: at" in result.stdout and "(lag 0)" in result.stdout
    after = views.followers["accounts"].view.customers()
    assert after == before and {row.id for row in after} == set(customers)
