"""The audit replay: the whole log replayed into scratch views equals the live views, and
any difference is reported by view, row and column without showing personal data.

One log and its live views (built by the platform's own projection runners) serve the
module; a test that tampers with a live view puts the rows back afterwards.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec
import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from picasse.adapters.clock import SystemClock
from picasse.adapters.master_key import create_master_key
from picasse.adapters.postgres.audit import (
    RUN_LOCKS,
    AuditCannotRun,
    ReplayReport,
    Scope,
    audit_replay,
    live_tracking_table,
    replay_into_views,
    scratch_views,
    view_keys,
)
from picasse.adapters.postgres.store import factory_of
from picasse.adapters.postgres.views import last_notification_in
from picasse.domain.accounts import Accounts
from picasse.domain.messages import delivery_id
from picasse.domain.messaging import Messages, SendRequest
from picasse.domain.personal import Trigger
from picasse.domain.values import Role
from picasse.runners.audit import replay_main
from picasse.runners.project import VIEWS, LogReader, view_env
from picasse.runners.settings import Settings
from picasse.runners.wiring import open_accounts, open_messages, open_privacy
from tests.integration.projection_runners import running, statuses
from tests.users import add_customer_user

# Personal data the log holds, and a tampered value: none of it may appear in a report.
PLAINTEXT = (
    "Auditco", "Ann Auditor", "ann1", "ann2", "ann3", "auditco.example", "+316111133",
    "Laan", "rcpt.example", "Hello auditors", "192.0.2.7", "tampered",
)  # fmt: skip


@dataclass
class World:
    settings: Settings
    database_url: str
    customers: list[UUID]  # 1: terminated and erased; 2: this month's traffic erased; 3: intact

    def catch_up(self) -> None:
        """Bring the live views up to the head of the log with the platform's own runners."""
        with running(self.settings, self.database_url, list(VIEWS)) as runners:
            deadline = time.monotonic() + 20
            while not all(s.lag == 0 for s in statuses(runners)):
                assert time.monotonic() < deadline, statuses(runners)
                for runner in runners.values():
                    runner.run_forever(timeout=0)
                time.sleep(0.05)


def _customer(accounts: Accounts, n: int) -> UUID:
    customer_id = accounts.register_customer(
        organisation=f"Auditco {n}", contact_name=f"Ann Auditor {n}", email=f"ann{n}@auditco.example",
        phone=f"+31 6 1111 33{n:02d}", billing_address=f"Laan {n}, Leiden",
    )  # fmt: skip
    accounts.start_subscription(customer_id)
    add_customer_user(
        accounts,
        customer_id=customer_id,
        login=f"ann{n}",
        role=Role.CUSTOMER_USER,
        password="a long password",
    )
    return customer_id


def _traffic(messages: Messages, customer: UUID) -> None:
    request = SendRequest(
        channel="email", to=["a@rcpt.example", "b@rcpt.example"], body="Hello auditors"
    )
    message_id = messages.send(customer, request, client_ip="192.0.2.7")
    first = delivery_id(message_id, 0)
    messages.start_attempt(first)
    messages.record_sent(first, "smtp", "<ref>", final=True)


