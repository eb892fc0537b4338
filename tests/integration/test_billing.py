"""The invoicing run on real PostgreSQL: a month of traffic rated from the log matches a
count made here straight from the deliveries, a second run issues nothing, concurrent runs
number their invoices without gap or repeat, and a run reads about its month of the log
and the plans' own index, not the log's history."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import msgspec
import psycopg
import pytest
from eventsourcing.persistence import Notification
from psycopg import sql

from picasse.adapters.clock import ManualClock
from picasse.adapters.postgres.store import recorder_of
from picasse.adapters.providers.smpp_pdu import segment_count
from picasse.domain.access import Viewer
from picasse.domain.accounts import Accounts
from picasse.domain.billing import (
    BILLING_ACCOUNT_TOPICS,
    DATED_TOPICS,
    Billing,
    CountKind,
    InvoiceNumbers,
    PricePlan,
    count_billable,
    month_before,
    rate,
)
from picasse.domain.conferences import CallRole, Conference
from picasse.domain.messages import Delivery, delivery_id
from picasse.domain.messaging import Messages, SendRequest, Sent
from picasse.domain.values import Role
from picasse.runners.settings import Settings
from picasse.runners.wiring import open_messages
from tests.integration.plans import plan_nodes
from tests.integration.projection_runners import caught_up, running

MARCH = datetime(2026, 3, 5, 9, tzinfo=UTC)
STAFF = Viewer(role=Role.SUPPORT, customer_id=None)
PLAN = PricePlan(
    monthly_fee=Decimal("19.95"),
    per_sms_segment=Decimal("0.075"),
    per_email=Decimal("0.002"),
    per_voice_minute=Decimal("0.13"),
    per_conference_minute=Decimal("0.04"),
    vat_percent=Decimal("21"),
)
TEXTS = ["Hi", "x" * 161, "Storing ⚡ now", "é" * 200, "€" * 40, "ü" * 400]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(MARCH)


@pytest.fixture
def messages(
    settings: Settings, database_url: str, schema: str, clock: ManualClock
) -> Iterator[Messages]:
    app = open_messages(settings, database_url, schema=schema, clock=clock, pool_size=2)
    yield app
    app.close()


@pytest.fixture
def billing(messages: Messages, clock: ManualClock) -> Billing:
    return Billing(clock=clock, sharing=messages)


def _customer(accounts: Accounts, name: str) -> UUID:
    customer = accounts.register_customer(
        organisation=f"{name} B.V.", contact_name="Ann", email="ann@example.org",
        phone="+31612345678", billing_address=f"{name}straat 1, 8011 AA Zwolle",
    )  # fmt: skip
    accounts.start_subscription(customer)
    return customer


def _traffic(messages: Messages, customer: UUID, rng: random.Random) -> None:
    """Some SMS (counted by the provider, or from the text as the worker does), e-mails and
    calls (minutes from their receipts), each handed over and concluded as a worker would."""
    for _ in range(rng.randint(2, 5)):
        channel = rng.choice(["sms", "email", "voice"])
        to = {"sms": "+31612345678", "email": "rcpt@example.org", "voice": "+31201234567"}[channel]
        body = rng.choice(TEXTS)
        request = SendRequest(
            channel=channel, to=[to], body=body, subject="S" if channel == "email" else None
        )
        message = messages.send(customer, request)
        ids = [delivery_id(message, 0)]
        attempts = [a for a in messages.start_attempts(ids) if not isinstance(a, str)]
        outcomes = []
        for attempt in attempts:
            if channel == "sms":
                outcomes.append(
                    (
                        attempt,
                        Sent(
                            "gw",
                            f"r-{attempt.job.delivery_id}",
                            False,
                            segment_count(attempt.job.body),
                        ),
                    )
                )
            elif channel == "voice":
                outcomes.append((attempt, Sent("gw", f"r-{attempt.job.delivery_id}", False)))
            else:
                outcomes.append((attempt, Sent("smtp", None, True)))
        messages.record_outcomes(outcomes, max_attempts=3)
        for attempt, sent in outcomes:
            if not sent.final:  # the network's receipt; a call's with its duration
                seconds = rng.randint(1, 400) if channel == "voice" else None
                messages.record_receipt(
                    attempt.job.delivery_id, None, "gw", sent.reference or "", call_seconds=seconds
                )


def _independent_counts(messages: Messages, month: str) -> dict[UUID, dict[CountKind, int]]:
    """Straight from the deliveries as the log holds them, not through the sources' table."""
    found: dict[UUID, dict[CountKind, int]] = {}
    queued = messages.recorder.select_notifications(
        1, 1_000_000, topics=[f"{Delivery.__module__}:Delivery.Queued"]
    )
    for n in queued:
        assert isinstance(n.originator_id, UUID)  # the library types it UUID | str
        d: Delivery = messages.repository.get(n.originator_id)
        if d.month != month:
            continue
        counts = found.setdefault(d.tenant_id, {})
        if d.channel.value == "sms" and d.segments:
            counts[CountKind.SMS_SEGMENTS] = counts.get(CountKind.SMS_SEGMENTS, 0) + d.segments
        if d.channel.value == "email" and d.status.value == "delivered":
            counts[CountKind.EMAILS] = counts.get(CountKind.EMAILS, 0) + 1
        if d.channel.value == "voice" and d.minutes:
            counts[CountKind.VOICE_MINUTES] = counts.get(CountKind.VOICE_MINUTES, 0) + d.minutes
    return found


