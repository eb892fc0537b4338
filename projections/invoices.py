"""The invoices view: every invoice's number, customer, month, amounts and state, so a
list of invoices is a page of rows read by number rather than a walk of the whole log.

No personal data: the billing name and address stay in the invoice's events, sealed
under the customer's fiscal key; a list reads them from the invoices of its page."""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import date, datetime
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.persistence import Tracking, TrackingRecorder
from eventsourcing.projection import Projection
from eventsourcing.utils import get_topic

from picasse.domain.billing import Invoice
from picasse.projections.accounts import PAGE_SIZE


class InvoiceRow(msgspec.Struct, frozen=True, kw_only=True):
    id: UUID
    customer_id: UUID
    number: int
    month: str  # the month it rates, YYYY-MM
    fiscal_year: str
    issued_on: date
    due_on: date
    issued_at: datetime  # when the Issued event was recorded
    total_cents: int
    paid_cents: int = 0
    last_paid_on: date | None = None
    overdue: bool = False


class InvoicesView(TrackingRecorder, ABC):
    @abstractmethod
    def issued(self, row: InvoiceRow, tracking: Tracking) -> None: ...

    @abstractmethod
    def paid(self, invoice_id: UUID, amount_cents: int, paid_on: date, tracking: Tracking) -> None:
        """Adds a payment to what was paid."""

    @abstractmethod
    def became_overdue(self, invoice_id: UUID, tracking: Tracking) -> None: ...

    @abstractmethod
    def invoices(
        self, *, customer_id: UUID | None = None, after: int | None = None, limit: int = PAGE_SIZE
    ) -> list[InvoiceRow]:
        """By number; of one customer or of all; with `after` (the previous page's last
        number) those numbered after it."""

    @abstractmethod
    def overdue_of(self, customer_ids: list[UUID]) -> dict[UUID, int]:
        """Of these customers, each with overdue invoices: what is outstanding on them
        (cents). An overdue invoice paid in full is no longer overdue."""


class InvoicesProjection(Projection[InvoicesView]):
    name = "invoices_view"
    topics = tuple(
        get_topic(cls) for cls in (Invoice.Issued, Invoice.PaymentRecorded, Invoice.BecameOverdue)
    )

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        self.view.insert_tracking(tracking)

    @process_event.register
    def _(self, e: Invoice.Issued, tracking: Tracking) -> None:
        row = InvoiceRow(
            id=e.originator_id,
            customer_id=e.customer_id,
            number=e.number,
            month=e.month,
            fiscal_year=e.fiscal_year,
            issued_on=e.issued_on,
            due_on=e.due_on,
            issued_at=e.timestamp,
            total_cents=e.rated.total_cents,
        )
        self.view.issued(row, tracking)

    @process_event.register
    def _(self, e: Invoice.PaymentRecorded, tracking: Tracking) -> None:
        self.view.paid(e.originator_id, e.amount_cents, e.paid_on, tracking)

    @process_event.register
    def _(self, e: Invoice.BecameOverdue, tracking: Tracking) -> None:
        self.view.became_overdue(e.originator_id, tracking)
