"""Billing: price plans, what is billable (counted when it happens), invoices and payments.

Billing never reads content (R7): what it rates are counts recorded in events when the
traffic happened (an SMS's segments when it was sent, a call's minutes from its receipt).
`BILLABLE_SOURCES` is the one table of where each count is read from; the invoicing run
rates a customer's month from the log through it, so a run can be repeated and audited.

Invoices are numbered without gaps or duplicates: an invoice and the taking of its number
from the one `InvoiceNumbers` sequence are saved in one write, so of two concurrent runs
one wins and the other, refused by the store, tries again with the next number.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID, uuid5

import msgspec
from eventsourcing.domain import event
from eventsourcing.persistence import IntegrityError, Notification
from eventsourcing.utils import get_topic

from picasse.domain.access import Viewer
from picasse.domain.aggregates import Aggregate
from picasse.domain.application import PicasseApplication
from picasse.domain.clock import Clock
from picasse.domain.conferences import Conference
from picasse.domain.customers import Customer
from picasse.domain.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound
from picasse.domain.messages import Channel, Delivery
from picasse.domain.personal import FISCAL, FISCAL_RETENTION_YEARS, Personal
from picasse.domain.termination import KeptRecord
from picasse.domain.values import EmailAddress

BILLING = UUID("6f1d7c2e-3a51-4d0e-9a57-2b7f5c1e0b16")  # namespace of billing's ids
PAYMENT_TERM = timedelta(days=14)
# Sends a reminder: (customer, to, subject, body), as `Messages.send_account_mail` does.
Reminder = Callable[[UUID, str, str, str], object]
CONFLICT_RETRIES = 20
_MONTH_FORMAT = "%Y-%m"


class NotPermitted(Forbidden):
    code = "forbidden"


class InvoiceOverpaid(Conflict):
    code = "invoice-overpaid"


# ---------------------------------------------------------------- what is billable


class CountKind(StrEnum):
    """What a customer pays per piece of, besides the monthly fee."""

    SMS_SEGMENTS = "sms_segments"
    EMAILS = "emails"
    VOICE_MINUTES = "voice_minutes"
    CONFERENCE_MINUTES = "conference_minutes"


class BillableSource(msgspec.Struct, frozen=True, kw_only=True):
    """Where a count is read from: events of one topic, the count in one of their fields
    (None: each event counts one), optionally only a delivery of one channel.

    The event's customer and month are its own `tenant_id` and `month` fields, or (for a
    delivery's outcome, which names neither) those of the delivery it belongs to."""

    topic: str
    count: str | None
    channel: Channel | None = None


_DELIVERY = get_topic(Delivery)  # its events' topics are this and their name


# The one table of billable sources: a new count is one entry here.
BILLABLE_SOURCES: dict[CountKind, tuple[BillableSource, ...]] = {
    # An SMS's segments are counted when it is handed over: on `Accepted` when a receipt
    # follows (which then carries none), on `Delivered` when handing over was delivery.
    CountKind.SMS_SEGMENTS: (
        BillableSource(topic=_DELIVERY + ".Accepted", count="segments"),
        BillableSource(topic=_DELIVERY + ".Delivered", count="segments"),
    ),
    CountKind.EMAILS: (
        BillableSource(topic=_DELIVERY + ".Delivered", count=None, channel=Channel.EMAIL),
    ),
    CountKind.VOICE_MINUTES: (BillableSource(topic=_DELIVERY + ".Delivered", count="minutes"),),
    # A conference's participant minutes, counted when it ends, in the month it ended.
    CountKind.CONFERENCE_MINUTES: (
        BillableSource(topic=get_topic(Conference) + ".Ended", count="minutes"),
    ),
}
# What tells the customer, month and channel of a delivery's outcome events.
_DELIVERY_QUEUED = _DELIVERY + ".Queued"
# The billable events that carry their own customer and month (`tenant_id`, `month`: the
# platform clock's month when they were recorded); every other billable event belongs to a
# delivery, whose `Queued` comes before it in the log.
DATED_TOPICS = (_DELIVERY_QUEUED, get_topic(Conference) + ".Ended")