def test_a_run_over_a_month_of_traffic_matches_a_count_made_from_the_deliveries_and_issues_once(
    accounts: Accounts, messages: Messages, billing: Billing, clock: ManualClock
) -> None:
    rng = random.Random(16)
    customers = [_customer(accounts, name) for name in ("Anvil", "Bellows", "Chisel")]
    for customer in customers[:2]:  # Chisel has no plan: it is not invoiced
        billing.set_plan(customer, PLAN, by=STAFF)
    clock.set(datetime(2026, 2, 27, tzinfo=UTC))
    _traffic(messages, customers[0], rng)  # February: not March's
    for day in range(5, 28, 4):
        clock.set(MARCH.replace(day=day))
        for customer in customers:
            _traffic(messages, customer, rng)
    clock.set(datetime(2026, 4, 1, 12, tzinfo=UTC))
    _traffic(messages, customers[1], rng)  # April: not March's

    expected = _independent_counts(messages, "2026-03")
    lines = billing.run("2026-03")

    assert {line.customer_id for line in lines} == set(customers[:2])
    for line in lines:
        assert line.counts == expected[line.customer_id]
        assert (
            line.issued and line.total_cents == rate(PLAN, expected[line.customer_id]).total_cents
        )
        invoice = billing.invoice(line.invoice_id, by=STAFF)
        assert invoice.total_cents == line.total_cents
        assert invoice.billed_to_name in ("Anvil B.V.", "Bellows B.V.")
        assert {li.item: li.quantity for li in invoice.lines}["emails"] == expected[
            line.customer_id
        ].get(CountKind.EMAILS, 0)
    assert sum(expected[customers[0]].values()) > 0

    again = billing.run("2026-03")
    assert [(x.invoice_id, x.number, x.issued) for x in again] == [
        (x.invoice_id, x.number, False) for x in lines
    ]
    numbers: object = messages.repository.get(billing._numbers().id)
    assert isinstance(numbers, InvoiceNumbers) and numbers.last == 2
    assert len(billing.invoices(customers[0], by=STAFF)) == 1


def test_picasse_s_own_mail_about_an_account_is_not_billed_to_the_customer(
    accounts: Accounts, messages: Messages, billing: Billing, clock: ManualClock
) -> None:
    customer = _customer(accounts, "Eyelet")
    billing.set_plan(customer, PLAN, by=STAFF)
    own = messages.send(
        customer, SendRequest(channel="email", to=["rcpt@example.org"], subject="S", body="Hi")
    )
    link = messages.send_account_mail(customer, "ann@example.org", "Set a password", "a link")
    ids = [delivery_id(own, 0), delivery_id(link, 0)]
    attempts = [a for a in messages.start_attempts(ids) if not isinstance(a, str)]
    messages.record_outcomes([(a, Sent("smtp", None, True)) for a in attempts], max_attempts=3)
    assert all(messages.repository.get(i).status.value == "delivered" for i in ids)
    clock.set(datetime(2026, 4, 1, 12, tzinfo=UTC))

    (line,) = [x for x in billing.run("2026-03", dry_run=True) if x.customer_id == customer]

    assert line.counts == {CountKind.EMAILS: 1}


