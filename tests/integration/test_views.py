"""The views follow the log, rebuild to the same rows, and forget plaintext when keys go."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import date, datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec
import pytest

from picasse.adapters.clock import SystemClock
from picasse.domain.accounts import Accounts
from picasse.domain.messages import FailureReason, delivery_id
from picasse.domain.messaging import Messages, SendRequest
from picasse.domain.personal import Trigger
from picasse.domain.privacy import Privacy
from picasse.domain.values import Role
from picasse.runners.project import VIEWS
from picasse.runners.settings import Settings
from picasse.runners.wiring import open_privacy
from tests.integration.projection_runners import caught_up, running
from tests.users import add_customer_user

Runners = dict[str, Any]


@pytest.fixture
def here(settings: Settings, schema: str) -> Settings:
    return msgspec.structs.replace(settings, database_schema=schema)


@pytest.fixture
def project(here: Settings, database_url: str) -> Callable[..., AbstractContextManager[Runners]]:
    return lambda *names: running(here, database_url, list(names or VIEWS))


@pytest.fixture
def privacy(settings: Settings, database_url: str, schema: str) -> Iterator[Privacy]:
    app = open_privacy(settings, database_url, schema=schema)
    yield app
    app.close()


def _customer(accounts: Accounts, n: int = 1) -> UUID:
    customer_id = accounts.register_customer(
        organisation=f"Viewco {n}", contact_name=f"Vera Viewer {n}", email=f"vera{n}@viewco.example",
        phone=f"+31 6 1111 22{n:02d}", billing_address=f"Laan {n}, Leiden",
    )  # fmt: skip
    accounts.start_subscription(customer_id)
    return customer_id


def _deliver(messages: Messages, message_id: UUID, index: int) -> None:
    ident = delivery_id(message_id, index)
    messages.start_attempt(ident)
    messages.record_sent(ident, "smtp", "<ref>", final=True)


def _traffic(messages: Messages, customer: UUID) -> UUID:
    message_id = messages.send(
        customer, SendRequest(channel="email", to=["a@rcpt.example", "b@rcpt.example"], body="Hi")
    )
    _deliver(messages, message_id, 0)
    ident = delivery_id(message_id, 1)
    messages.start_attempt(ident)
    messages.record_permanent_failure(ident, FailureReason.INVALID_RECIPIENT)
    return message_id


def _today() -> date:
    """Today (UTC), as the views count deliveries by the day."""
    return SystemClock().now().date()


def _window() -> tuple[datetime, datetime]:
    now = SystemClock().now()
    return now - timedelta(days=1), now + timedelta(days=1)


def test_the_accounts_view_shows_customers_users_and_subscriptions(
    accounts: Accounts, project: Callable[..., AbstractContextManager[Runners]]
) -> None:
    customer = _customer(accounts)
    add_customer_user(
        accounts,
        customer_id=customer,
        login="vera",
        role=Role.CUSTOMER_USER,
        password="a long password",
    )
    accounts.add_user(
        customer_id=None, login="staff", role=Role.SUPPORT, password="a long password"
    )
    accounts.disable_user("vera")
    with project("accounts") as runners:
        caught_up(runners)
        view = runners["accounts"].view
        (row,) = view.customers()
        assert (row.organisation, row.contact_email, row.subscription) == (
            "Viewco 1",
            "vera1@viewco.example",
            "active",
        )
        (user,) = view.users(customer_id=customer)
        assert (user.login, user.role, user.disabled) == ("vera", "customer_user", True)
        assert [u.login for u in view.users(platform=True)] == ["staff"]


def test_the_traffic_view_records_each_delivery_with_its_outcome_and_daily_counts(
    accounts: Accounts, messages: Messages, project: Callable[..., AbstractContextManager[Runners]]
) -> None:
    customer = _customer(accounts)
    message_id = _traffic(messages, customer)
    with project("traffic") as runners:
        caught_up(runners)
        view = runners["traffic"].view
        rows = sorted(view.traffic(customer, *_window()), key=lambda r: r.recipient or "")
        assert [(r.recipient, r.status, r.attempts) for r in rows] == [
            ("a@rcpt.example", "delivered", 1),
            ("b@rcpt.example", "undelivered", 1),
        ]
        assert (
            rows[1].reason is FailureReason.INVALID_RECIPIENT and rows[0].message_id == message_id
        )
        counts = {
            (c.channel, c.status): c.count for c in view.daily_counts(customer, _today(), _today())
        }
        assert counts == {("email", "delivered"): 1, ("email", "undelivered"): 1}


def test_a_view_rebuilt_from_scratch_equals_the_live_view(
    accounts: Accounts, messages: Messages, project: Callable[..., AbstractContextManager[Runners]]
) -> None:
    customers = [_customer(accounts, n) for n in range(3)]
    for customer in customers:
        _traffic(messages, customer)
    accounts.change_contact(customers[0], email="changed@viewco.example")
    with project() as runners:
        caught_up(runners)
        live_customers = runners["accounts"].view.customers()
        live_traffic = runners["traffic"].view.traffic(None, *_window())
        for runner in runners.values():
            runner.view.reset()
    with project() as runners:
        caught_up(runners)
        assert runners["accounts"].view.customers() == live_customers
        assert sorted(runners["traffic"].view.traffic(None, *_window()), key=str) == sorted(
            live_traffic, key=str
        )
        assert len(live_traffic) == 6


def test_erasing_a_month_of_traffic_blanks_its_recipients_and_keeps_the_counts(
    accounts: Accounts, messages: Messages, privacy: Privacy,
    project: Callable[..., AbstractContextManager[Runners]],
) -> None:  # fmt: skip
    customer, other = _customer(accounts, 1), _customer(accounts, 2)
    _traffic(messages, customer)
    _traffic(messages, other)
    month = messages.clock.now().strftime("%Y-%m")
    with project("traffic") as runners:
        caught_up(runners)
        privacy.erase_subject(customer, f"traffic/{month}", "retention", trigger=Trigger.RETENTION)
        caught_up(runners)
        view = runners["traffic"].view
        assert {r.recipient for r in view.traffic(customer, *_window())} == {None}
        assert {r.recipient for r in view.traffic(other, *_window())} == {
            "a@rcpt.example",
            "b@rcpt.example",
        }
        assert sum(c.count for c in view.daily_counts(customer, _today(), _today())) == 2


def test_erasing_a_customer_blanks_its_accounts_rows(
    accounts: Accounts, privacy: Privacy, project: Callable[..., AbstractContextManager[Runners]]
) -> None:
    customer, other = _customer(accounts, 1), _customer(accounts, 2)
    add_customer_user(
        accounts,
        customer_id=customer,
        login="vera",
        role=Role.CUSTOMER_USER,
        password="a long password",
    )
    with project("accounts") as runners:
        caught_up(runners)
        privacy.erase_tenant(customer, "termination")
        caught_up(runners)
        view = runners["accounts"].view
        (erased,) = view.customers(customer_id=customer)
        assert erased.erased and erased.organisation is None and erased.contact_name is None
        assert [u.login for u in view.users(customer_id=customer)] == [None]
        assert view.customers(customer_id=other)[0].contact_name == "Vera Viewer 2"


def test_a_rebuild_after_erasure_holds_no_erased_plaintext(
    accounts: Accounts, privacy: Privacy, project: Callable[..., AbstractContextManager[Runners]]
) -> None:
    customer = _customer(accounts)
    privacy.erase_subject(
        customer, f"contact/{customer}", "the contact asked", trigger=Trigger.REQUEST
    )
    with project("accounts") as runners:
        caught_up(runners)
        (row,) = runners["accounts"].view.customers()
        assert (row.contact_name, row.contact_email, row.organisation) == (None, None, "Viewco 1")


# One writer per view, and a view that cannot take an event stops alone


@pytest.fixture
def views(here: Settings, database_url: str) -> Iterator[Any]:
    from picasse.adapters.clock import ManualClock
    from picasse.runners.project import Views

    opened = Views(here, database_url, clock=ManualClock())
    yield opened
    opened.close()


def _unwritable_plan(accounts: Accounts, customer: UUID) -> None:
    """Record a subscription no view column can hold (PostgreSQL text holds no NUL; the plan
    is not personal, so it is stored as text), through the aggregate, past the command's
    checks: as a bad value from before they existed would sit in the log."""
    from picasse.domain.customers import Customer

    aggregate: object = accounts.repository.get(customer)
    assert isinstance(aggregate, Customer)
    aggregate._subscription_started("gold\x00plan")  # past the guard, as old data would be
    accounts.save(aggregate)


def test_a_view_that_cannot_take_an_event_stops_there_alone_and_says_where_and_why(
    accounts: Accounts, messages: Messages, views: Any
) -> None:
    customer = _customer(accounts)
    _unwritable_plan(accounts, customer)
    bad_event = views.head()
    _traffic(messages, customer)
    failures = {name: f.advance() for name, f in views.followers.items()}
    assert failures["traffic"] is None and failures["ledger"] is None
    stopped = failures["accounts"]
    assert stopped is not None and (stopped.view, stopped.failing_at) == ("accounts", bad_event)
    assert stopped.error_type == "DataError" and "Vera" not in stopped.error_type
    assert views.status.failures() == [stopped]
    assert views.followers["accounts"].position() == bad_event - 1
    assert len(views.followers["traffic"].view.traffic(customer, *_window())) == 2


def test_a_personal_value_no_text_column_could_hold_is_taken_sealed(
    accounts: Accounts, privacy: Privacy, views: Any
) -> None:
    """Personal columns hold sealed bytes: a NUL (which once stopped the view) is taken, reads
    back, and reads as erased once the subject's key is gone, with no row rewritten."""
    from picasse.domain.customers import Contact, Customer

    customer = _customer(accounts)
    aggregate: object = accounts.repository.get(customer)
    assert isinstance(aggregate, Customer)
    old = aggregate.contact
    aggregate.change_contact(Contact(name="Vera\x00Viewer", email=old.email, phone=old.phone))
    accounts.save(aggregate)
    accounts_view = views.followers["accounts"]
    assert accounts_view.advance() is None
    (row,) = accounts_view.view.customers(customer_id=customer)
    assert row.contact_name == "Vera\x00Viewer"
    privacy.erase_subject(
        customer, f"contact/{customer}", "the contact asked", trigger=Trigger.REQUEST
    )
    assert accounts_view.advance() is None
    (row,) = accounts_view.view.customers(customer_id=customer)
    assert (row.contact_name, row.organisation) == (None, "Viewco 1")
    assert views.status.failures() == []


