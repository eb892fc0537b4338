"""Messages: a customer's request to send, and one Delivery per recipient with its own lifecycle.

Recipients and the sender's IP are traffic data (R4): sealed under the customer's key for
the calendar month of the request, so retention can destroy a whole month (R5). Bodies
are content (R7): sealed under the customer's content key of that month, which only
delivery workers and the customer's own users get opened.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID, uuid5

import msgspec
from eventsourcing.domain import event

from picasse.domain.aggregates import Aggregate
from picasse.domain.errors import Conflict, NotCancellable
from picasse.domain.personal import Erased, Personal


class Channel(StrEnum):
    SMS = "sms"
    EMAIL = "email"
    VOICE = "voice"


class Priority(StrEnum):
    NORMAL = "normal"
    ALERT = "alert"


class DeliveryStatus(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    DELIVERED = "delivered"
    FAILED = "failed"  # the network reported that it could not deliver
    UNDELIVERED = "undelivered"  # we gave up: attempts used up, or refused for good
    CANCELLED = "cancelled"  # the customer cancelled its scheduled message before it started

    @property
    def final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset(
    {
        DeliveryStatus.DELIVERED,
        DeliveryStatus.FAILED,
        DeliveryStatus.UNDELIVERED,
        DeliveryStatus.CANCELLED,
    }
)


class FailureReason(StrEnum):
    """Why a delivery failed, from a fixed vocabulary.

    A gateway's or mail server's own words are never recorded or logged: they quote
    numbers, addresses and bodies. Providers and receipts map what they are told
    (HTTP status, SMTP reply code, receipt status and wording) to one of these codes.
    """

    REJECTED_BY_GATEWAY = "rejected-by-gateway"
    INVALID_RECIPIENT = "invalid-recipient"
    RECIPIENT_UNREACHABLE = "recipient-unreachable"
    MAILBOX_FULL = "mailbox-full"
    CONTENT_REFUSED = "content-refused"
    SENDER_REFUSED = "sender-refused"
    CREDENTIALS_REFUSED = "credentials-refused"
    UNREACHABLE = "unreachable"
    CONNECTION_LOST = "connection-lost"
    TLS_FAILED = "tls-failed"
    TIMED_OUT = "timed-out"
    THROTTLED = "throttled"
    PROVIDER_UNAVAILABLE = "provider-unavailable"
    PROVIDER_ERROR = "provider-error"
    NO_ANSWER = "no-answer"
    BUSY = "busy"
    NO_PROVIDER = "no-provider"
    MAX_ATTEMPTS = "max-attempts"
    ERASED = "erased"
    CUSTOMER_TERMINATED = "customer-terminated"
    UNKNOWN = "unknown"

    @property
    def text(self) -> str:
        """The reason as a person reads it."""
        return _FAILURE_TEXTS[self]

    @classmethod
    def read(cls, stored: str) -> FailureReason:
        """A stored code; text stored before reasons were codes reads as `unknown`."""
        try:
            return cls(stored)
        except ValueError:
            return cls.UNKNOWN


_FAILURE_TEXTS = {
    FailureReason.REJECTED_BY_GATEWAY: "the gateway refused the message",
    FailureReason.INVALID_RECIPIENT: "no such number or address",
    FailureReason.RECIPIENT_UNREACHABLE: "the recipient could not be reached (phone off or out of reach)",
    FailureReason.MAILBOX_FULL: "the recipient's mailbox is full",
    FailureReason.CONTENT_REFUSED: "the provider refused the message's content",
    FailureReason.SENDER_REFUSED: "the provider refused our sender",
    FailureReason.CREDENTIALS_REFUSED: "the provider refused our credentials",
    FailureReason.UNREACHABLE: "the provider could not be reached",
    FailureReason.CONNECTION_LOST: "the connection to the provider was lost",
    FailureReason.TLS_FAILED: "no secure connection to the provider could be made",
    FailureReason.TIMED_OUT: "the provider or the network timed out",
    FailureReason.THROTTLED: "the provider is busy and asked us to slow down",
    FailureReason.PROVIDER_UNAVAILABLE: "the provider is unavailable",
    FailureReason.PROVIDER_ERROR: "the provider failed unexpectedly",
    FailureReason.NO_ANSWER: "the call was not answered",
    FailureReason.BUSY: "the line was busy",
    FailureReason.NO_PROVIDER: "no provider is configured for this channel",
    FailureReason.MAX_ATTEMPTS: "gave up after the last attempt failed",
    FailureReason.ERASED: "erased before it could be sent",
    FailureReason.CUSTOMER_TERMINATED: "customer terminated",
    FailureReason.UNKNOWN: "the network gave no reason we know",
}


class AckPolicy(msgspec.Struct, frozen=True):
    """Recipients must acknowledge within the time, or the next group is alerted."""

    within_minutes: int
    escalation_groups: list[UUID]


def call_minutes(seconds: int) -> int:
    """A call's billed minutes: every minute begun counts (0 seconds: none)."""
    return -(-max(seconds, 0) // 60)


def traffic_month(moment: datetime) -> str:
    """The month whose traffic key seals what happened at `moment`, e.g. '2026-11'."""
    return f"{moment.year:04d}-{moment.month:02d}"


class Message(Aggregate):
    """The event classes other rooms dispatch on are declared, so that type checkers see them."""

    class Requested(Aggregate.Created):
        tenant_id: UUID
        month: str
        channel: Channel
        priority: Priority
        body: Annotated[str, Personal("content", of="month")]
        subject: Annotated[str | None, Personal("content", of="month")]
        recipient_count: int
        group_id: UUID | None
        not_before: datetime | None
        requested_by: UUID | None
        client_ip: Annotated[str | None, Personal("traffic", of="month")]
        ack: AckPolicy | None
        qr_code: Annotated[str | None, Personal("content", of="month")]

    @event(Requested)
    def __init__(
        self,
        tenant_id: UUID,
        month: str,
        channel: Channel,
        priority: Priority,
        body: Annotated[str, Personal("content", of="month")],
        subject: Annotated[str | None, Personal("content", of="month")],
        recipient_count: int,
        group_id: UUID | None,
        not_before: datetime | None,
        requested_by: UUID | None,
        client_ip: Annotated[str | None, Personal("traffic", of="month")],
        ack: AckPolicy | None,
        # E-mail: text whose QR code goes with the mail as an image (a visitor's pass).
        qr_code: Annotated[str | None, Personal("content", of="month")] = None,
    ) -> None:
        self.tenant_id = tenant_id
        self.month = month
        self.channel = channel
        self.priority = priority
        self.body = body
        self.subject = subject
        self.recipient_count = recipient_count
        self.group_id = group_id
        self.not_before = not_before
        self.requested_by = requested_by
        self.client_ip = client_ip
        self.ack = ack
        self.qr_code = qr_code
        self.escalation_level = 0

    def delivery_ids(self) -> list[UUID]:
        return [delivery_id(self.id, index) for index in range(self.recipient_count)]

    def next_escalation_group(self) -> UUID | None:
        if self.ack is None or self.escalation_level >= len(self.ack.escalation_groups):
            return None
        return self.ack.escalation_groups[self.escalation_level]

    def escalate(self, group_id: UUID, added: int) -> int:
        """Records that `added` more recipients were alerted; returns the first new index."""
        policy = self.ack
        if policy is None or self.next_escalation_group() != group_id:
            raise Conflict(f"message {self.id} is not due to escalate to group {group_id}")
        first = self.recipient_count
        level = self.escalation_level + 1
        further = level < len(policy.escalation_groups)
        self._escalated(level, group_id, first, added, policy.within_minutes if further else None)
        return first

    @event("Escalated")
    def _escalated(
        self,
        level: int,
        group_id: UUID,
        first_index: int,
        added: int,
        check_again_in_minutes: int | None,  # when the next group is due, if there is one
    ) -> None:
        self.escalation_level = level
        self.recipient_count = first_index + added


def delivery_id(message_id: UUID, index: int) -> UUID:
    return uuid5(message_id, f"delivery/{index}")


class Delivery(Aggregate):
    """One recipient of one message: queued → sending → delivered | failed | undelivered.

    The event classes other rooms dispatch on are declared, so that type checkers see them.
    """

    class Queued(Aggregate.Created):
        """Version 2 adds `billed`: False for the mail Picasse sends about a user's account
        or an invoice, traffic of the customer's tenant but not billed to it."""

        class_version = 2
        tenant_id: UUID
        month: str
        message_id: UUID
        index: int
        channel: Channel
        to: Annotated[str, Personal("traffic", of="month")]
        not_before: datetime | None
        escalation_level: int
        billed: bool

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["billed"] = True

    @event(Queued)
    def __init__(
        self,
        id: UUID,  # delivery_id(message_id, index)
        tenant_id: UUID,
        month: str,
        message_id: UUID,
        index: int,
        channel: Channel,
        to: Annotated[str, Personal("traffic", of="month")],
        not_before: datetime | None,
        escalation_level: int,
        billed: bool = True,
    ) -> None:
        self.tenant_id = tenant_id
        self.month = month
        self.message_id = message_id
        self.index = index
        self.channel = channel
        self.to = to
        self.not_before = not_before
        self.escalation_level = escalation_level
        self.billed = billed
        self.status = DeliveryStatus.QUEUED
        self.attempts = 0
        self.reason: FailureReason | None = None
        self.provider: str | None = None
        self.provider_reference: str | None = None
        self.segments: int | None = None  # short messages billed, when the provider counts
        self.minutes: int | None = None  # a call's billed minutes, from its receipt
        self.awaiting_receipt = False
        self.acknowledged = False

    class _ReasonGiven(Aggregate.Event):
        """An outcome with a reason. Version 1 stored the provider's own words; version 2
        stores a `FailureReason` code, and old words read as `unknown`."""

        class_version = 2
        reason: FailureReason

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["reason"] = FailureReason.read(str(state.get("reason") or "")).value

    class RetryScheduled(_ReasonGiven):
        pass

    class Undelivered(_ReasonGiven):
        pass

    class Failed(_ReasonGiven):
        pass

    @property
    def final(self) -> bool:
        return self.status.final

    @property
    def settled(self) -> bool:
        """Nothing more to send: final, or handed to a network whose receipt will tell."""
        return self.final or self.awaiting_receipt

    def attempt(self) -> int:
        """Starts one more attempt; returns its number.

        Workers record the attempt in the same write as its outcome, so an attempt
        interrupted by a crash is not counted: its job comes back and is tried again.
        """
        if self.settled:
            raise Conflict(f"delivery {self.id} is already {self.status.value}")
        self._attempted(self.attempts + 1)
        return self.attempts

    class Attempted(Aggregate.Event):
        attempt: int

    @event(Attempted)
    def _attempted(self, attempt: int) -> None:
        self.attempts = attempt
        self.status = DeliveryStatus.SENDING

    def handed_over(
        self, provider: str, provider_reference: str | None, *, segments: int | None = None
    ) -> None:
        """A gateway took it; the network's receipt will tell the outcome. `segments`:
        how many short messages it took, for billing (a count only: no text)."""
        if not self.final:
            self._accepted(provider, provider_reference, segments)

    class Accepted(Aggregate.Event):
        provider: str
        provider_reference: str | None
        segments: int | None

    @event(Accepted)
    def _accepted(
        self, provider: str, provider_reference: str | None, segments: int | None = None
    ) -> None:
        self.segments = segments
        self.provider = provider
        self.provider_reference = provider_reference
        self.awaiting_receipt = True

    def deliver(
        self,
        provider: str,
        provider_reference: str | None,
        *,
        segments: int | None = None,
        minutes: int | None = None,
    ) -> None:
        """`minutes`: a call's billed minutes, from its receipt's duration (`call_minutes`)."""
        if self.status is DeliveryStatus.DELIVERED:
            return  # a repeated receipt or a redelivered job changes nothing
        if self.final:
            raise Conflict(f"delivery {self.id} is already {self.status.value}")
        self._delivered(provider, provider_reference, segments, minutes)

    class Delivered(Aggregate.Event):
        provider: str
        provider_reference: str | None
        segments: int | None
        minutes: int | None

    @event(Delivered)
    def _delivered(
        self,
        provider: str,
        provider_reference: str | None,
        segments: int | None = None,
        minutes: int | None = None,
    ) -> None:
        if segments is not None:
            self.segments = segments
        if minutes is not None:
            self.minutes = minutes
        self.status = DeliveryStatus.DELIVERED
        self.provider = provider
        self.provider_reference = provider_reference
        self.reason = None

    def fail_temporarily(self, reason: FailureReason, max_attempts: int) -> bool:
        """True if another attempt will follow; False once attempts are used up: then the
        delivery is undelivered for `max-attempts` (earlier reasons stay in its history)."""
        if self.final:
            return False
        if self.attempts >= max_attempts:
            self._undelivered(FailureReason.MAX_ATTEMPTS)
            return False
        self._retry_scheduled(reason)
        return True

    @event(RetryScheduled)
    def _retry_scheduled(self, reason: FailureReason) -> None:
        self.status = DeliveryStatus.QUEUED
        self.reason = reason

    def give_up(self, reason: FailureReason) -> None:
        if not self.final:
            self._undelivered(reason)

    @event(Undelivered)
    def _undelivered(self, reason: FailureReason) -> None:
        self.status = DeliveryStatus.UNDELIVERED
        self.reason = reason

    def network_failed(self, reason: FailureReason) -> None:
        if not self.final:
            self._failed(reason)

    @event(Failed)
    def _failed(self, reason: FailureReason) -> None:
        self.status = DeliveryStatus.FAILED
        self.reason = reason

    @property
    def not_started(self) -> bool:
        """Still waiting for its first attempt: nothing was tried or handed to anyone."""
        return self.status is DeliveryStatus.QUEUED and self.attempts == 0

    def cancel(self) -> None:
        """The customer withdrew it before anything was tried; the worker sends nothing."""
        if self.status is DeliveryStatus.CANCELLED:
            return
        if not self.not_started:
            raise NotCancellable(f"delivery {self.id} is already {self.status.value}")
        self._cancelled()

    class Cancelled(Aggregate.Event):
        pass

    @event(Cancelled)
    def _cancelled(self) -> None:
        self.status = DeliveryStatus.CANCELLED

    def acknowledge(self, via: str) -> None:
        if not self.acknowledged:
            self._acknowledged(via)

    class Acknowledged(Aggregate.Event):
        via: str

    @event(Acknowledged)
    def _acknowledged(self, via: str) -> None:
        self.acknowledged = True


class Member(msgspec.Struct, frozen=True):
    address: Annotated[str, Personal("group")]


class RecipientGroup(Aggregate):
    """A customer's named list of numbers and addresses (its members are data subjects).

    The name is free text a customer chose ("Annabel's night shift"): sealed with the
    members under the group's key. The id is a keyed pseudonym of (customer, name), so a
    group is found by its name without the name being stored readable (`group_ident`).
    """

    @event("Created")
    def __init__(
        self,
        id: UUID,
        tenant_id: UUID,
        name: Annotated[str, Personal("group")],
        members: list[Member],
    ) -> None:
        self.tenant_id = tenant_id
        self.name = name
        self.members = members
        self.deleted = False

    def replace_members(self, members: list[Member]) -> None:
        self._members_replaced(self.tenant_id, members)

    @event("MembersReplaced")
    def _members_replaced(self, tenant_id: UUID, members: list[Member]) -> None:
        self.members = members
        self.deleted = False  # setting a deleted group's members again brings it back

    def delete(self) -> None:
        """Nobody is sent to it any more; its members stay sealed under the group's key
        until the customer's keys go (the registry's `group` kind)."""
        if not self.deleted:
            self._deleted(self.tenant_id)

    @event("Deleted")
    def _deleted(self, tenant_id: UUID) -> None:
        self.deleted = True


def group_name_key(tenant_id: UUID, name: str) -> str:
    """What a group's pseudonymous id is keyed on: its customer and its name, compared
    caselessly and with runs of spaces as one."""
    return f"{tenant_id}/{' '.join(name.split()).casefold()}"


class IdempotencyClaim(Aggregate):
    """One client idempotency key of one customer, claimed by the message it created.

    The request it was claimed with is kept as a fingerprint (a SHA-256 of the request),
    sealed as traffic data of the month: it is a hash of recipients and content, so it is
    shredded with them. A claim from before fingerprints has none (`None`)."""

    @event("Claimed")
    def __init__(self, id: UUID, message_id: UUID, claimed_at: datetime) -> None:
        self.message_id = message_id
        self.claimed_at = claimed_at
        self.fingerprint: str | Erased | None = None

    def reclaim(self, message_id: UUID, claimed_at: datetime) -> None:
        self._reclaimed(message_id, claimed_at)

    @event("Reclaimed")
    def _reclaimed(self, message_id: UUID, claimed_at: datetime) -> None:
        self.message_id = message_id
        self.claimed_at = claimed_at
        self.fingerprint = None

    def fingerprint_with(self, tenant_id: UUID, month: str, fingerprint: str) -> None:
        self._fingerprinted(tenant_id, month, fingerprint)

    @event("Fingerprinted")
    def _fingerprinted(
        self,
        tenant_id: UUID,
        month: str,
        fingerprint: Annotated[str, Personal("traffic", of="month")],
    ) -> None:
        self.fingerprint = fingerprint  # Erased once the month's key is gone


class MessageTemplate(Aggregate):
    """A customer's named text for one channel, with {name} placeholders filled when a
    message is sent from it. Name and text are the customer's content, sealed under the
    template's own key (the registry's `template` kind), kept for the subscription.

    The id is a keyed pseudonym of (customer, channel, name), so a name is used once per
    channel without being stored readable (`template_name_key`).
    """

    @event("Saved")
    def __init__(
        self,
        id: UUID,
        tenant_id: UUID,
        channel: Channel,
        name: Annotated[str, Personal("template")],
        text: Annotated[str, Personal("template")],
    ) -> None:
        self.tenant_id = tenant_id
        self.channel = channel
        self.name = name
        self.text = text
        self.deleted = False

    def change(self, text: str) -> None:
        self._changed(self.tenant_id, text)

    @event("Changed")
    def _changed(self, tenant_id: UUID, text: Annotated[str, Personal("template")]) -> None:
        self.text = text
        self.deleted = False  # saving a deleted template's name again brings it back

    def delete(self) -> None:
        if not self.deleted:
            self._deleted(self.tenant_id)

    @event("Deleted")
    def _deleted(self, tenant_id: UUID) -> None:
        self.deleted = True


def template_name_key(tenant_id: UUID, channel: Channel, name: str) -> str:
    """What a template's pseudonymous id is keyed on: customer, channel and name (caseless,
    runs of spaces as one)."""
    return f"{tenant_id}/{channel.value}/{' '.join(name.split()).casefold()}"


class Catalogue(Aggregate):
    """The ids (nothing else) of one customer's templates or groups, so they can be listed:
    their names are sealed and their ids pseudonyms, so nothing else finds them all."""

    @event("Opened")
    def __init__(self, id: UUID, tenant_id: UUID, of: str) -> None:
        self.tenant_id = tenant_id
        self.of = of
        self.ids: list[UUID] = []

    def add(self, ident: UUID) -> None:
        if ident not in self.ids:
            self._added(ident)

    @event("Added")
    def _added(self, ident: UUID) -> None:
        self.ids.append(ident)

    def remove(self, ident: UUID) -> None:
        if ident in self.ids:
            self._removed(ident)

    @event("Removed")
    def _removed(self, ident: UUID) -> None:
        self.ids.remove(ident)


def catalogue_id(tenant_id: UUID, of: str) -> UUID:
    return uuid5(tenant_id, f"catalogue/{of}")