def test_a_dry_run_rates_and_issues_nothing_and_an_unfinished_month_is_refused(
    accounts: Accounts, billing: Billing, clock: ManualClock
) -> None:
    customer = _customer(accounts, "Dowel")
    billing.set_plan(customer, PLAN, by=STAFF)
    clock.advance(timedelta(days=30))
    (line,) = billing.run("2026-03", dry_run=True)
    assert (
        line.number is None and not line.issued and line.total_cents == rate(PLAN, {}).total_cents
    )
    assert billing.invoices(customer, by=STAFF) == []
    with pytest.raises(Exception, match="not over yet"):
        billing.run(f"{clock.now():%Y-%m}")
    assert billing.run(f"{clock.now():%Y-%m}", dry_run=True)[0].number is None  # so far


def test_two_concurrent_runs_leave_no_gap_and_no_duplicate_in_the_numbering(
    accounts: Accounts,
    settings: Settings,
    database_url: str,
    schema: str,
    clock: ManualClock,
    billing: Billing,
) -> None:
    customers = [_customer(accounts, f"Firm{i}") for i in range(12)]
    for customer in customers:
        billing.set_plan(customer, PLAN, by=STAFF)
    clock.set(datetime(2026, 4, 2, tzinfo=UTC))
    runners = [
        open_messages(settings, database_url, schema=schema, clock=clock, pool_size=2)
        for _ in range(2)
    ]
    try:
        apps = [Billing(clock=clock, sharing=m) for m in runners]
        start = threading.Barrier(2)
        results: list[list[int | None]] = [[], []]

        def run(i: int) -> None:
            start.wait()
            results[i] = [line.number for line in apps[i].run("2026-03")]

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for m in runners:
            m.close()
    numbers = sorted(i.number for c in customers for i in billing.invoices(c, by=STAFF))
    assert numbers == list(range(1, 13))
    assert (
        results[0] == results[1] == [n for n in results[0] if n is not None]
        and len(results[0]) == 12
    )


def test_an_invoice_unpaid_after_its_due_date_becomes_overdue_once_and_its_contact_is_reminded(
    accounts: Accounts,
    messages: Messages,
    billing: Billing,
    clock: ManualClock,
    settings: Settings,
    database_url: str,
    schema: str,
) -> None:
    late, paying = _customer(accounts, "Laggard"), _customer(accounts, "Prompt")
    for customer in (late, paying):
        billing.set_plan(customer, PLAN, by=STAFF)
    clock.set(datetime(2026, 4, 1, 8, tzinfo=UTC))
    lines = {line.customer_id: line for line in billing.run("2026-03")}
    billing.pay(lines[paying].invoice_id, lines[paying].total_cents, by=STAFF)
    sent: list[UUID] = []

    def remind(customer: UUID, to: str, subject: str, body: str) -> None:
        assert to == "ann@example.org" and "overdue" in subject
        sent.append(messages.send_account_mail(customer, to, subject, body))

    clock.set(datetime(2026, 4, 15, 23, tzinfo=UTC))  # the due date itself: not yet
    assert billing.mark_overdue(remind) == []
    clock.set(datetime(2026, 4, 16, 1, tzinfo=UTC))
    (became,) = billing.mark_overdue(remind)
    assert became.customer_id == late and became.status.value == "overdue"
    assert billing.mark_overdue(remind) == []  # once
    here = msgspec.structs.replace(settings, database_schema=schema)
    with running(here, database_url, ["invoices"]) as views:
        caught_up(views)
        invoices = views["invoices"].view
        # What the customers page shows, of the customers named only (a page of them): a
        # never-billed one and one who paid in time among them.
        named = [late, paying, uuid4()]
        assert invoices.overdue_of(named) == {late: lines[late].total_cents}
        billing.pay(lines[late].invoice_id, 100, by=STAFF)
        caught_up(views)
        assert invoices.overdue_of(named) == {late: lines[late].total_cents - 100}
        billing.pay(lines[late].invoice_id, lines[late].total_cents - 100, by=STAFF)
        caught_up(views)
        assert invoices.overdue_of(named) == {}  # paid in full: no longer overdue
    (reminder,) = sent
    details = messages.message(reminder, STAFF)
    assert details.customer_id == late and len(details.deliveries) == 1 and details.body is None


