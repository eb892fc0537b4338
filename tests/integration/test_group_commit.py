"""Group commit: concurrent sends share a transaction, each answered only once it is committed."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from functools import partial
from uuid import UUID

import psycopg
import pytest
from psycopg import sql

from picasse.adapters.group_commit import GroupCommit
from picasse.domain.accounts import Accounts
from picasse.domain.messaging import IdempotencyKeyReused, Messages, SendRequest
from picasse.runners.settings import Settings
from picasse.runners.wiring import open_messages
from tests.integration.platform_processes import wait_until

EVENTS = "picasse_events"
SENDERS = 8


@pytest.fixture
def customer(accounts: Accounts) -> UUID:
    customer_id = accounts.register_customer(
        organisation="Acme Alerts", contact_name="Carla Contact", email="carla@acme.example",
        phone="+31 6 5555 0000", billing_address="Kade 1, Delft",
    )  # fmt: skip
    accounts.start_subscription(customer_id)
    return customer_id


@pytest.fixture
def messages(settings: Settings, database_url: str, schema: str) -> Iterator[Messages]:
    app = open_messages(settings, database_url, schema=schema, pool_size=SENDERS + 1)
    app.saving = GroupCommit(app)
    yield app
    app.close()


@pytest.fixture
def table_lock(
    database_url: str, schema: str
) -> Iterator[Callable[[], psycopg.Connection[tuple[object, ...]]]]:
    """Holds the events table's lock, as a long write of another process would, until the
    returned connection's transaction ends."""
    held: list[psycopg.Connection[tuple[object, ...]]] = []

    def take() -> psycopg.Connection[tuple[object, ...]]:
        conn = psycopg.connect(database_url)
        held.append(conn)
        conn.execute(
            sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(sql.Identifier(schema, EVENTS))
        )
        return conn

    yield take
    for conn in held:
        conn.close()


def sms(n: int, key: str | None = None) -> SendRequest:
    return SendRequest(
        channel="sms", to=[f"+3161200{n:04d}"], body=f"Gate {n} is open", idempotency_key=key
    )


def in_threads(calls: list[Callable[[], object]]) -> tuple[list[object], list[threading.Thread]]:
    """Starts each call in a thread of its own; their results (or errors) land in the list."""
    results: list[object] = []

    def run(call: Callable[[], object]) -> None:
        try:
            results.append(call())
        except Exception as error:
            results.append(error)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    return results, threads


def stored_messages(database_url: str, schema: str, ids: list[UUID]) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE originator_id = ANY(%s)").format(
                sql.Identifier(schema, EVENTS)
            ),
            (ids,),
        ).fetchone()
    return int(row[0]) if row else 0


def test_sends_arriving_during_a_write_are_committed_together_and_answered_after(
    messages: Messages,
    customer: UUID,
    table_lock: Callable[[], psycopg.Connection[tuple[object, ...]]],
    database_url: str,
    schema: str,
) -> None:
    group_commit = messages.saving
    assert isinstance(group_commit, GroupCommit)
    lock = table_lock()
    # The first send's write waits for the lock; the others gather behind it.
    results, first = in_threads([lambda: messages.send(customer, sms(0))])
    wait_until(group_commit.writing, 30, "the first send's write")
    more, threads = in_threads(
        [partial(messages.send, customer, sms(n)) for n in range(1, SENDERS)]
    )
    threads += first
    wait_until(lambda: group_commit.waiting() == SENDERS - 1, 30, "the sends to gather")
    assert results == [] and more == []  # nothing answered before its commit
    lock.rollback()
    for thread in threads:
        thread.join(30)
    results += more
    assert all(isinstance(r, UUID) for r in results), results
    assert len(results) == SENDERS
    assert stored_messages(database_url, schema, [r for r in results if isinstance(r, UUID)]) == (
        SENDERS
    )
    assert (group_commit.groups, group_commit.saves) == (2, SENDERS)


def test_a_request_that_fails_in_a_group_fails_alone(
    messages: Messages,
    customer: UUID,
    table_lock: Callable[[], psycopg.Connection[tuple[object, ...]]],
    database_url: str,
    schema: str,
) -> None:
    group_commit = messages.saving
    assert isinstance(group_commit, GroupCommit)
    lock = table_lock()
    results, threads = in_threads([lambda: messages.send(customer, sms(0))])
    wait_until(group_commit.writing, 30, "the first send's write")
    # Two requests with one new idempotency key and different bodies: neither finds a
    # claim before writing, so they meet only in the write, which then fails as a whole.
    calls: list[Callable[[], object]] = [
        partial(messages.send, customer, sms(n)) for n in range(1, SENDERS - 2)
    ]
    calls += [partial(messages.send, customer, sms(n, key="order-17")) for n in (50, 51)]
    more, others = in_threads(calls)
    wait_until(lambda: group_commit.waiting() == SENDERS - 1, 30, "the sends to gather")
    lock.rollback()
    for thread in threads + others:
        thread.join(30)
    results += more
    sent = [r for r in results if isinstance(r, UUID)]
    refused = [r for r in results if not isinstance(r, UUID)]
    assert len(sent) == SENDERS - 1, results
    assert len(refused) == 1 and isinstance(refused[0], IdempotencyKeyReused), results
    assert stored_messages(database_url, schema, sent) == SENDERS - 1