def test_a_stopped_view_retries_with_a_back_off_on_the_clock(
    accounts: Accounts, views: Any
) -> None:
    customer = _customer(accounts)
    _unwritable_plan(accounts, customer)
    accounts_view = views.followers["accounts"]
    clock = accounts_view.clock
    waits = []
    for _ in range(4):
        before = clock.now()
        assert accounts_view.advance() is not None
        waits.append((accounts_view.retry_at - before).total_seconds())
        assert not accounts_view.due(views.head())
        clock.advance(accounts_view.retry_at - before)
        assert accounts_view.due(views.head())
    assert waits == [1, 2, 4, 8]
    assert views.status.failures()[0].attempts == 4


def _register(accounts: Accounts, n: int) -> UUID:
    return accounts.register_customer(
        organisation=f"Viewco {n}", contact_name=f"Vera Viewer {n}", email=f"vera{n}@viewco.example",
        phone=f"+31 6 1111 22{n:02d}", billing_address=f"Laan {n}, Leiden",
    )  # fmt: skip


def _xmins(view: Any, table: str, where: str = "true") -> set[str]:
    """The transactions that last wrote these rows of one of the view's tables."""
    from psycopg import sql

    with view.datastore.get_connection() as conn:
        rows = conn.execute(
            sql.SQL("SELECT xmin::text AS x FROM {} WHERE {}").format(view.t[table], sql.SQL(where))
        ).fetchall()
    return {row["x"] for row in rows}