@pytest.fixture(scope="module")
def world(database_url: str) -> Iterator[World]:
    """Three customers with a user and traffic each: the first terminated and erased, the
    second's traffic of this month erased by retention, the third's contact changed."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    data_dir = Path(tempfile.mkdtemp(prefix="audit-replay-"))
    settings = Settings(data_dir=data_dir, database_url=database_url, database_schema=schema)
    create_master_key(settings.master_key_path)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    with ExitStack() as apps:
        accounts = apps.enter_context(_closing(open_accounts(settings, database_url)))
        messages = apps.enter_context(_closing(open_messages(settings, database_url)))
        privacy = apps.enter_context(_closing(open_privacy(settings, database_url)))
        customers = [_customer(accounts, n) for n in (1, 2, 3)]
        for customer in customers:
            _traffic(messages, customer)
        accounts.change_contact(customers[2], email="changed@auditco.example")
        accounts.terminate_customer(customers[0])
        privacy.erase_tenant(customers[0], "termination")
        privacy.erase_subject(
            customers[1],
            f"traffic/{messages.clock.now():%Y-%m}",
            "retention",
            trigger=Trigger.RETENTION,
        )
        _traffic(messages, customers[2])
    world = World(settings, database_url, customers)
    world.catch_up()
    yield world
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@contextmanager
def _closing(app: Any) -> Iterator[Any]:
    try:
        yield app
    finally:
        app.close()


@pytest.fixture(scope="module")
def reader(world: World) -> Iterator[LogReader]:
    app = LogReader(view_env(world.settings, world.database_url))
    yield app
    app.close()


@pytest.fixture
def replay(reader: LogReader) -> Callable[..., ReplayReport]:
    def run(scope: Scope | None = None) -> ReplayReport:
        return audit_replay(reader.recorder, reader.mapper, reader.name, VIEWS, scope or Scope())

    return run


@pytest.fixture
def raw(world: World) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(world.settings.database_schema)))  # fmt: skip
        yield conn


@contextmanager
def _tampered(
    raw: psycopg.Connection[Any], table: str, where: str, params: tuple[Any, ...], changes: str
) -> Iterator[list[UUID]]:
    """Change live view rows behind the projection's back; put them back afterwards."""
    query = sql.SQL(f"SELECT * FROM {{}} WHERE {where}").format(sql.Identifier(table))
    with raw.cursor(row_factory=dict_row) as curs:
        before = curs.execute(query, params).fetchall()
    raw.execute(sql.SQL(f"UPDATE {{}} SET {changes} WHERE {where}").format(sql.Identifier(table)), params)  # fmt: skip
    try:
        yield [row["id"] for row in before]
    finally:
        for row in before:
            raw.execute(
                sql.SQL("DELETE FROM {} WHERE id = %s").format(sql.Identifier(table)), (row["id"],)
            )
            raw.execute(
                sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                    sql.Identifier(table),
                    sql.SQL(", ").join(map(sql.Identifier, row)),
                    sql.SQL(", ").join(sql.Placeholder() * len(row)),
                ),
                list(row.values()),
            )


# The counts the projections keep beside the rows: compared too, in every scope whole (a
# count belongs to no single row's period).
COUNT_TABLES = ("customer_counts", "user_counts", "daily", "daily_all")


def _rows_compared(report: ReplayReport) -> dict[tuple[str, str], int]:
    """Rows compared in the accounts and traffic views (others have tests of their own)."""
    return {
        (t.view, t.table): t.rows
        for t in report.tables
        if t.view in ("accounts", "traffic") and t.table not in COUNT_TABLES
    }


def _scratch_tables(raw: psycopg.Connection[Any]) -> list[str]:
    rows = raw.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        r" AND tablename LIKE 'audit\_%' ORDER BY 1"
    ).fetchall()
    return [name for (name,) in rows]


def test_a_replay_after_erasures_equals_the_live_views_and_counts_the_erased_fields(
    replay: Callable[..., ReplayReport], raw: psycopg.Connection[Any]
) -> None:
    report = replay()
    assert report.ok and report.mismatch_count == 0, report.mismatches
    assert _rows_compared(report) == {
        ("accounts", "customers"): 3,
        ("accounts", "users"): 3,
        ("accounts", "api_keys"): 0,
        ("traffic", "messages"): 4,
        ("traffic", "deliveries"): 8,
    }
    counts = {t.table: t.rows for t in report.tables if t.table in COUNT_TABLES}
    # Subscriptions registered and active; users of 3 customers; (day, channel,
    # status) per customer, and summed: kept by the replay exactly as live.
    assert counts == {"customer_counts": 3, "user_counts": 3, "daily": 9, "daily_all": 3}
    assert report.events == report.head == report.positions["traffic"]
    # Read as erased while replaying, at least: customer 1's organisation, billing
    # address and contact (5), its user's login and hash (2), its message's body, subject
    # and IP (3) and recipients (2); customer 2's IP and recipients of the month (3).
    assert report.erased_values >= 5 + 2 + 3 + 2 + 3
    # Held as erased in the views: customer 1's 5 fields and login, 2 + 2 recipients.
    assert report.erased_columns == 5 + 1 + 2 + 2
    assert _scratch_tables(raw) == []


