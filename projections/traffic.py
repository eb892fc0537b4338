"""The traffic view (R4): who sent when, over which channel, to whom, with what outcome.

Recipients and sender IPs are held sealed under the customer's month key (the view opens
them for the pages that show them to those entitled); an erasure (a month's traffic key,
or the whole customer) destroys that key, so they read as erased, while counts without
personal data stay.
"""

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

from picasse.domain.messages import Delivery, DeliveryStatus, FailureReason, Message
from picasse.domain.privacy import Erasure
from picasse.projections.accounts import plain


class TrafficRow(msgspec.Struct, frozen=True):
    delivery_id: UUID
    message_id: UUID
    customer_id: UUID
    requested_at: datetime
    requested_by: UUID | None
    client_ip: str | None
    channel: str
    recipient: str | None  # None once erased (or for viewers not entitled)
    status: str
    attempts: int
    reason: FailureReason | None
    updated_at: datetime
    queued_at: datetime | None = None  # with the delivery id, where a page of rows ends


class MessageRow(msgspec.Struct, frozen=True):
    """One message as the view holds it: ids, times and counts, nothing personal."""

    id: UUID
    customer_id: UUID
    channel: str
    priority: str
    requested_at: datetime
    requested_by: UUID | None
    counts: dict[str, int]  # its deliveries per status (only statuses it has)


class DeliveryRow(msgspec.Struct, frozen=True):
    id: UUID
    message_id: UUID
    customer_id: UUID
    index: int
    channel: str
    recipient: str | None  # None once erased
    status: str
    attempts: int
    reason: FailureReason | None
    provider: str | None
    acknowledged: bool
    updated_at: datetime


class MessageQuery(msgspec.Struct, frozen=True, kw_only=True):
    """Which of a customer's messages to list, and the page: newest first, those strictly
    older than `before` (the last one of the previous page: keyset paging, so messages
    arriving meanwhile move no message from one page to another)."""

    customer_id: UUID
    channel: str | None = None
    status: str | None = None  # messages with at least one delivery in it
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    before: tuple[datetime, UUID] | None = None  # (requested_at, id) of the previous page's last
    limit: int = 50


class DailyCount(msgspec.Struct, frozen=True):
    day: date
    customer_id: UUID | None  # None: summed over every customer
    channel: str
    status: str
    count: int


class Change(msgspec.Struct, frozen=True):
    """What one delivery event changes in its row."""

    status: str | None = None
    attempts: int | None = None
    reason: str | None = None  # a FailureReason's code
    provider: str | None = None
    acknowledged: bool | None = None


class TrafficView(TrackingRecorder, ABC):
    @abstractmethod
    def message_requested(
        self, message_id: UUID, customer_id: UUID, channel: str, priority: str, month: str,
        requested_at: datetime, requested_by: UUID | None, client_ip: str | None, tracking: Tracking,
    ) -> None: ...  # fmt: skip

    @abstractmethod
    def delivery_queued(
        self, delivery_id: UUID, message_id: UUID, customer_id: UUID, index: int, channel: str,
        month: str, recipient: str | None, queued_at: datetime, tracking: Tracking,
    ) -> None: ...  # fmt: skip

    @abstractmethod
    def delivery_changed(
        self, delivery_id: UUID, change: Change, at: datetime, tracking: Tracking
    ) -> None: ...

    @abstractmethod
    def erased(self, tenant_id: UUID, subject: str | None, tracking: Tracking) -> None:
        """A month's key ('traffic/2026-05') or the whole tenant's (None) was destroyed."""

    # Queries

    @abstractmethod
    def traffic(
        self, customer_id: UUID | None, start: datetime, end: datetime, *, limit: int = 1000,
        recipient: str | None = None, before: tuple[datetime, UUID] | None = None,
    ) -> list[TrafficRow]:  # fmt: skip
        """Newest first (queued_at, then delivery id, both descending); with `recipient`
        (in its look-up form, see domain.messaging.parse_recipient_query) only the
        customer's deliveries to it; with `before` ((queued_at, delivery id) of the previous
        page's last row) only those after it in that order: keyset paging."""

    @abstractmethod
    def messages(self, query: MessageQuery) -> list[MessageRow]: ...

    @abstractmethod
    def message_row(self, message_id: UUID) -> MessageRow | None: ...

    @abstractmethod
    def deliveries_of(
        self, message_id: UUID, *, after_index: int | None = None, limit: int = 50
    ) -> list[DeliveryRow]:
        """A message's deliveries in recipient order, those after `after_index` (paging)."""

    @abstractmethod
    def daily_counts(self, customer_id: UUID | None, start: date, end: date) -> list[DailyCount]:
        """Deliveries per day (of queueing, UTC), channel and status, of one customer or
        (None) of all, summed: counts the projection keeps as it writes the deliveries, so
        a page reads a few hundred rows however much traffic there is."""