def billable_topics() -> list[str]:
    return sorted({s.topic for sources in BILLABLE_SOURCES.values() for s in sources})


class Counts(msgspec.Struct, frozen=True):
    """One customer's billable counts of one month."""

    customer_id: UUID
    month: str
    counts: dict[CountKind, int]


def count_billable(events: Iterable[Any], month: str) -> dict[UUID, dict[CountKind, int]]:
    """Per customer, the counts of the month from events in log order, by `BILLABLE_SOURCES`."""
    deliveries: dict[UUID, tuple[UUID, str, Channel]] = {}
    by_topic: dict[str, list[tuple[CountKind, BillableSource]]] = {}
    for kind, sources in BILLABLE_SOURCES.items():
        for source in sources:
            by_topic.setdefault(source.topic, []).append((kind, source))
    found: dict[UUID, dict[CountKind, int]] = {}
    for e in events:
        topic = get_topic(type(e))
        if topic == _DELIVERY_QUEUED and e.billed:  # not Picasse's own account mail
            deliveries[e.originator_id] = (e.tenant_id, e.month, e.channel)
        for kind, source in by_topic.get(topic, ()):
            owner = _owner(e, deliveries)
            if owner is None:
                continue
            customer, event_month, channel = owner
            if event_month != month or (source.channel and source.channel != channel):
                continue
            value = 1 if source.count is None else getattr(e, source.count, None)
            if value:
                counts = found.setdefault(customer, {})
                counts[kind] = counts.get(kind, 0) + int(value)
    return found


def _owner(
    e: Any, deliveries: dict[UUID, tuple[UUID, str, Channel]]
) -> tuple[UUID, str, Channel | None] | None:
    tenant, month = getattr(e, "tenant_id", None), getattr(e, "month", None)
    if isinstance(tenant, UUID) and isinstance(month, str):
        return tenant, month, getattr(e, "channel", None)
    return deliveries.get(e.originator_id)


# ---------------------------------------------------------------- prices


class PricePlan(msgspec.Struct, frozen=True, kw_only=True):
    """A customer's prices, in euros as exact decimals (never floats); VAT in percent."""

    monthly_fee: Decimal
    per_sms_segment: Decimal
    per_email: Decimal
    per_voice_minute: Decimal
    per_conference_minute: Decimal
    vat_percent: Decimal

    def price_of(self, kind: CountKind) -> Decimal:
        return {
            CountKind.SMS_SEGMENTS: self.per_sms_segment,
            CountKind.EMAILS: self.per_email,
            CountKind.VOICE_MINUTES: self.per_voice_minute,
            CountKind.CONFERENCE_MINUTES: self.per_conference_minute,
        }[kind]


def parse_price(text: object, field: str) -> Decimal:
    """A price or rate as given (a decimal string or an integer): at least 0, at most 6
    decimals; floats are refused, they are not exact."""
    if isinstance(text, bool) or not isinstance(text, str | int | Decimal):
        raise InvalidInput(f'{field}: give a decimal number as a string, e.g. "0.075"', field=field)
    try:
        value = Decimal(str(text).strip())
    except ArithmeticError:
        raise InvalidInput(f"{field}: not a decimal number", field=field) from None
    if not value.is_finite() or value < 0 or value > Decimal(1_000_000):
        raise InvalidInput(f"{field}: between 0 and 1000000", field=field)
    exponent = value.as_tuple().exponent  # an int, the value being finite
    if isinstance(exponent, int) and exponent < -6:
        raise InvalidInput(f"{field}: at most 6 decimals", field=field)
    return value


def price_plan(values: dict[str, object]) -> PricePlan:
    """A plan from the values given by name (every price of `PricePlan`); InvalidInput if not."""
    names = PricePlan.__struct_fields__
    missing = [n for n in names if n not in values]
    if missing:
        raise InvalidInput(f"{missing[0]}: missing", field=missing[0])
    plan = PricePlan(**{n: parse_price(values[n], n) for n in names})
    if plan.vat_percent > 100:
        raise InvalidInput("vat_percent: at most 100", field="vat_percent")
    return plan