# ---------------------------------------------------------------- the plans


def test_a_plan_changed_several_times_rates_with_the_latest(
    accounts: Accounts, billing: Billing, clock: ManualClock
) -> None:
    changing, steady = _customer(accounts, "Changing"), _customer(accounts, "Steady")
    billing.set_plan(steady, PLAN, by=STAFF)
    for fee in ("10.00", "12.50", "11.00"):
        billing.set_plan(
            changing, msgspec.structs.replace(PLAN, monthly_fee=Decimal(fee)), by=STAFF
        )
    clock.set(datetime(2026, 4, 2, tzinfo=UTC))
    lines = {line.customer_id: line for line in billing.run("2026-03", dry_run=True)}
    latest = msgspec.structs.replace(PLAN, monthly_fee=Decimal("11.00"))
    assert lines[changing].total_cents == rate(latest, {}).total_cents
    assert lines[steady].total_cents == rate(PLAN, {}).total_cents


def test_the_plans_and_accounts_are_read_through_their_own_index_not_the_whole_log(
    billing: Billing, raw: psycopg.Connection[tuple[object, ...]]
) -> None:
    """The index of the billing accounts' events: a few rows whatever the log's length.
    Without it, or with a condition PostgreSQL cannot match to it, the plan scans the log
    (the notification ids' index, filtering each row's topic); sequential and bitmap scans
    are priced out to make the choice plain. The plan is the generic one, which a prepared
    query (as the recorder's are) gets after a few runs: its parameters unknown."""
    recorder = recorder_of(billing)
    index = f"{recorder.events_table_name}_billing_accounts"
    raw.execute("SET enable_seqscan = off")
    raw.execute("SET enable_bitmapscan = off")
    read_by: dict[str, list[tuple[object, ...]]] = {}
    for topic in BILLING_ACCOUNT_TOPICS:
        statement, params = recorder.selection_statement(1, 500, topics=[topic])
        scans = [
            n for n in _generic_plan(raw, statement, params) if n["Node Type"].endswith("Scan")
        ]
        read_by[topic] = [(n["Node Type"], n.get("Index Name")) for n in scans]
    # (Each reads the index's rows, the accounts' events only, and keeps its own topic's.)
    assert read_by == {t: [("Index Scan", index)] for t in BILLING_ACCOUNT_TOPICS}


def _generic_plan(
    conn: psycopg.Connection[tuple[object, ...]], statement: sql.Composed, params: list[Any]
) -> list[dict[str, Any]]:
    """The nodes of the plan PostgreSQL gives the statement prepared, for any parameters."""
    text = statement.as_string(conn).split("%s")
    numbered = text[0] + "".join(f"${i}{part}" for i, part in enumerate(text[1:], start=1))
    conn.execute("SET plan_cache_mode = force_generic_plan")
    conn.execute(sql.SQL("PREPARE read_to_explain AS {}").format(sql.SQL(numbered)))
    try:
        execute = sql.SQL("EXPLAIN (FORMAT JSON) EXECUTE read_to_explain ({})").format(
            sql.SQL(", ").join(sql.Literal(p) for p in params)
        )
        row = conn.execute(execute).fetchone()
    finally:
        conn.execute("DEALLOCATE read_to_explain")
    assert row is not None
    return [n for n in plan_nodes(row[0]) if "Node Type" in n]


# ---------------------------------------------------------------- what a run reads

MONTHS = ["2026-01", "2026-02", "2026-03", "2026-04", "2026-05"]