def test_a_tampered_view_row_is_reported_by_view_row_and_column_without_its_values(
    world: World, replay: Callable[..., ReplayReport], raw: psycopg.Connection[Any]
) -> None:
    _, second, third = world.customers
    one_delivery = "id = (SELECT min(id::text)::uuid FROM traffic_view_deliveries WHERE customer_id = %s)"  # fmt: skip
    with (
        _tampered(raw, "traffic_view_deliveries", one_delivery, (third,),
                  "recipient = set_byte(recipient, 29, get_byte(recipient, 29) # 255)") as (delivery,),
        _tampered(raw, "accounts_view_customers", "id = %s", (second,),
                  "contact_name = NULL, subscription = 'terminated'"),
    ):  # fmt: skip
        report = replay()
    assert not report.ok and report.mismatch_count == 3
    found = {(m.view, m.table, m.row, m.column): (m.live, m.replayed) for m in report.mismatches}
    assert found == {
        ("traffic", "deliveries", str(delivery), "recipient"): ("set", "set"),
        ("accounts", "customers", str(second), "contact_name"): ("erased", "set"),
        ("accounts", "customers", str(second), "subscription"): ("terminated", "active"),
    }
    text = msgspec.json.encode(report).decode()
    assert [value for value in PLAINTEXT if value in text] == []
    assert _scratch_tables(raw) == []


def test_a_row_missing_from_a_live_view_is_reported_as_missing(
    world: World, replay: Callable[..., ReplayReport], raw: psycopg.Connection[Any]
) -> None:
    row = raw.execute(
        "SELECT id FROM accounts_view_users WHERE customer_id = %s", (world.customers[2],)
    ).fetchone()
    assert row is not None
    (user,) = row
    with _tampered(raw, "accounts_view_users", "id = %s", (user,), "login = login"):
        raw.execute("DELETE FROM accounts_view_users WHERE id = %s", (user,))
        report = replay()
    assert [(m.view, m.table, m.row, m.column, m.live, m.replayed) for m in report.mismatches] == [
        ("accounts", "users", str(user), None, "missing", "present")
    ]


def test_a_customer_filter_compares_only_that_customers_rows(
    world: World, replay: Callable[..., ReplayReport], raw: psycopg.Connection[Any]
) -> None:
    first, _, third = world.customers
    with _tampered(
        raw, "traffic_view_deliveries", "customer_id = %s", (first,), "status = 'failed'"
    ):
        report = replay(Scope(customer=third))
        erased_customer = replay(Scope(customer=first))
    assert report.ok
    assert _rows_compared(report) == {
        ("accounts", "customers"): 1,
        ("accounts", "users"): 1,
        ("accounts", "api_keys"): 0,
        ("traffic", "messages"): 2,
        ("traffic", "deliveries"): 4,
    }
    assert {(m.table, m.column, m.live, m.replayed) for m in erased_customer.mismatches} == {
        ("deliveries", "status", "failed", "delivered"),
        ("deliveries", "status", "failed", "queued"),
    }


