"""The Messages application in memory: requests, validation, idempotency, lifecycle, escalation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import argon2
import pytest

from picasse.adapters.crypto import MemoryKeyRing, SealingMapper
from picasse.adapters.passwords import Argon2Passwords
from picasse.adapters.pseudonyms import KeyedPseudonyms
from picasse.domain.access import Viewer
from picasse.domain.accounts import Accounts
from picasse.domain.errors import Conflict, InvalidInput, NotFound
from picasse.domain.messages import DeliveryStatus, delivery_id
from picasse.domain.messaging import Forbidden, Messages, SendRequest
from picasse.domain.values import Role

RING = MemoryKeyRing()


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class InMemoryAccounts(Accounts):
    def construct_mapper(self) -> SealingMapper:  # type: ignore[override]
        return SealingMapper(keys=RING)


class InMemoryMessages(Messages):
    def construct_mapper(self) -> SealingMapper:  # type: ignore[override]
        return SealingMapper(keys=RING)


@pytest.fixture
def world() -> tuple[Messages, UUID, Clock]:
    env = {"PERSISTENCE_MODULE": "eventsourcing.popo"}
    accounts = InMemoryAccounts(
        env,
        passwords=Argon2Passwords(argon2.PasswordHasher(time_cost=1, memory_cost=8)),
        pseudonyms=KeyedPseudonyms(b"k" * 32),
    )
    customer_id = accounts.register_customer(
        organisation="Acme", contact_name="Bob", email="bob@example.com",
        phone="+31612345678", billing_address="Street 1",
    )  # fmt: skip
    accounts.start_subscription(customer_id)
    clock = Clock()
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
    world: tuple[Messages, UUID, Clock],
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
    world: tuple[Messages, UUID, Clock], request_: SendRequest, field: str
) -> None:
    messages, customer_id, _ = world
    before = messages.recorder.max_notification_id()
    with pytest.raises(InvalidInput) as refused:
        messages.send(customer_id, request_)
    assert refused.value.field == field
    assert messages.recorder.max_notification_id() == before


def test_a_customer_without_an_active_subscription_cannot_send(
    world: tuple[Messages, UUID, Clock],
) -> None:
    messages, _, _ = world
    with pytest.raises(NotFound):
        messages.send(UUID(int=1), _email())


def test_the_same_idempotency_key_within_a_day_returns_the_first_message(
    world: tuple[Messages, UUID, Clock],
) -> None:
    messages, customer_id, clock = world
    first = messages.send(customer_id, _email(idempotency_key="order-17"))
    before = messages.recorder.max_notification_id()
    clock.now += timedelta(hours=23)
    assert messages.send(customer_id, _email(idempotency_key="order-17", body="changed")) == first
    assert messages.recorder.max_notification_id() == before
    clock.now += timedelta(hours=2)
    assert messages.send(customer_id, _email(idempotency_key="order-17")) != first


def test_templates_are_filled_from_variables(world: tuple[Messages, UUID, Clock]) -> None:
    messages, customer_id, _ = world
    message_id = messages.send(
        customer_id, _email(body=None, template="Dear {name}", variables={"name": "Ann"})
    )
    assert messages.message(message_id, _user(customer_id), reveal_content=True).body == "Dear Ann"


def test_only_the_customers_own_users_may_reveal_content(
    world: tuple[Messages, UUID, Clock],
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
    world: tuple[Messages, UUID, Clock],
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
    world: tuple[Messages, UUID, Clock],
) -> None:
    messages, customer_id, _ = world
    message_id = messages.send(customer_id, _email())
    ident = delivery_id(message_id, 0)
    for _ in range(2):
        assert messages.start_attempt(ident) is not None
        assert messages.record_temporary_failure(ident, "SMTP 451", max_attempts=3)
        assert messages.delivery_status(ident) is DeliveryStatus.QUEUED
    messages.start_attempt(ident)
    assert not messages.record_temporary_failure(ident, "SMTP 451", max_attempts=3)
    details = messages.message(message_id, _user(customer_id))
    assert details.deliveries[0].status is DeliveryStatus.UNDELIVERED
    assert "3 attempts" in (details.deliveries[0].reason or "")


def test_unacknowledged_alerts_escalate_to_the_next_group(
    world: tuple[Messages, UUID, Clock],
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


def test_acknowledgement_needs_an_alert(world: tuple[Messages, UUID, Clock]) -> None:
    messages, customer_id, _ = world
    with pytest.raises(InvalidInput, match="only alerts"):
        messages.send(customer_id, _email(ack_within_minutes=5))
    assert messages.escalate_unacknowledged(messages.send(customer_id, _email())) == []


def test_a_terminated_customer_cannot_send(world: tuple[Messages, UUID, Clock]) -> None:
    messages, customer_id, _ = world
    customer = messages.repository.get(customer_id)
    customer.terminate()
    messages.save(customer)
    with pytest.raises(Conflict, match="no active subscription"):
        messages.send(customer_id, _email())
