"""The Messages application in memory: requests, validation, idempotency, lifecycle, escalation."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import argon2
import msgspec
import pytest
from eventsourcing.domain import DomainEvent
from eventsourcing.persistence import StoredEvent

from picasse.adapters.clock import ManualClock
from picasse.adapters.crypto import MemoryKeyRing, SealingMapper
from picasse.adapters.passwords import Argon2Passwords
from picasse.adapters.providers.receipts import receipt_failure
from picasse.adapters.pseudonyms import KeyedPseudonyms
from picasse.domain.access import Viewer
from picasse.domain.accounts import Accounts
from picasse.domain.customers import Customer
from picasse.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from picasse.domain.messages import Delivery, DeliveryStatus, FailureReason, delivery_id
from picasse.domain.messaging import (
    Attempt,
    FailedForGood,
    FailedForNow,
    IdempotencyKeyReused,
    Messages,
    NothingToSend,
    Outcome,
    SendRequest,
    Sent,
    request_fingerprint,
)
from picasse.domain.values import Role

RING = MemoryKeyRing()


class InMemoryAccounts(Accounts):
    def construct_mapper(self) -> SealingMapper:
        return SealingMapper(keys=RING)


class InMemoryMessages(Messages):
    def construct_mapper(self) -> SealingMapper:
        return SealingMapper(keys=RING)


@pytest.fixture
def world() -> tuple[Messages, UUID, ManualClock]:
    env = {"PERSISTENCE_MODULE": "eventsourcing.popo"}
    # One clock for both applications, as a process has one (it also stamps their events).
    clock = ManualClock(datetime(2026, 11, 30, 12, 0, tzinfo=UTC))
    accounts = InMemoryAccounts(
        env,
        passwords=Argon2Passwords(argon2.PasswordHasher(time_cost=1, memory_cost=8)),
        pseudonyms=KeyedPseudonyms(b"k" * 32),
        clock=clock,
    )
    customer_id = accounts.register_customer(
        organisation="Acme", contact_name="Bob", email="bob@example.com",
        phone="+31612345678", billing_address="Street 1",
    )  # fmt: skip
    accounts.start_subscription(customer_id)
    messages = InMemoryMessages(env, clock=clock, pseudonyms=KeyedPseudonyms(b"k" * 32))
    # Both applications share one in-memory recorder, as they share one table in PostgreSQL.
    messages.recorder = accounts.recorder
    messages.events.recorder = accounts.recorder
    return messages, customer_id, clock


def _email(**changes: object) -> SendRequest:
    fields: dict[str, object] = {"channel": "email", "to": ["ann@example.com"], "body": "Hello"}
    fields.update(changes)
    return SendRequest(**fields)  # type: ignore[arg-type]


def _user(customer_id: UUID) -> Viewer:
    return Viewer(role=Role.CUSTOMER_USER, customer_id=customer_id)


def test_a_request_queues_one_delivery_per_distinct_recipient(
    world: tuple[Messages, UUID, ManualClock],
) -> None:
    messages, customer_id, _ = world
    message_id = messages.send(
        customer_id, _email(to=["ann@example.com", "Ann@example.com", "bo@example.com"])
    )
    details = messages.message(message_id, _user(customer_id))
    assert [d.to for d in details.deliveries] == ["ann@example.com", "bo@example.com"]
    assert {d.status for d in details.deliveries} == {DeliveryStatus.QUEUED}


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (_email(to=["not-an-address"]), "to"),
        (SendRequest(channel="sms", to=["0612"], body="x"), "to"),
        (_email(body="   "), "body"),
        (_email(body=None), "body"),
        (SendRequest(channel="sms", to=["+31612345678"], body="x" * 1601), "body"),
        (_email(to=[f"a{i}@example.com" for i in range(1001)]), "to"),
        (_email(to=[]), "to"),
        (_email(group="no such group"), "group"),
        (_email(channel="fax"), "channel"),
        (_email(schedule_at=datetime(2020, 1, 1, tzinfo=UTC)), "schedule_at"),
        (_email(template="Hi {name}", body=None), "variables"),
        (SendRequest(channel="sms", to=["+31612345678"], body="x", subject="s"), "subject"),
    ],
)
def test_bad_requests_are_refused_and_record_nothing(
    world: tuple[Messages, UUID, ManualClock], request_: SendRequest, field: str
) -> None:
    messages, customer_id, _ = world
    before = messages.recorder.max_notification_id()
    with pytest.raises(InvalidInput) as refused:
        messages.send(customer_id, request_)
    assert refused.value.field == field
    assert messages.recorder.max_notification_id() == before


def test_a_customer_without_an_active_subscription_cannot_send(
    world: tuple[Messages, UUID, ManualClock],
) -> None:
    messages, _, _ = world
    with pytest.raises(NotFound):
        messages.send(UUID(int=1), _email())


def test_the_same_idempotency_key_within_a_day_returns_the_first_message(
    world: tuple[Messages, UUID, ManualClock],
) -> None:
    messages, customer_id, clock = world
    first = messages.send(customer_id, _email(idempotency_key="order-17"))
    before = messages.recorder.max_notification_id()
    clock.advance(timedelta(hours=23))
    assert messages.send(customer_id, _email(idempotency_key="order-17")) == first
    assert messages.recorder.max_notification_id() == before
    clock.advance(timedelta(hours=2))
    assert messages.send(customer_id, _email(idempotency_key="order-17", body="new")) != first


def test_the_same_idempotency_key_with_a_different_request_is_refused_and_sends_nothing(
    world: tuple[Messages, UUID, ManualClock],
) -> None:
    messages, customer_id, _ = world
    messages.send(customer_id, _email(idempotency_key="order-18"))
    before = messages.recorder.max_notification_id()

    with pytest.raises(IdempotencyKeyReused) as refused:
        messages.send(customer_id, _email(idempotency_key="order-18", body="changed"))

    assert refused.value.field == "idempotency_key"
    assert messages.recorder.max_notification_id() == before


def test_an_idempotency_claims_fingerprint_is_sealed_as_traffic_of_its_month(
    world: tuple[Messages, UUID, ManualClock],
) -> None:
    messages, customer_id, _ = world
    request = _email(idempotency_key="order-19")
    messages.send(customer_id, request)

    fingerprint = request_fingerprint(request)
    stored = b"".join(
        e.state for e in messages.recorder.select_notifications(start=1, limit=10_000)
    )
    assert fingerprint.encode() not in stored and bytes.fromhex(fingerprint) not in stored


def test_templates_are_filled_from_variables(world: tuple[Messages, UUID, ManualClock]) -> None:
    messages, customer_id, _ = world
    message_id = messages.send(
        customer_id, _email(body=None, template="Dear {name}", variables={"name": "Ann"})
    )
    assert messages.message(message_id, _user(customer_id), reveal_content=True).body == "Dear Ann"


def test_only_the_customers_own_users_may_reveal_content(
    world: tuple[Messages, UUID, ManualClock],
) -> None:
    messages, customer_id, _ = world
    message_id = messages.send(customer_id, _email())
    admin = Viewer(role=Role.PLATFORM_ADMIN, customer_id=None)
    assert messages.message(message_id, admin).body is None
    with pytest.raises(Forbidden):
        messages.message(message_id, admin, reveal_content=True)
    with pytest.raises(NotFound):
        messages.message(message_id, _user(UUID(int=7)))
    auditor = Viewer(role=Role.AUDITOR, customer_id=None)
    assert messages.message(message_id, auditor).deliveries[0].to is None


def test_a_delivery_is_delivered_once_and_a_repeat_changes_nothing(
    world: tuple[Messages, UUID, ManualClock],
) -> None:
    messages, customer_id, _ = world
    message_id = messages.send(customer_id, _email())
    ident = delivery_id(message_id, 0)
    job = messages.start_attempt(ident)
    assert job is not None and (job.to, job.body, job.attempt) == ("ann@example.com", "Hello", 1)
    assert "ann@" not in repr(job) and "Hello" not in repr(job)
    messages.record_sent(ident, "smtp", "<ref>", final=True)
    messages.record_sent(ident, "smtp", "<ref>", final=True)
    assert messages.delivery_status(ident) is DeliveryStatus.DELIVERED
    assert messages.start_attempt(ident) is None


def test_temporary_failures_retry_until_attempts_are_used_up(
    world: tuple[Messages, UUID, ManualClock],
) -> None:
    messages, customer_id, _ = world
    message_id = messages.send(customer_id, _email())
    ident = delivery_id(message_id, 0)
    for _ in range(2):
        assert messages.start_attempt(ident) is not None
        assert messages.record_temporary_failure(
            ident, FailureReason.PROVIDER_UNAVAILABLE, max_attempts=3
        )
        assert messages.delivery_status(ident) is DeliveryStatus.QUEUED
    messages.start_attempt(ident)
    assert not messages.record_temporary_failure(
        ident, FailureReason.PROVIDER_UNAVAILABLE, max_attempts=3
    )
    details = messages.message(message_id, _user(customer_id))
    assert details.deliveries[0].status is DeliveryStatus.UNDELIVERED
    assert details.deliveries[0].reason is FailureReason.MAX_ATTEMPTS


def test_unacknowledged_alerts_escalate_to_the_next_group(
    world: tuple[Messages, UUID, ManualClock],
) -> None:
    messages, customer_id, _ = world
    messages.create_group(customer_id, "first line", ["+31612345671", "+31612345672"])
    messages.create_group(customer_id, "managers", ["+31612345679", "+31612345671"])
    message_id = messages.send(
        customer_id,
        SendRequest(channel="sms", group="first line", body="Fire!", priority="alert",
                    ack_within_minutes=5, escalation_groups=["managers"]),
    )  # fmt: skip
    messages.acknowledge(delivery_id(message_id, 0), "reply")
    added = messages.escalate_unacknowledged(message_id)
    details = messages.message(message_id, _user(customer_id))
    assert [d.to for d in details.deliveries] == ["+31612345671", "+31612345672", "+31612345679"]
    assert len(added) == 1 and details.deliveries[2].escalation_level == 1
    assert messages.escalate_unacknowledged(message_id) == []  # no further group


def test_acknowledgement_needs_an_alert(world: tuple[Messages, UUID, ManualClock]) -> None:
    messages, customer_id, _ = world
    with pytest.raises(InvalidInput, match="only alerts"):
        messages.send(customer_id, _email(ack_within_minutes=5))
    assert messages.escalate_unacknowledged(messages.send(customer_id, _email())) == []


def test_a_terminated_customer_cannot_send(world: tuple[Messages, UUID, ManualClock]) -> None:
    messages, customer_id, _ = world
    customer: Customer = messages.repository.get(customer_id)
    customer.terminate()
    messages.save(customer)
    with pytest.raises(Conflict, match="no active subscription"):
        messages.send(customer_id, _email())


# The worker's batch commands: attempts start in memory and are recorded with their outcomes.


def _three_recipients(messages: Messages, customer_id: UUID) -> list[UUID]:
    message_id = messages.send(
        customer_id, _email(to=["ann@example.com", "bo@example.com", "cy@example.com"])
    )
    return [delivery_id(message_id, index) for index in range(3)]


def _topics(messages: Messages, ident: UUID) -> list[str]:
    return [type(e).__name__ for e in messages.events.get(ident)]


class _CountedWrites:
    """Counts the recorder's insert calls: one per write (one transaction in PostgreSQL)."""

    def __init__(self, messages: Messages) -> None:
        self.count = 0
        insert = messages.recorder.insert_events

        def counted(stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
            self.count += 1
            return insert(stored_events, **kwargs)

        messages.recorder.insert_events = counted  # type: ignore[method-assign]


def test_starting_attempts_records_nothing_and_opens_each_message_once(
    world: tuple[Messages, UUID, ManualClock], monkeypatch: pytest.MonkeyPatch
) -> None:
    messages, customer_id, _ = world
    idents = _three_recipients(messages, customer_id)
    before = messages.recorder.max_notification_id()
    loaded: list[UUID] = []
    get = messages.repository.get

    def noted(ident: UUID, **kwargs: Any) -> object:
        loaded.append(ident)
        return get(ident, **kwargs)

    monkeypatch.setattr(messages.repository, "get", noted)
    started = messages.start_attempts(idents)
    assert all(isinstance(a, Attempt) for a in started)
    jobs = [a.job for a in started if isinstance(a, Attempt)]
    assert [(j.to, j.body, j.attempt) for j in jobs] == [
        ("ann@example.com", "Hello", 1), ("bo@example.com", "Hello", 1), ("cy@example.com", "Hello", 1),
    ]  # fmt: skip
    assert messages.recorder.max_notification_id() == before
    assert len(loaded) == 5  # three deliveries, their message and their customer once
    assert "ann@" not in repr(started[0]) and "Hello" not in repr(started[0])


def test_a_batch_of_outcomes_is_recorded_in_one_write_each_with_its_attempt(
    world: tuple[Messages, UUID, ManualClock],
) -> None:
    messages, customer_id, _ = world
    idents = _three_recipients(messages, customer_id)
    started = messages.start_attempts(idents)
    writes = _CountedWrites(messages)
    outcomes: list[Outcome] = [
        Sent("smtp", "<ref>", final=True),
        FailedForNow(FailureReason.PROVIDER_UNAVAILABLE),
        FailedForGood(FailureReason.INVALID_RECIPIENT),
    ]
    again = messages.record_outcomes(
        [(a, o) for a, o in zip(started, outcomes, strict=True) if isinstance(a, Attempt)],
        max_attempts=3,
    )
    assert again == [False, True, False]
    assert writes.count == 1
    assert [messages.delivery_status(i) for i in idents] == [
        DeliveryStatus.DELIVERED, DeliveryStatus.QUEUED, DeliveryStatus.UNDELIVERED,
    ]  # fmt: skip
    assert [_topics(messages, i)[1:] for i in idents] == [
        ["Attempted", "Delivered"], ["Attempted", "RetryScheduled"], ["Attempted", "Undelivered"],
    ]  # fmt: skip


def test_a_batch_whose_one_delivery_conflicts_still_records_every_outcome_exactly_once(
    world: tuple[Messages, UUID, ManualClock],
) -> None:
    messages, customer_id, _ = world
    first, second, third = _three_recipients(messages, customer_id)
    started = messages.start_attempts([first, second, third])
    # Meanwhile another worker, holding a repeated job, delivers the second recipient,
    # and a third attempt of the last one's fails.
    assert messages.start_attempt(second) is not None
    messages.record_sent(second, "smtp", "<other>", final=True)
    assert messages.start_attempt(third) is not None
    assert messages.record_temporary_failure(
        third, FailureReason.PROVIDER_UNAVAILABLE, max_attempts=3
    )
    sent = Sent("smtp", "<ref>", final=True)
    again = messages.record_outcomes(
        [(a, sent) for a in started if isinstance(a, Attempt)], max_attempts=3
    )
    assert again == [False, False, False]
    assert {messages.delivery_status(i) for i in (first, second, third)} == {
        DeliveryStatus.DELIVERED
    }
    assert [_topics(messages, i).count("Delivered") for i in (first, second, third)] == [1, 1, 1]
    delivery: Delivery = messages.repository.get(first)
    message_id = delivery.message_id
    details = messages.message(message_id, _user(customer_id))
    assert [d.attempts for d in details.deliveries] == [1, 1, 2]
    assert details.deliveries[1].provider == "smtp"


def test_an_attempt_that_never_got_its_outcome_recorded_is_not_counted(
    world: tuple[Messages, UUID, ManualClock],
) -> None:
    messages, customer_id, _ = world
    ident = delivery_id(messages.send(customer_id, _email()), 0)
    messages.start_attempts([ident])  # the worker dies before recording the outcome
    (again,) = messages.start_attempts([ident])
    assert isinstance(again, Attempt) and again.job.attempt == 1
    messages.record_outcomes([(again, Sent("smtp", None, final=True))], max_attempts=3)
    assert _topics(messages, ident) == ["Queued", "Attempted", "Delivered"]


def test_repeated_unknown_and_erased_jobs_get_nothing_to_send(
    world: tuple[Messages, UUID, ManualClock],
) -> None:
    messages, customer_id, _ = world
    first, second, _ = _three_recipients(messages, customer_id)
    (attempt,) = messages.start_attempts([first])
    assert isinstance(attempt, Attempt)
    messages.record_outcomes([(attempt, Sent("smtp", None, final=True))], max_attempts=3)
    assert messages.start_attempts([first, UUID(int=5)]) == [
        NothingToSend.SETTLED, NothingToSend.UNKNOWN,
    ]  # fmt: skip
    # The body's key is destroyed: the very next batch finds it erased and gives up.
    RING.destroy_subject(customer_id, "content/2026-11")
    assert messages.start_attempts([second]) == [NothingToSend.ERASED]
    assert messages.delivery_status(second) is DeliveryStatus.UNDELIVERED


def _stored_bytes(messages: Messages) -> bytes:
    """Every stored event's topic and state, as the recorder holds them."""
    events = messages.recorder.select_notifications(start=None, limit=1_000_000)
    return b"".join(e.topic.encode() + e.state for e in events)


def test_a_group_name_is_stored_only_sealed_yet_finds_its_group(
    world: tuple[Messages, UUID, ManualClock],
) -> None:
    messages, customer_id, _ = world
    name = "Night shift qz7Kw9vTq3"  # high entropy: found only where it was written
    group = messages.create_group(customer_id, name, ["+31612345671"])
    assert messages.create_group(customer_id, name.upper(), ["+31612345672"]) == group

    assert b"qz7Kw9vTq3".lower() not in _stored_bytes(messages).lower()
    message_id = messages.send(
        customer_id, SendRequest(channel="sms", group="night  SHIFT qz7kw9vtq3", body="Hi")
    )
    details = messages.message(message_id, _user(customer_id))
    assert [d.to for d in details.deliveries] == ["+31612345672"]
    # The search can fail: the same text through an unsealed field is found.
    messages.acknowledge(delivery_id(message_id, 0), via=name)
    assert name.encode() in _stored_bytes(messages)


def test_a_receipts_words_leave_only_a_code_in_the_stored_events(
    world: tuple[Messages, UUID, ManualClock],
) -> None:
    messages, customer_id, _ = world
    message_id = messages.send(customer_id, _email())
    ident = delivery_id(message_id, 0)
    messages.record_sent(ident, "sms-primary", "gw-1", final=False)
    words = "rejected: unknown subscriber +31 6 9876 5432 to annabel.q7zk@example.nl"
    failure = receipt_failure("failed", words)

    messages.record_receipt(ident, failure, provider="sms-primary", reference="gw-1")

    stored = _stored_bytes(messages)
    for fragment in (b"698765432", b"9876 5432", b"annabel", b"subscriber", b"rejected:"):
        assert fragment not in stored
    assert b"invalid-recipient" in stored  # the search looks where the code is
    (delivery,) = messages.message(message_id, _user(customer_id)).deliveries
    assert delivery.reason is FailureReason.INVALID_RECIPIENT
    assert b"annabel" not in msgspec.json.encode(delivery)


def test_mail_picasse_sends_to_a_user_is_read_back_by_nobody(
    world: tuple[Messages, UUID, ManualClock],
) -> None:
    """A set-password link's body: not the customer's own users (a colleague's link would
    take over their account), nor staff (R7). Only the delivery worker opens it."""
    messages, customer_id, _ = world
    message_id = messages.send_account_mail(
        customer_id, "new.user@example.com", "Set your password", "https://x/set-password/t"
    )
    for viewer in (
        Viewer(role=Role.CUSTOMER_ADMIN, customer_id=customer_id),
        Viewer(role=Role.CUSTOMER_USER, customer_id=customer_id),
        Viewer(role=Role.PLATFORM_ADMIN, customer_id=None),
    ):
        with pytest.raises(Forbidden):
            messages.message(message_id, viewer, reveal_content=True)
        assert messages.message(message_id, viewer).body is None


def test_events_are_stamped_by_the_applications_clock_not_the_systems(
    world: tuple[Messages, UUID, ManualClock],
) -> None:
    messages, customer_id, clock = world
    moved = datetime(2031, 5, 2, 9, 30, tzinfo=UTC)
    clock.set(moved)
    before = messages.recorder.max_notification_id() or 0

    message_id = messages.send(customer_id, _email(to=["ann@example.com", "bo@example.com"]))

    assert messages.message(message_id, _user(customer_id)).requested_at == moved
    sent = [
        messages.mapper.to_domain_event(n)
        for n in messages.recorder.select_notifications(start=before + 1, limit=1000)
    ]
    assert len(sent) >= 3  # the message and its two deliveries, at least
    assert all(isinstance(e, DomainEvent) and e.timestamp == moved for e in sent)