class ReadsNoted:
    """The real recorder, noting where each read of the log starts and how many it asks for."""

    def __init__(self, recorder: Any) -> None:
        self.recorder = recorder
        self.reads: list[tuple[int | None, int, tuple[str, ...]]] = []

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        self.reads.append((start, limit, tuple(topics)))
        return self.recorder.select_notifications(  # type: ignore[no-any-return]
            start, limit, stop, topics, inclusive_of_start=inclusive_of_start
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self.recorder, name)


def _conference_ended(messages: Messages, customer: UUID, clock: ManualClock) -> None:
    """A call with two participants that ends now: its minutes count in this month."""
    now, month = clock.now(), f"{clock.now():%Y-%m}"
    call = Conference(
        id=uuid4(), tenant_id=customer, month=month, title="Stand-up", start=now,
        duration_minutes=30, host_id=uuid4(), invitees=[], number="+3185000000",
        participant_pin=uuid4(), host_pin=uuid4(), scheduled_by=None,
    )  # fmt: skip
    call.begin(month, "begun", "10:00", now - timedelta(minutes=20))
    for leg in ("a", "b"):
        call.admit(month, f"admitted-{leg}", leg, "+31612345678", CallRole.PARTICIPANT)
        call.join(month, f"joined-{leg}", leg, "10:00", now - timedelta(minutes=20))
    call.end(month, "ended", "10:20", now)
    messages.save(call)


def _email_sent_now_delivered_later(
    messages: Messages, customer: UUID, clock: ManualClock, later: datetime
) -> None:
    """An e-mail queued now whose delivery is recorded at `later` (the next month)."""
    message = messages.send(
        customer, SendRequest(channel="email", to=["late@example.org"], body="B", subject="S")
    )
    clock.set(later)
    (attempt,) = messages.start_attempts([delivery_id(message, 0)])
    assert not isinstance(attempt, str)
    messages.record_outcomes([(attempt, Sent("smtp", None, True))], max_attempts=3)


def _months_of_traffic(
    accounts: Accounts, messages: Messages, billing: Billing, clock: ManualClock
) -> tuple[UUID, UUID]:
    """Five months of traffic of two customers; the second's e-mail of 31 March is delivered
    on 1 April (its only March traffic)."""
    rng = random.Random(5)
    clock.set(datetime(2026, 1, 2, tzinfo=UTC))
    busy, late = _customer(accounts, "Busy"), _customer(accounts, "Late")
    for customer in (busy, late):
        billing.set_plan(customer, PLAN, by=STAFF)
    for month in MONTHS:
        for day in (3, 14, 27):
            clock.set(datetime.strptime(f"{month}-{day:02d} 10", "%Y-%m-%d %H").replace(tzinfo=UTC))
            _traffic(messages, busy, rng)
            if day == 14:
                _conference_ended(messages, busy, clock)
                if month != "2026-03":
                    _traffic(messages, late, rng)
        if month == "2026-03":
            clock.set(datetime(2026, 3, 31, 23, 50, tzinfo=UTC))
            _email_sent_now_delivered_later(
                messages, late, clock, datetime(2026, 4, 1, 0, 10, tzinfo=UTC)
            )
    return busy, late


def _traffic_pages(noted: ReadsNoted) -> list[int | None]:
    """Where the run's reads of pages of billable events started: neither the bisection's
    single-event probes nor the plans' read (through their own index, tested above)."""
    return [
        start
        for start, limit, topics in noted.reads
        if limit != 1 and not set(topics) <= set(BILLING_ACCOUNT_TOPICS)
    ]


def _first_dated_position(messages: Messages, month: str) -> int:
    """Where the month's first dated billable event is in the log, read here event by event."""
    dated = messages.recorder.select_notifications(1, 1_000_000, topics=list(DATED_TOPICS))
    return next(n.id for n in dated if _month_of(messages.mapper.to_domain_event(n)) == month)


def _month_of(dated: Any) -> str:
    """The month of a dated billable event: a delivery queued, or a conference's end, whose
    class (made by @event) type checkers do not see; billing reads it alike."""
    month: str = dated.month
    return month