class TrafficProjection(Projection[TrafficView]):
    name = "traffic_view"
    topics = tuple(
        get_topic(cls)
        for cls in (
            Message.Requested,
            Delivery.Queued,
            Delivery.Attempted,
            Delivery.Accepted,
            Delivery.Delivered,
            Delivery.RetryScheduled,
            Delivery.Undelivered,
            Delivery.Failed,
            Delivery.Acknowledged,
            Delivery.Cancelled,
            Erasure.Recorded,
        )
    )

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        self.view.insert_tracking(tracking)

    @process_event.register
    def _(self, e: Message.Requested, tracking: Tracking) -> None:
        self.view.message_requested(
            e.originator_id, e.tenant_id, e.channel.value, e.priority.value, e.month,
            e.timestamp, e.requested_by, plain(e.client_ip) if e.client_ip is not None else None, tracking,
        )  # fmt: skip

    @process_event.register
    def _(self, e: Delivery.Queued, tracking: Tracking) -> None:
        self.view.delivery_queued(
            e.originator_id, e.message_id, e.tenant_id, e.index, e.channel.value, e.month,
            plain(e.to), e.timestamp, tracking,
        )  # fmt: skip

    @process_event.register
    def _(self, e: Delivery.Attempted, tracking: Tracking) -> None:
        change = Change(status=DeliveryStatus.SENDING.value, attempts=e.attempt)
        self.view.delivery_changed(e.originator_id, change, e.timestamp, tracking)

    @process_event.register
    def _(self, e: Delivery.Accepted, tracking: Tracking) -> None:
        self.view.delivery_changed(
            e.originator_id, Change(provider=e.provider), e.timestamp, tracking
        )

    @process_event.register
    def _(self, e: Delivery.Delivered, tracking: Tracking) -> None:
        change = Change(status=DeliveryStatus.DELIVERED.value, provider=e.provider)
        self.view.delivery_changed(e.originator_id, change, e.timestamp, tracking)

    @process_event.register
    def _(self, e: Delivery.RetryScheduled, tracking: Tracking) -> None:
        change = Change(status=DeliveryStatus.QUEUED.value, reason=e.reason.value)
        self.view.delivery_changed(e.originator_id, change, e.timestamp, tracking)

    @process_event.register
    def _(self, e: Delivery.Undelivered, tracking: Tracking) -> None:
        change = Change(status=DeliveryStatus.UNDELIVERED.value, reason=e.reason.value)
        self.view.delivery_changed(e.originator_id, change, e.timestamp, tracking)

    @process_event.register
    def _(self, e: Delivery.Failed, tracking: Tracking) -> None:
        change = Change(status=DeliveryStatus.FAILED.value, reason=e.reason.value)
        self.view.delivery_changed(e.originator_id, change, e.timestamp, tracking)

    @process_event.register
    def _(self, e: Delivery.Acknowledged, tracking: Tracking) -> None:
        self.view.delivery_changed(
            e.originator_id, Change(acknowledged=True), e.timestamp, tracking
        )

    @process_event.register
    def _(self, e: Delivery.Cancelled, tracking: Tracking) -> None:
        change = Change(status=DeliveryStatus.CANCELLED.value)
        self.view.delivery_changed(e.originator_id, change, e.timestamp, tracking)

    @process_event.register
    def _(self, e: Erasure.Recorded, tracking: Tracking) -> None:
        self.view.erased(e.tenant_id, e.subject, tracking)