def _tracking_xmin(view: Any) -> str:
    from psycopg import sql

    with view.datastore.get_connection() as conn:
        row = conn.execute(
            sql.SQL("SELECT xmin::text AS x FROM {} WHERE application_name <> %s").format(
                sql.Identifier(view.datastore.schema, view.tracking_table_name)
            ),
            (view.table_migration_identifier,),
        ).fetchone()
    assert row is not None
    return str(row["x"])


def _topic_ids(follower: Any) -> list[int]:
    """The log positions of the follower's view's events, in order."""
    page = follower.reader.recorder.select_notifications(
        0, 1000, topics=follower.topics, inclusive_of_start=False
    )
    return [notification.id for notification in page]


def test_a_page_of_events_goes_into_a_view_in_one_transaction_with_its_position(
    accounts: Accounts, messages: Messages, views: Any
) -> None:
    customer = _customer(accounts)
    for _ in range(3):
        _traffic(messages, customer)
    traffic = views.followers["traffic"]
    assert traffic.advance() is None
    view = traffic.view
    written = _xmins(view, "messages") | _xmins(view, "deliveries") | _xmins(view, "daily")
    assert len(written) == 1  # every row of the page: one transaction
    assert written == {_tracking_xmin(view)}  # and the view's position with them
    assert len(view.traffic(customer, *_window())) == 6