def test_a_period_filter_compares_only_rows_of_that_period(
    replay: Callable[..., ReplayReport],
) -> None:
    now = SystemClock().now()
    later = replay(Scope(start=now + timedelta(days=1)))
    assert later.ok and sum(_rows_compared(later).values()) == 0
    earlier = replay(Scope(end=now - timedelta(days=1)))
    assert earlier.ok and sum(_rows_compared(earlier).values()) == 0
    today = replay(Scope(start=now - timedelta(hours=1), end=now + timedelta(hours=1)))
    assert today.ok and sum(_rows_compared(today).values()) == 3 + 3 + 4 + 8


def test_events_the_live_views_have_not_taken_in_yet_cause_no_mismatch(
    world: World, replay: Callable[..., ReplayReport]
) -> None:
    with (
        _closing(open_accounts(world.settings, world.database_url)) as accounts,
        _closing(open_messages(world.settings, world.database_url)) as messages,
    ):
        customer = accounts.register_customer(
            organisation="Lateco", contact_name="Lou Late", email="lou@late.example",
            phone="+31 6 2222 3333", billing_address="Weg 1",
        )  # fmt: skip
        accounts.start_subscription(customer)
        _traffic(messages, customer)
    try:
        report = replay()
        assert report.ok, report.mismatches
        assert report.positions["traffic"] < report.head
        assert _rows_compared(report)[("traffic", "deliveries")] == 8
    finally:
        world.catch_up()  # the next test finds the views at the head again


def test_the_tables_of_a_killed_run_are_dropped_by_the_next_run_and_a_running_ones_kept(
    world: World, replay: Callable[..., ReplayReport], raw: psycopg.Connection[Any]
) -> None:
    for run in ("0badc0de", "00c0ffee"):  # the first was killed; the second still runs
        raw.execute(f"CREATE UNLOGGED TABLE audit_{run}_accounts_view_customers (id uuid)")
    with psycopg.connect(world.database_url, autocommit=True) as running_audit:
        running_audit.execute(
            "SELECT pg_advisory_lock(%s::int4, %s::int4)", (RUN_LOCKS, 0x00C0FFEE - 2**31)
        )
        assert replay().ok
        assert _scratch_tables(raw) == ["audit_00c0ffee_accounts_view_customers"]
    raw.execute("DROP TABLE audit_00c0ffee_accounts_view_customers")


def test_an_interrupted_replay_drops_its_indexed_scratch_tables(
    reader: LogReader, raw: psycopg.Connection[Any]
) -> None:
    seen: list[list[str]] = []
    indexed: list[tuple[str]] = []

    def interrupt(done: int, total: int) -> None:
        if done:
            seen.append(_scratch_tables(raw))
            indexed.extend(
                raw.execute(
                    "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema()"
                    " AND tablename LIKE 'audit%%deliveries' ORDER BY 1"
                ).fetchall()
            )
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        audit_replay(reader.recorder, reader.mapper, reader.name, VIEWS, progress=interrupt)
    assert len(seen[0]) == sum(len(view.tables) + 1 for _, view in VIEWS.values())
    # The scratch deliveries have the live table's indexes, erasures replay by index.
    assert any("(customer_id, queued_at, id)" in definition for (definition,) in indexed), indexed
    assert _scratch_tables(raw) == []