def cents(amount: Decimal) -> int:
    """Euros to whole cents, half up (the amount an invoice line shows)."""
    return int((amount * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


class InvoiceLine(msgspec.Struct, frozen=True, kw_only=True):
    """Counts and amounts only: never a recipient, never content."""

    item: str  # "monthly_fee" or a CountKind
    quantity: int
    unit_price: Decimal
    amount_cents: int


class Rated(msgspec.Struct, frozen=True, kw_only=True):
    lines: list[InvoiceLine]
    subtotal_cents: int
    vat_percent: Decimal
    vat_cents: int
    total_cents: int


def rate(plan: PricePlan, counts: dict[CountKind, int]) -> Rated:
    """A month's lines: the fee, then each kind of count (every kind, zero included)."""
    lines = [
        InvoiceLine(
            item="monthly_fee",
            quantity=1,
            unit_price=plan.monthly_fee,
            amount_cents=cents(plan.monthly_fee),
        )
    ]
    for kind in CountKind:
        quantity = counts.get(kind, 0)
        price = plan.price_of(kind)
        lines.append(
            InvoiceLine(
                item=kind.value,
                quantity=quantity,
                unit_price=price,
                amount_cents=cents(price * quantity),
            )
        )
    subtotal = sum(line.amount_cents for line in lines)
    vat = int((Decimal(subtotal) * plan.vat_percent / 100).quantize(Decimal(1), ROUND_HALF_UP))
    return Rated(
        lines=lines,
        subtotal_cents=subtotal,
        vat_percent=plan.vat_percent,
        vat_cents=vat,
        total_cents=subtotal + vat,
    )


def parse_month(text: str, field: str = "month") -> str:
    try:
        return datetime.strptime(text.strip(), _MONTH_FORMAT).strftime(_MONTH_FORMAT)
    except ValueError:
        raise InvalidInput(f"{field}: give a month as YYYY-MM", field=field) from None


def month_after(month: str) -> date:
    year, number = (int(p) for p in month.split("-"))
    return date(year + number // 12, number % 12 + 1, 1)


def month_before(month: str) -> str:
    year, number = (int(p) for p in month.split("-"))
    return f"{year - 1}-12" if number == 1 else f"{year}-{number - 1:02d}"


# ---------------------------------------------------------------- aggregates


def billing_account_id(customer_id: UUID) -> UUID:
    return uuid5(BILLING, f"account/{customer_id}")


def invoice_id(customer_id: UUID, month: str) -> UUID:
    """One invoice per customer and month: a second run cannot issue it again."""
    return uuid5(BILLING, f"invoice/{customer_id}/{month}")


def fiscal_tenant_id(customer_id: UUID) -> UUID:
    """The tenant the customer's fiscal key lives under: not the customer's own tenant key,
    which termination destroys, but a tenant of its own wrapped directly under the
    key-encryption key's epochs (R10 with the seven years of Dutch tax law)."""
    return uuid5(BILLING, f"fiscal/{customer_id}")


INVOICE_NUMBERS_ID = uuid5(BILLING, "invoice-numbers")


class BillingAccount(Aggregate):
    """A customer's price plan and its invoices' ids (so they can be listed)."""

    @event("Opened")
    def __init__(self, id: UUID, tenant_id: UUID) -> None:
        self.tenant_id = tenant_id
        self.plan: PricePlan | None = None
        self.invoices: list[UUID] = []

    def set_plan(self, plan: PricePlan) -> None:
        if plan != self.plan:
            self._plan_set(plan)

    @event("PlanSet")
    def _plan_set(self, plan: PricePlan) -> None:
        self.plan = plan

    @event("InvoiceListed")
    def list_invoice(self, invoice_id: UUID) -> None:
        self.invoices.append(invoice_id)


# A billing account's opening and its plans: every run reads them across the whole log (the
# plans it rates, the accounts whose invoices may be overdue), so the event store keeps an
# index of just their rows.
_ACCOUNT_OPENED = get_topic(BillingAccount) + ".Opened"
_PLAN_SET = get_topic(BillingAccount) + ".PlanSet"
BILLING_ACCOUNT_TOPICS = (_ACCOUNT_OPENED, _PLAN_SET)


class InvoiceNumbers(Aggregate):
    """The one sequence of invoice numbers: each number is taken in the write that issues
    its invoice, so numbers have no gaps and no repeats."""

    @event("Started")
    def __init__(self, id: UUID) -> None:
        self.last = 0

    @event("Taken")
    def take(self, invoice_id: UUID) -> None:
        self.last += 1


class BilledTo(msgspec.Struct, frozen=True):
    """The billing name and address on an invoice, sealed under the customer's fiscal key
    of the invoice's fiscal year (so each year's invoices go when their seven years do)."""

    name: Annotated[str, Personal("fiscal", of="fiscal_year")]
    address: Annotated[str, Personal("fiscal", of="fiscal_year")]


def fiscal_key_destroyed_on(fiscal_year: str) -> date:
    """The day a fiscal year's key goes: seven years after the end of that year."""
    return date(int(fiscal_year) + 1 + FISCAL_RETENTION_YEARS, 1, 1)


class InvoiceStatus(StrEnum):
    OPEN = "open"
    PAID = "paid"
    OVERDUE = "overdue"


class Invoice(Aggregate):
    """An invoice: its number, the month it rates, lines with counts and amounts, what was
    paid. Its tenant is the customer's fiscal tenant, so it outlives termination.

    Its event classes are declared, so that type checkers see what the projection reads."""

    class Issued(Aggregate.Created):
        tenant_id: UUID
        customer_id: UUID
        number: int
        month: str
        fiscal_year: str
        issued_on: date
        due_on: date
        billed_to: BilledTo
        rated: Rated

    @event(Issued)
    def __init__(
        self,
        id: UUID,
        tenant_id: UUID,
        customer_id: UUID,
        number: int,
        month: str,
        fiscal_year: str,
        issued_on: date,
        due_on: date,
        billed_to: BilledTo,
        rated: Rated,
    ) -> None:
        self.tenant_id = tenant_id
        self.customer_id = customer_id
        self.number = number
        self.month = month
        self.fiscal_year = fiscal_year
        self.issued_on = issued_on
        self.due_on = due_on
        self.billed_to = billed_to
        self.rated = rated
        self.paid_cents = 0
        self.overdue = False

    @property
    def outstanding_cents(self) -> int:
        return self.rated.total_cents - self.paid_cents

    @property
    def status(self) -> InvoiceStatus:
        if self.outstanding_cents <= 0:
            return InvoiceStatus.PAID
        return InvoiceStatus.OVERDUE if self.overdue else InvoiceStatus.OPEN

    def pay(self, amount_cents: int, paid_on: date) -> None:
        if amount_cents <= 0:
            raise InvalidInput("amount: more than 0", field="amount")
        if amount_cents > self.outstanding_cents:
            raise InvoiceOverpaid(
                f"invoice {self.number} has {self.outstanding_cents} cents outstanding;"
                f" {amount_cents} is more"
            )
        self._paid(amount_cents, paid_on)

    class PaymentRecorded(Aggregate.Event):
        amount_cents: int
        paid_on: date

    @event(PaymentRecorded)
    def _paid(self, amount_cents: int, paid_on: date) -> None:
        self.paid_cents += amount_cents

    def due_passed(self, today: date) -> bool:
        return not self.overdue and self.outstanding_cents > 0 and today > self.due_on

    class BecameOverdue(Aggregate.Event):
        pass

    @event(BecameOverdue)
    def become_overdue(self) -> None:
        self.overdue = True


# ---------------------------------------------------------------- what queries return


class InvoiceDetails(msgspec.Struct, frozen=True, kw_only=True):
    id: UUID
    customer_id: UUID
    number: int
    month: str
    issued_on: date
    due_on: date
    billed_to_name: str | None  # None once the fiscal key is destroyed
    billed_to_address: str | None
    lines: list[InvoiceLine]
    subtotal_cents: int
    vat_percent: Decimal
    vat_cents: int
    total_cents: int
    paid_cents: int
    status: InvoiceStatus


class RunLine(msgspec.Struct, frozen=True, kw_only=True):
    customer_id: UUID
    month: str
    counts: dict[CountKind, int]
    total_cents: int
    invoice_id: UUID
    number: int | None  # None in a dry run, or
    issued: bool  # False: issued by an earlier run (or a dry run)


def _details(invoice: Invoice) -> InvoiceDetails:
    name, address = invoice.billed_to.name, invoice.billed_to.address
    return InvoiceDetails(
        id=invoice.id,
        customer_id=invoice.customer_id,
        number=invoice.number,
        month=invoice.month,
        issued_on=invoice.issued_on,
        due_on=invoice.due_on,
        billed_to_name=name if isinstance(name, str) else None,
        billed_to_address=address if isinstance(address, str) else None,
        lines=invoice.rated.lines,
        subtotal_cents=invoice.rated.subtotal_cents,
        vat_percent=invoice.rated.vat_percent,
        vat_cents=invoice.rated.vat_cents,
        total_cents=invoice.rated.total_cents,
        paid_cents=invoice.paid_cents,
        status=invoice.status,
    )


def kept_under_legal_obligation(log: PicasseApplication, customer_id: UUID) -> list[KeptRecord]:
    """The customer's invoices, per fiscal year: kept after termination under the fiscal
    key of their year (Dutch tax law), and the day that key will be destroyed."""
    try:
        account = log._get(billing_account_id(customer_id), BillingAccount, "account")
    except NotFound:
        return []
    by_year: dict[str, list[UUID]] = {}
    for ident in account.invoices:
        invoice = log._get(ident, Invoice, "invoice")
        by_year.setdefault(invoice.fiscal_year, []).append(invoice.id)
    return [
        KeptRecord(
            kind="fiscal",
            reason=FISCAL.reason,
            until=fiscal_key_destroyed_on(year).isoformat(),
            invoices=ids,
            key=f"fiscal/{year}",
        )
        for year, ids in sorted(by_year.items())
    ]


# ---------------------------------------------------------------- the application


class Billing(PicasseApplication):
    """Price plans, the invoicing run, invoices and payments."""

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        clock: Clock,
        sharing: PicasseApplication | None = None,
    ) -> None:
        super().__init__(env, sharing=sharing, clock=clock)
        self.clock = clock

    # ------------------------------------------------------------ plans

    def set_plan(self, customer_id: UUID, plan: PricePlan, *, by: Viewer) -> None:
        if not by.may_set_price_plans():
            raise NotPermitted("only Picasse's support and admins set price plans")
        customer = self._get(customer_id, Customer, "customer")
        customer._guard_not_terminated()
        self._retrying(lambda: self._plan_saved(customer_id, plan))

    def _plan_saved(self, customer_id: UUID, plan: PricePlan) -> None:
        account = self._account(customer_id)
        account.set_plan(plan)
        if account.pending_events:
            self.save(account)

    def plan(self, customer_id: UUID) -> PricePlan | None:
        try:
            return self._get(billing_account_id(customer_id), BillingAccount, "account").plan
        except NotFound:
            return None

    def _account(self, customer_id: UUID) -> BillingAccount:
        try:
            return self._get(billing_account_id(customer_id), BillingAccount, "account")
        except NotFound:
            return BillingAccount(id=billing_account_id(customer_id), tenant_id=customer_id)

    # ------------------------------------------------------------ the run

    def billable_events(self, start: int = 1) -> Iterator[Any]:
        """The log's events that billing counts from, in log order, from position `start`."""
        topics = [_DELIVERY_QUEUED, *billable_topics()]
        while True:
            page = self.recorder.select_notifications(start, 500, topics=topics)
            if not page:
                return
            yield from self._decoded(page)
            start = page[-1].id + 1

    def reading_start(self, month: str) -> int:
        """Where a run of the month starts reading the log: at the first dated billable
        event of the month before it or later (past the head when there is none), so a run
        costs about two months of traffic, not the log's history.

        Nothing of the month lies before: outcomes count in their delivery's month and come
        after its `Queued`. Dated events' months do not go down along the log, but for the
        skew of the clocks of the processes that record them (far less than a month: the
        month before is the margin for it), so a bisection over positions finds the place,
        reading one dated event per step, about log2(head) of them."""
        margin = month_before(month)
        low = 1
        high = start = (self.recorder.max_notification_id() or 0) + 1
        # Invariant: `start` is the first dated event at or after `high` (or `high`), and
        # every dated event before `low` is older than the margin.
        while low < high:
            middle = (low + high) // 2
            dated = self._first_dated_at(middle)
            if dated is None or dated[1] >= margin:
                high, start = middle, middle if dated is None else dated[0]
            else:
                low = min(dated[0] + 1, high)
        return start

    def _first_dated_at(self, position: int) -> tuple[int, str] | None:
        """The position and month of the first dated billable event at or after `position`."""
        page = self.recorder.select_notifications(position, 1, topics=DATED_TOPICS)
        if not page:
            return None
        dated: Any = self.mapper.to_domain_event(page[0])
        return page[0].id, dated.month

    def _decoded(self, page: Sequence[Notification]) -> list[Any]:
        # The sealing mapper opens the keys of a whole page in one go.
        many = getattr(self.mapper, "to_domain_events", None)
        return list(many(page)) if many else [self.mapper.to_domain_event(n) for n in page]

    def _plans(self) -> dict[UUID, PricePlan]:
        """Every customer with a plan, and the plan as it stands (its latest `PlanSet`): read
        through the event store's index of billing accounts' events, not the whole log."""
        found: dict[UUID, PricePlan] = {}
        page_start: int | None = 1
        while True:
            page = self.recorder.select_notifications(page_start, 500, topics=[_PLAN_SET])
            if not page:
                return found
            for e in self._decoded(page):
                found[e.originator_id] = e.plan
            page_start = page[-1].id + 1

    def run(
        self,
        month: str,
        *,
        dry_run: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[RunLine]:
        """Rates every customer with a plan for the month from the log, and issues an
        invoice where none was issued yet (never twice: invoices are one per month)."""
        month = parse_month(month)
        current = f"{self.clock.now():%Y-%m}"
        if month > current or (month == current and not dry_run):
            # A dry run shows the current month so far; an invoice waits for its end.
            raise InvalidInput(f"month: {month} is not over yet", field="month")
        counted = count_billable(self.billable_events(self.reading_start(month)), month)
        plans = self._plans()
        lines: list[RunLine] = []
        for done, (account_id, plan) in enumerate(sorted(plans.items()), start=1):
            account = self._get(account_id, BillingAccount, "account")
            customer_id = account.tenant_id
            counts = counted.get(customer_id, {})
            rated = rate(plan, counts)
            ident = invoice_id(customer_id, month)
            number, issued = None, False
            if not dry_run:
                number, issued = self._issue(customer_id, month, rated)
            lines.append(
                RunLine(
                    customer_id=customer_id,
                    month=month,
                    counts=counts,
                    total_cents=rated.total_cents,
                    invoice_id=ident,
                    number=number,
                    issued=issued,
                )
            )
            if progress is not None:
                progress(done, len(plans))
        return lines

    def _issue(self, customer_id: UUID, month: str, rated: Rated) -> tuple[int | None, bool]:
        """(its number, whether this call issued it). A customer terminated before the run
        gets none: its name and address are erased, and it is no longer served."""
        ident = invoice_id(customer_id, month)
        for tries_left in range(CONFLICT_RETRIES - 1, -1, -1):
            try:
                return self._get(ident, Invoice, "invoice").number, False
            except NotFound:
                pass
            customer = self._get(customer_id, Customer, "customer")
            if customer.terminated:
                return None, False
            numbers = self._numbers()
            numbers.take(ident)
            today = self.clock.now().date()
            invoice = Invoice(
                id=ident,
                tenant_id=fiscal_tenant_id(customer_id),
                customer_id=customer_id,
                number=numbers.last,
                month=month,
                fiscal_year=f"{today:%Y}",
                issued_on=today,
                due_on=today + PAYMENT_TERM,
                billed_to=BilledTo(
                    name=str(customer.organisation), address=str(customer.billing_address)
                ),
                rated=rated,
            )
            account = self._account(customer_id)
            account.list_invoice(ident)
            try:
                self.save(numbers, invoice, account)
            except IntegrityError:
                if tries_left == 0:
                    raise
                continue  # another run took the number (or issued this invoice): again
            return invoice.number, True
        raise AssertionError("unreachable")

    def kept_under_legal_obligation(self, customer_id: UUID) -> list[KeptRecord]:
        return kept_under_legal_obligation(self, customer_id)

    def _numbers(self) -> InvoiceNumbers:
        try:
            return self._get(INVOICE_NUMBERS_ID, InvoiceNumbers, "invoice numbers")
        except NotFound:
            return InvoiceNumbers(id=INVOICE_NUMBERS_ID)

    # ------------------------------------------------------------ invoices

    def invoices(self, customer_id: UUID, *, by: Viewer) -> list[InvoiceDetails]:
        if not by.sees_invoices_of(customer_id):
            raise NotFound(f"customer {customer_id} not found")
        try:
            account = self._get(billing_account_id(customer_id), BillingAccount, "account")
        except NotFound:
            return []
        return [_details(self._get(i, Invoice, "invoice")) for i in account.invoices]

    def invoice(self, ident: UUID, *, by: Viewer) -> InvoiceDetails:
        invoice = self._get(ident, Invoice, "invoice")
        if not by.sees_invoices_of(invoice.customer_id):
            raise NotFound(f"invoice {ident} not found")
        return _details(invoice)

    def invoices_by_id(self, ids: Iterable[UUID], *, by: Viewer) -> list[InvoiceDetails]:
        """The invoices named (a page of a list read from the invoices view), in that
        order: those the viewer may see."""
        found = [_details(self._get(i, Invoice, "invoice")) for i in ids]
        return [i for i in found if by.sees_invoices_of(i.customer_id)]

    def _accounts(self) -> list[BillingAccount]:
        page = self.recorder.select_notifications(1, 1_000_000, topics=[_ACCOUNT_OPENED])
        return [self._get(UUID(str(n.originator_id)), BillingAccount, "account") for n in page]

    def pay(self, ident: UUID, amount_cents: int, *, by: Viewer) -> InvoiceDetails:
        """A payment, full or partial, as staff record it."""
        if not by.may_record_payments():
            raise NotPermitted("only Picasse's support and admins record payments")
        for tries_left in range(CONFLICT_RETRIES - 1, -1, -1):
            invoice = self._get(ident, Invoice, "invoice")
            invoice.pay(amount_cents, self.clock.now().date())
            try:
                self.save(invoice)
            except IntegrityError:
                if tries_left == 0:
                    raise
                continue
            return _details(invoice)
        raise AssertionError("unreachable")

    def mark_overdue(self, remind: Reminder | None = None) -> list[InvoiceDetails]:
        """Invoices unpaid after their due date become overdue (the scheduler asks), each
        once; `remind` sends the customer's contact a reminder through the messaging
        pipeline (it says the number and what is outstanding, nothing else)."""
        today = self.clock.now().date()
        became: list[InvoiceDetails] = []
        for account in self._accounts():
            for ident in account.invoices:
                invoice = self._get(ident, Invoice, "invoice")
                if invoice.due_passed(today):
                    invoice.become_overdue()
                    try:
                        self.save(invoice)
                    except IntegrityError:
                        continue  # changed meanwhile (a payment): the next run decides
                    became.append(_details(invoice))
                    if remind is not None:
                        self._remind(invoice, remind)
        return became

    def _remind(self, invoice: Invoice, remind: Reminder) -> None:
        customer = self._get(invoice.customer_id, Customer, "customer")
        email = customer.contact.email
        if customer.terminated or not isinstance(email, EmailAddress):
            return  # no one to remind (erased): the overdue invoice is on the accounts page
        outstanding = Decimal(invoice.outstanding_cents) / 100
        remind(
            invoice.customer_id,
            email.address,
            f"Reminder: invoice {invoice.number} is overdue",
            f"Invoice {invoice.number} for {invoice.month} was due on"
            f" {invoice.due_on.isoformat()}; EUR {outstanding:.2f} is still outstanding.",
        )

    def _retrying(self, write: Callable[[], None]) -> None:
        for tries_left in range(CONFLICT_RETRIES - 1, -1, -1):
            try:
                write()
                return
            except IntegrityError:
                if tries_left == 0:
                    raise


__all__ = [
    "BILLABLE_SOURCES",
    "Billing",
    "CountKind",
    "DomainError",
    "Invoice",
    "PricePlan",
    "count_billable",
    "rate",
]