def test_a_page_the_view_cannot_take_whole_is_taken_up_to_the_event_it_cannot_take(
    accounts: Accounts, views: Any
) -> None:
    """The events before it in its page go in, it and those after it do not; once it can
    be taken (the cause gone), the view takes it and goes on by itself."""
    from psycopg import sql

    follower = views.followers["accounts"]
    view = follower.view
    with view.datastore.transaction(commit=True) as curs:  # a cause the test can take away
        curs.execute(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT no_gold CHECK (plan <> 'gold')").format(
                view.t["customers"]
            )
        )
    first = _customer(accounts, 1)
    second = _register(accounts, 2)
    accounts.start_subscription(second, plan="gold")
    bad_event = views.head()
    third = _customer(accounts, 3)
    assert len(_topic_ids(follower)) < 200  # one page

    stopped = follower.advance()
    assert stopped is not None and stopped.failing_at == bad_event
    assert follower.position() == bad_event - 1
    assert views.status.failures() == [stopped]
    assert [row.id for row in view.customers()] == [first, second]
    assert view.customer_counts() == {"active": 1, "registered": 1}

    with view.datastore.transaction(commit=True) as curs:
        curs.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT no_gold").format(view.t["customers"]))
    assert follower.advance() is None
    assert follower.failure is None and views.status.failures() == []
    assert [row.id for row in view.customers()] == [first, second, third]
    assert view.customer_counts() == {"active": 3}
    assert follower.position() == _topic_ids(follower)[-1]