def test_runs_over_months_of_traffic_count_as_a_count_over_the_whole_log_does(
    accounts: Accounts, messages: Messages, billing: Billing, clock: ManualClock
) -> None:
    busy, late = _months_of_traffic(accounts, messages, billing, clock)
    whole_log = list(billing.billable_events())
    for month in MONTHS:  # May, the current month, as its dry run shows it so far
        lines = {line.customer_id: line.counts for line in billing.run(month, dry_run=True)}
        expected = count_billable(whole_log, month)
        assert {c: lines[c] for c in (busy, late)} == {c: expected.get(c, {}) for c in (busy, late)}
        assert lines[busy][CountKind.CONFERENCE_MINUTES] == 40
        from_deliveries = _independent_counts(messages, month)
        without_calls = {k: v for k, v in lines[busy].items() if k != CountKind.CONFERENCE_MINUTES}
        assert without_calls == from_deliveries[busy]
        assert lines[late] == from_deliveries.get(late, {})
    # The e-mail queued on 31 March and delivered on 1 April counts in March, its only
    # traffic there (and, by the deliveries' count above, in no other month).
    march = {line.customer_id: line.counts for line in billing.run("2026-03", dry_run=True)}
    assert march[late] == {CountKind.EMAILS: 1}


def test_a_run_reads_the_log_from_the_month_before_its_own_not_from_the_start(
    accounts: Accounts,
    messages: Messages,
    billing: Billing,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _months_of_traffic(accounts, messages, billing, clock)
    head = messages.recorder.max_notification_id() or 0
    for month in MONTHS[2:]:
        noted = ReadsNoted(billing.recorder)
        monkeypatch.setattr(billing, "recorder", noted)
        billing.run(month, dry_run=True)
        probes = [start for start, limit, _ in noted.reads if limit == 1]
        pages = _traffic_pages(noted)
        first_of_month_before = _first_dated_position(messages, month_before(month))
        assert pages and all(s is not None and s >= first_of_month_before for s in pages)
        assert len(probes) <= head.bit_length() + 1


def test_a_run_of_the_first_month_with_traffic_reads_from_the_log_s_start(
    accounts: Accounts, messages: Messages, billing: Billing, clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    customer = _customer(accounts, "Early")
    billing.set_plan(customer, PLAN, by=STAFF)
    _traffic(messages, customer, random.Random(1))
    clock.set(datetime(2026, 4, 2, tzinfo=UTC))
    noted = ReadsNoted(billing.recorder)
    monkeypatch.setattr(billing, "recorder", noted)
    (line,) = billing.run("2026-03", dry_run=True)
    assert line.counts == count_billable(billing.billable_events(), "2026-03")[customer]
    pages = _traffic_pages(noted)
    # Nothing dated before February: from the first dated event, as from position 1.
    assert pages[0] == _first_dated_position(messages, "2026-03")


def test_traffic_recorded_by_a_clock_a_little_ahead_counts_in_its_month_all_the_same(
    accounts: Accounts, messages: Messages, billing: Billing, clock: ManualClock
) -> None:
    """Processes' clocks differ by seconds: an e-mail of 1 April can come before others'
    last e-mails of March in the log. The month before is the run's margin for that."""
    customer = _customer(accounts, "Skewed")
    billing.set_plan(customer, PLAN, by=STAFF)
    sends = [
        datetime(2026, 3, 10, tzinfo=UTC),
        datetime(2026, 4, 1, 0, 0, 3, tzinfo=UTC),  # a clock three seconds ahead
        *[datetime(2026, 3, 31, 23, 59, 58, tzinfo=UTC)] * 12,  # the others' March
        datetime(2026, 4, 2, tzinfo=UTC),
    ]
    for moment in sends:
        clock.set(moment)
        _email_sent_now_delivered_later(messages, customer, clock, moment)
    clock.set(datetime(2026, 5, 2, tzinfo=UTC))
    (line,) = billing.run("2026-04", dry_run=True)
    assert line.counts == {CountKind.EMAILS: 2}
    assert line.counts == count_billable(billing.billable_events(), "2026-04")[customer]