def test_pages_commit_in_order_behind_the_reading_and_a_page_that_fails_fails_the_replay(
    reader: LogReader, raw: psycopg.Connection[Any]
) -> None:
    """A page's writes commit in a thread of their own while the next page is read: in
    order, all of them before the replay returns, and an error in one is the replay's."""
    head = reader.recorder.max_notification_id() or 0
    datastore = factory_of(reader).datastore
    with scratch_views(datastore, VIEWS, keys=factory_of(reader).keys) as scratch:
        traffic = scratch["traffic"].view
        positions: list[int] = []

        def committed(done: int, total: int) -> None:
            positions.append(traffic.max_tracking_id(reader.name) or 0)

        targets = {name: (projection, head) for name, projection in scratch.items()}
        replay_into_views(
            reader.recorder, reader.mapper, reader.name, targets, page_size=2, progress=committed
        )
        assert positions == sorted(positions)
        for name, projection in scratch.items():
            last = last_notification_in(reader.recorder, head, projection.topics)
            assert (projection.view.max_tracking_id(reader.name) or 0) == last, name

    with scratch_views(datastore, VIEWS, keys=factory_of(reader).keys) as scratch:
        deliveries = scratch["traffic"].view.t["deliveries"]

        def refuse_deliveries(done: int, total: int) -> None:
            if done == 2:  # no delivery yet: the first page holds a customer's events
                raw.execute(
                    sql.SQL("ALTER TABLE {} ADD CHECK (false) NOT VALID").format(deliveries)
                )

        targets = {name: (projection, head) for name, projection in scratch.items()}
        with pytest.raises(Exception, match="violates check constraint"):
            replay_into_views(
                reader.recorder, reader.mapper, reader.name, targets, page_size=2,
                progress=refuse_deliveries,
            )  # fmt: skip
        assert (scratch["traffic"].view.max_tracking_id(reader.name) or 0) < head
    assert _scratch_tables(raw) == []


def test_without_live_views_the_replay_cannot_run(
    settings: Settings, database_url: str, schema: str, accounts: Accounts
) -> None:
    accounts.register_customer(
        organisation="Newco", contact_name="Nel New", email="nel@new.example",
        phone="+31 6 4444 5555", billing_address="Pad 2",
    )  # fmt: skip
    here = msgspec.structs.replace(settings, database_schema=schema)
    with _closing(LogReader(view_env(here, database_url))) as reader:
        with pytest.raises(AuditCannotRun, match="picasse project"):
            audit_replay(reader.recorder, reader.mapper, reader.name, VIEWS)
        datastore = reader.recorder.datastore
        with datastore.get_connection() as conn:
            left = conn.execute(
                "SELECT count(*) AS n FROM pg_tables WHERE tablename LIKE %s AND schemaname = %s",
                (r"audit\_%", schema),
            ).fetchone()
    assert left is not None and left["n"] == 0


def test_a_sealed_value_changed_in_the_log_fails_the_replay_with_one_line(
    settings: Settings, database_url: str, schema: str, accounts: Accounts,
    raw_schema: psycopg.Connection[Any], capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    customer = accounts.register_customer(
        organisation="Sealco", contact_name="Sam Seal", email="sam@seal.example",
        phone="+31 6 4444 6666", billing_address="Dam 4",
    )  # fmt: skip
    here = msgspec.structs.replace(settings, database_schema=schema)
    with _closing(LogReader(view_env(here, database_url))) as reader:
        _build_live_views(reader)
    # Flip the last byte of the stored event: inside the last sealed field's tag. (The hash
    # chain breaks too, which `audit verify` reports; the replay must not carry on either.)
    raw_schema.execute(
        "UPDATE picasse_events SET state = overlay(state placing"
        " set_byte(substring(state from length(state)), 0,"
        " get_byte(substring(state from length(state)), 0) # 1)"
        " from length(state)) WHERE originator_id = %s",
        (customer,),
    )
    assert replay_main(here) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("picasse: the log does not replay: sealed field ")
    assert str(customer) in line and "Sam" not in line


def _build_live_views(reader: LogReader) -> None:
    """The live views up to the head, built with the projections, one event at a time."""
    datastore = factory_of(reader).datastore
    head = reader.recorder.max_notification_id() or 0
    targets = {}
    for name, (projection_class, view_class) in VIEWS.items():
        view = view_class(
            datastore,
            tracking_table_name=live_tracking_table(projection_class),
            **view_keys(view_class, factory_of(reader).keys),
        )
        view.create_table()
        targets[name] = (projection_class(view), head)
    replay_into_views(reader.recorder, reader.mapper, reader.name, targets)


@pytest.fixture
def raw_schema(database_url: str, schema: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        yield conn