def test_a_page_another_process_took_part_of_is_not_taken_twice(
    accounts: Accounts, here: Settings, database_url: str, views: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Two projectors on one view (the first's claim being lost): the second has read its
    position before the first took in the first event of its next page. That page is
    refused whole and the second carries on from where the view is."""
    from picasse.runners import project
    from picasse.runners.project import Views

    monkeypatch.setattr(project, "BATCH", 2)
    one, two = _register(accounts, 1), _register(accounts, 2)
    accounts.start_subscription(one)
    accounts.start_subscription(two)
    losing = views.followers["accounts"]
    ids = _topic_ids(losing)
    assert len(ids) == 4
    other = Views(here, database_url)
    try:
        taking = other.followers["accounts"]
        seen: list[int] = []

        def meanwhile(position: int) -> None:
            if not seen:  # after its first page, the other takes the next page's first event
                assert taking.advance(upto=ids[2]) is None
            seen.append(position)

        assert losing.advance(progress=meanwhile) is None
    finally:
        other.close()
    assert seen == [ids[1], ids[2], ids[3]]  # carried on from the other's position
    view = losing.view
    # `one`'s subscription (ids[2]) was written by the other process alone: had the page
    # gone in, its row would have been written again, in `two`'s transaction.
    assert _xmins(view, "customers", f"id = '{one}'") != _xmins(view, "customers", f"id = '{two}'")
    assert view.customer_counts() == {"active": 2}
    assert losing.position() == ids[3] and views.status.failures() == []


def test_a_database_error_on_a_page_is_raised_to_the_caller_not_kept_as_the_view_s_failure(
    accounts: Accounts, views: Any
) -> None:
    """The database failing (here a statement cancelled, as an operator or a timeout does)
    says nothing about the event: the projector waits and tries again, the view is not
    stopped at it."""
    from eventsourcing.persistence import PersistenceError
    from psycopg import sql

    follower = views.followers["accounts"]
    view = follower.view
    _customer(accounts, 1)
    cancelled = sql.Identifier(view.datastore.schema, "cancelled")
    with view.datastore.transaction(commit=True) as curs:
        curs.execute(
            sql.SQL(
                "CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                " RAISE EXCEPTION 'cancelled' USING ERRCODE = 'query_canceled'; END $$"
            ).format(cancelled)
        )
        curs.execute(
            sql.SQL("CREATE TRIGGER cancelled BEFORE INSERT ON {} EXECUTE FUNCTION {}()").format(
                view.t["customers"], cancelled
            )
        )
    with pytest.raises(PersistenceError) as raised:
        follower.advance()
    assert type(raised.value).__name__ == "OperationalError"
    assert follower.position() == 0 and follower.failure is None
    assert views.status.failures() == []
    with view.datastore.transaction(commit=True) as curs:
        curs.execute(sql.SQL("DROP TRIGGER cancelled ON {}").format(view.t["customers"]))
        curs.execute(sql.SQL("DROP FUNCTION {}()").format(cancelled))
    assert follower.advance() is None and len(view.customers()) == 1


def test_a_stop_request_is_seen_between_two_pages_with_progress_after_each(
    accounts: Accounts, views: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from picasse.runners import project

    monkeypatch.setattr(project, "BATCH", 2)
    for n in range(3):
        _customer(accounts, n)
    follower = views.followers["accounts"]
    ids = _topic_ids(follower)
    stop = threading.Event()
    seen: list[int] = []

    def stop_after_one(position: int) -> None:
        seen.append(position)
        stop.set()

    assert follower.advance(stop=stop, progress=stop_after_one) is None
    assert seen == [ids[1]] and follower.position() == ids[1]
    assert follower.advance(progress=seen.append) is None
    assert seen == [ids[1], ids[3], ids[5]] and follower.position() == ids[5]


def test_a_view_with_none_of_its_events_in_a_long_stretch_records_the_position_it_is_at(
    accounts: Accounts, views: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from picasse.runners import project

    invoices = views.followers["invoices"]  # no invoice in this log
    _customer(accounts, 1)
    monkeypatch.setattr(project, "SETTLE_AFTER", views.head() + 1)
    assert invoices.advance() is None and invoices.position() == 0  # not long enough yet
    _customer(accounts, 2)
    assert invoices.advance() is None and invoices.position() == views.head()


def test_catching_up_on_a_stopped_view_fails_at_once_naming_the_view(
    accounts: Accounts, views: Any
) -> None:
    from picasse.runners.project import LiveViews, ViewStuck

    customer = _customer(accounts)
    _unwritable_plan(accounts, customer)
    with pytest.raises(ViewStuck, match="the accounts view is stopped at event #") as stuck:
        LiveViews(views).catch_up(timeout=60)
    # At once, for the view's own error: had it waited out the timeout, the reason would
    # be "no process took it in".
    assert stuck.value.reason == "DataError" and "\n" not in str(stuck.value)


def test_a_command_catches_up_a_view_itself_only_when_nobody_advances_it(
    accounts: Accounts, here: Settings, database_url: str, views: Any
) -> None:
    from picasse.runners.project import LiveViews, Views, ViewStuck

    holder = Views(here, database_url)
    try:
        assert holder.claim(set()) == set(VIEWS)  # every view
        customer = _customer(accounts)
        command = LiveViews(views)
        with pytest.raises(ViewStuck, match="no process took it in"):
            command.catch_up(timeout=1.5)  # the holder does not advance here: nobody writes
        assert command.view("accounts").customers() == []
    finally:
        holder.close()  # its claims end with it
    command.catch_up(timeout=30)
    assert [row.id for row in command.view("accounts").customers()] == [customer]
    assert not any(views.claims.holds(f"view:{name}") for name in VIEWS)


def test_a_view_an_older_version_wrote_in_plaintext_is_dropped_and_rebuilt_sealed(
    accounts: Accounts, views: Any
) -> None:
    from psycopg import sql

    from picasse.adapters.postgres.views import PostgresAccountsView

    customer = _customer(accounts)
    follower = views.followers["accounts"]
    assert follower.advance() is None and follower.position() > 0
    view = follower.view
    with view.datastore.transaction(commit=True) as curs:  # as the version before left it
        curs.execute(
            sql.SQL("ALTER TABLE {} ALTER COLUMN organisation TYPE text USING 'Viewco 1'").format(
                view.t["customers"]
            )
        )
    started = PostgresAccountsView(
        view.datastore, tracking_table_name=view.tracking_table_name, keys=view.keys
    )
    started.create_table()  # what a process starting on the old data dir does
    assert follower.position() == 0  # dropped with its position: rebuilt from the log
    with view.datastore.get_connection() as conn:
        row = conn.execute(
            "SELECT data_type FROM information_schema.columns WHERE table_name = %s"
            " AND column_name = 'organisation' AND table_schema = %s",
            (
                f"{view.tracking_table_name.removesuffix('_tracking')}_customers",
                view.datastore.schema,
            ),
        ).fetchone()
    assert row is not None and row["data_type"] == "bytea"
    assert follower.advance() is None
    (rebuilt,) = started.customers(customer_id=customer)
    assert rebuilt.organisation == "Viewco 1"


def test_a_view_an_older_version_wrote_without_one_of_its_tables_is_rebuilt_with_it(
    accounts: Accounts, views: Any
) -> None:
    """API keys came to the accounts view after keys were issued: the view starts again."""
    from psycopg import sql

    from picasse.adapters.postgres.views import PostgresAccountsView
    from picasse.domain.api_keys import ApiKeys

    customer = _customer(accounts)
    keys = ApiKeys(accounts.env, clock=accounts.clock)
    try:
        user = UUID(int=7)
        issued = keys.issue(user_id=user, customer_id=customer, name="Vera's laptop")
    finally:
        keys.close()
    follower = views.followers["accounts"]
    assert follower.advance() is None and follower.position() > 0
    view = follower.view
    with view.datastore.transaction(commit=True) as curs:  # as the version before left it
        curs.execute(sql.SQL("DROP TABLE {}").format(view.t["api_keys"]))
    started = PostgresAccountsView(
        view.datastore, tracking_table_name=view.tracking_table_name, keys=view.keys
    )
    started.create_table()  # what a process starting on the old data dir does

    assert follower.position() == 0
    assert follower.advance() is None
    (key,) = started.api_keys(customer_id=customer)
    assert (key.id, key.name, key.user_id) == (issued.id, "Vera's laptop", user)
    with view.datastore.get_connection() as conn:
        stored = conn.execute(sql.SQL("SELECT * FROM {}").format(view.t["api_keys"])).fetchall()
    assert b"Vera's laptop" not in repr(stored).encode() and "Vera" not in repr(stored)
