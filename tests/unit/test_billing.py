"""Billing's pure rules: prices as exact decimals, rating, the counts' table, invoices' states."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from uuid import UUID, uuid4

import pytest
from eventsourcing.utils import get_topic, resolve_topic
from hypothesis import given
from hypothesis import strategies as st

from picasse.domain.aggregates import Aggregate
from picasse.domain.billing import (
    BILLABLE_SOURCES,
    DATED_TOPICS,
    BilledTo,
    CountKind,
    Invoice,
    InvoiceOverpaid,
    InvoiceStatus,
    PricePlan,
    billable_topics,
    count_billable,
    month_before,
    parse_month,
    price_plan,
    rate,
)
from picasse.domain.conferences import Conference
from picasse.domain.errors import InvalidInput
from picasse.domain.messages import Channel, Delivery, call_minutes

PLAN = PricePlan(
    monthly_fee=Decimal("25.00"),
    per_sms_segment=Decimal("0.075"),
    per_email=Decimal("0.001"),
    per_voice_minute=Decimal("0.12"),
    per_conference_minute=Decimal("0.05"),
    vat_percent=Decimal("21"),
)


def test_a_month_is_rated_line_by_line_in_whole_cents_with_vat_on_the_sum() -> None:
    rated = rate(
        PLAN, {CountKind.SMS_SEGMENTS: 3, CountKind.EMAILS: 1500, CountKind.VOICE_MINUTES: 7}
    )
    amounts = {line.item: line.amount_cents for line in rated.lines}
    assert amounts == {
        "monthly_fee": 2500,
        "sms_segments": 23,  # 0.225 rounds half up
        "emails": 150,
        "voice_minutes": 84,
        "conference_minutes": 0,
    }
    assert rated.subtotal_cents == 2757
    assert rated.vat_cents == 579  # 578.97
    assert rated.total_cents == 3336


@given(st.dictionaries(st.sampled_from(list(CountKind)), st.integers(0, 10**7)))
def test_an_invoice_total_is_its_lines_plus_vat_for_any_counts(
    counts: dict[CountKind, int],
) -> None:
    rated = rate(PLAN, counts)
    assert rated.subtotal_cents == sum(line.amount_cents for line in rated.lines)
    assert rated.total_cents == rated.subtotal_cents + rated.vat_cents
    assert abs(rated.vat_cents - rated.subtotal_cents * 0.21) <= 0.5 + rated.subtotal_cents * 1e-12
    assert {line.item for line in rated.lines} == {"monthly_fee", *CountKind}


def test_prices_are_decimal_strings_or_integers_never_floats_or_negative() -> None:
    values: dict[str, object] = {name: "0.1" for name in PricePlan.__struct_fields__}
    assert price_plan(values).per_email == Decimal("0.1")
    for bad in (0.1, "-1", "abc", "NaN", "0.0000001", True):
        with pytest.raises(InvalidInput) as refused:
            price_plan({**values, "per_email": bad})
        assert refused.value.field == "per_email"
    with pytest.raises(InvalidInput):
        price_plan({**values, "vat_percent": "101"})
    with pytest.raises(InvalidInput):
        price_plan({k: v for k, v in values.items() if k != "monthly_fee"})


def test_a_month_is_given_as_year_and_month() -> None:
    assert parse_month("2026-03") == "2026-03"
    for bad in ("2026-13", "March", "2026-3-1"):
        with pytest.raises(InvalidInput):
            parse_month(bad)


def test_the_month_before_a_january_is_the_december_of_the_year_before() -> None:
    assert [month_before(m) for m in ("2026-01", "2026-03", "2026-10", "2026-12")] == [
        "2025-12", "2026-02", "2026-09", "2026-11",
    ]  # fmt: skip


def test_every_billable_event_is_dated_or_a_delivery_s_outcome() -> None:
    """A run starts reading at the dated events of the month before its own: an event that
    counts must carry its customer and month or belong to a delivery (after its `Queued`)."""
    for topic in DATED_TOPICS:
        fields = {f.name for f in dataclasses.fields(resolve_topic(topic))}
        assert {"tenant_id", "month"} <= fields
    for topic in billable_topics():
        assert topic in DATED_TOPICS or topic.startswith(get_topic(Delivery) + ".")


def test_a_call_is_billed_by_every_minute_begun() -> None:
    assert [call_minutes(s) for s in (0, 1, 60, 61, 125)] == [0, 1, 1, 2, 3]


def test_counts_come_from_the_table_of_billable_sources_by_the_delivery_they_belong_to() -> None:
    customer, other = uuid4(), uuid4()
    sms = Delivery(id=uuid4(), tenant_id=customer, month="2026-03", message_id=uuid4(), index=0,
                   channel=Channel.SMS, to="+31612345678", not_before=None, escalation_level=0)  # fmt: skip
    mail = Delivery(id=uuid4(), tenant_id=customer, month="2026-03", message_id=uuid4(), index=0,
                    channel=Channel.EMAIL, to="a@example.org", not_before=None, escalation_level=0)  # fmt: skip
    late = Delivery(id=uuid4(), tenant_id=other, month="2026-04", message_id=uuid4(), index=0,
                    channel=Channel.EMAIL, to="b@example.org", not_before=None, escalation_level=0)  # fmt: skip
    account_mail = Delivery(id=uuid4(), tenant_id=customer, month="2026-03", message_id=uuid4(),
                            index=0, channel=Channel.EMAIL, to="a@example.org", not_before=None,
                            escalation_level=0, billed=False)  # fmt: skip
    sms.handed_over("smpp", "r1", segments=3)
    sms.deliver("smpp", "r1")  # the receipt: no second count
    mail.deliver("smtp", None)
    late.deliver("smtp", None)
    account_mail.deliver("smtp", None)  # Picasse's own: not counted
    events = [e for d in (sms, mail, late, account_mail) for e in d.collect_events()]
    events += [_conference_ended(customer, "2026-03", 42), _conference_ended(other, "2026-04", 9)]
    assert count_billable(events, "2026-03") == {
        customer: {CountKind.SMS_SEGMENTS: 3, CountKind.EMAILS: 1, CountKind.CONFERENCE_MINUTES: 42}
    }
    assert set(BILLABLE_SOURCES) == set(CountKind)  # every priced count has a source


ENDED_AT = datetime(2026, 3, 2, 10, 30, tzinfo=UTC)


def _conference_ended(customer: UUID, month: str, minutes: int) -> Aggregate.Event:
    """A conference call's end, as the telephony provider's report records it. Its class
    is made by @event("Ended"), which type checkers do not see: named as billing names it."""
    ended: Callable[..., Aggregate.Event] = resolve_topic(get_topic(Conference) + ".Ended")
    return ended(
        originator_id=uuid4(), originator_version=5, timestamp=ENDED_AT,
        tenant_id=customer, month=month, provider_event="call-ended-1",
        at="2026-03-02T10:30:00Z", clock_time=ENDED_AT, minutes=minutes, legs=3,
    )  # fmt: skip


def _invoice(total: int = 1000) -> Invoice:
    rated = rate(PLAN, {})
    rated = type(rated)(lines=rated.lines, subtotal_cents=total, vat_percent=Decimal(0),
                        vat_cents=0, total_cents=total)  # fmt: skip
    return Invoice(id=uuid4(), tenant_id=uuid4(), customer_id=uuid4(), number=1, month="2026-03", fiscal_year="2026",
                   issued_on=date(2026, 4, 1), due_on=date(2026, 4, 15),
                   billed_to=BilledTo("Org", "Street 1"), rated=rated)  # fmt: skip


def test_an_invoice_is_paid_in_parts_and_never_beyond_what_is_outstanding() -> None:
    invoice = _invoice(1000)
    invoice.pay(400, date(2026, 4, 2))
    assert (invoice.status, invoice.outstanding_cents) == (InvoiceStatus.OPEN, 600)
    with pytest.raises(InvoiceOverpaid):
        invoice.pay(601, date(2026, 4, 3))
    with pytest.raises(InvalidInput):
        invoice.pay(0, date(2026, 4, 3))
    invoice.pay(600, date(2026, 4, 3))
    assert invoice.status is InvoiceStatus.PAID


def test_an_unpaid_invoice_becomes_overdue_only_after_its_due_date() -> None:
    invoice = _invoice()
    assert not invoice.due_passed(date(2026, 4, 15))
    assert invoice.due_passed(date(2026, 4, 16))
    invoice.become_overdue()
    assert invoice.status is InvoiceStatus.OVERDUE and not invoice.due_passed(date(2026, 5, 1))
    assert datetime(2026, 4, 16, tzinfo=UTC).date() > invoice.due_on
