"""Stored templates, groups managed as a whole, and cancelled scheduled messages, in memory."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

import pytest

from picasse.adapters.clock import ManualClock
from picasse.domain.errors import InvalidInput, NameTaken, NotCancellable, NotFound
from picasse.domain.messages import DeliveryStatus, FailureReason
from picasse.domain.messaging import Messages, NothingToSend, SendRequest
from picasse.domain.personal import ERASED
from tests.unit.test_messaging import _email, _user, world

__all__ = ["world"]  # the fixture, shared with test_messaging

World = tuple[Messages, UUID, ManualClock]


# ---------------------------------------------------------------- templates


def test_a_stored_template_is_checked_when_saved_and_fills_a_message(world: World) -> None:
    messages, customer_id, _ = world
    ident = messages.save_template(customer_id, "email", "Shift  reminder", "Hi {name}, at {time}")

    sent = messages.send(
        customer_id,
        _email(body=None, template_id=ident, variables={"name": "Ann", "time": "ten"}),
    )

    assert messages.template(customer_id, ident).placeholders == ["name", "time"]
    assert messages.template(customer_id, ident).name == "Shift reminder"
    assert messages.message(sent, _user(customer_id), reveal_content=True).body == "Hi Ann, at ten"


@pytest.mark.parametrize(
    ("text", "field"),
    [("Hi {name!r}", "text"), ("Hi {0}", "text"), ("{a:>99999}", "text"), ("Hi {", "text"),
     ("   ", "text"), ("x" * 1601, "text")],
)  # fmt: skip
def test_a_template_with_bad_placeholders_or_text_is_refused_when_saved(
    world: World, text: str, field: str
) -> None:
    messages, customer_id, _ = world
    before = messages.recorder.max_notification_id()
    with pytest.raises(InvalidInput) as refused:
        messages.save_template(customer_id, "sms", "Bad", text)
    assert refused.value.field == field
    assert messages.recorder.max_notification_id() == before


def test_a_template_name_is_taken_per_channel_and_free_again_once_deleted(world: World) -> None:
    messages, customer_id, _ = world
    sms = messages.save_template(customer_id, "sms", "Hello", "Hi {name}")
    messages.save_template(customer_id, "email", "hello", "Dear {name}")  # another channel

    with pytest.raises(NameTaken):
        messages.save_template(customer_id, "sms", "HELLO", "Hey")
    messages.delete_template(customer_id, sms)
    again = messages.save_template(customer_id, "sms", "Hello", "Hey {who}")

    assert again == sms
    assert [(t.channel.value, t.text) for t in messages.templates(customer_id)] == [
        ("email", "Dear {name}"),
        ("sms", "Hey {who}"),
    ]


def test_a_deleted_or_foreign_template_sends_nothing(world: World) -> None:
    messages, customer_id, _ = world
    ident = messages.save_template(customer_id, "sms", "Gone", "Bye")
    messages.delete_template(customer_id, ident)
    with pytest.raises(InvalidInput) as refused:
        messages.send(customer_id, _email(body=None, template_id=ident))
    assert refused.value.field == "template_id"
    with pytest.raises(NotFound):
        messages.template(UUID(int=7), ident)


def test_a_template_of_another_channel_or_with_a_body_is_refused(world: World) -> None:
    messages, customer_id, _ = world
    sms = messages.save_template(customer_id, "sms", "Short", "Hi")
    with pytest.raises(InvalidInput) as channel:
        messages.send(customer_id, _email(body=None, template_id=sms))
    email = messages.save_template(customer_id, "email", "Long", "Hello")
    with pytest.raises(InvalidInput) as both:
        messages.send(customer_id, _email(template_id=email))
    assert (channel.value.field, both.value.field) == ("template_id", "body")


def test_template_text_is_stored_only_sealed(world: World) -> None:
    messages, customer_id, _ = world
    # Canaries no timestamp, id or hash can contain (a digit string once matched a timestamp).
    messages.save_template(customer_id, "sms", "Vault-name-Quorxle", "Vault code Zwimbly for {who}")
    stored = b"".join(
        n.state for n in messages.recorder.select_notifications(start=1, limit=10_000)
    )
    assert b"Quorxle" not in stored and b"Zwimbly" not in stored


# ---------------------------------------------------------------- groups


def test_groups_are_listed_shown_changed_and_deleted(world: World) -> None:
    messages, customer_id, _ = world
    night = messages.create_group(customer_id, "Night", ["+31612345678"], replace=False)
    messages.create_group(customer_id, "Day", ["day@example.com"])

    with pytest.raises(NameTaken):
        messages.create_group(customer_id, "night", ["+31612345679"], replace=False)
    messages.replace_group_members(customer_id, night, ["+31612345679", "n@example.com"])
    listed = [(str(g.name), len(g.members)) for g in messages.groups(customer_id)]
    messages.delete_group(customer_id, night)

    assert listed == [("Day", 1), ("Night", 2)]
    assert [str(g.name) for g in messages.groups(customer_id)] == ["Day"]
    with pytest.raises(NotFound):
        messages.group(customer_id, night)
    with pytest.raises(InvalidInput) as refused:
        messages.send(customer_id, _email(to=[], group="Night"))
    assert refused.value.field == "group"


def test_a_group_of_another_customer_is_not_found(world: World) -> None:
    messages, customer_id, _ = world
    ident = messages.create_group(customer_id, "Mine", ["+31612345678"])
    with pytest.raises(NotFound):
        messages.delete_group(UUID(int=9), ident)
    assert messages.group(customer_id, ident).members == ["+31612345678"]
    assert ERASED not in messages.group(customer_id, ident).members


# ---------------------------------------------------------------- cancelling


def test_a_scheduled_message_is_cancelled_and_its_jobs_send_nothing(world: World) -> None:
    messages, customer_id, clock = world
    later = clock.now() + timedelta(hours=2)
    message_id = messages.send(
        customer_id, _email(to=["a@example.com", "b@example.com"], schedule_at=later)
    )

    messages.cancel(message_id, _user(customer_id))
    messages.cancel(message_id, _user(customer_id))  # again: nothing changes

    details = messages.message(message_id, _user(customer_id))
    assert {d.status for d in details.deliveries} == {DeliveryStatus.CANCELLED}
    clock.advance(timedelta(hours=3))
    started = messages.start_attempts([d.id for d in details.deliveries])
    assert started == [NothingToSend.SETTLED, NothingToSend.SETTLED]


def test_a_message_sent_at_once_or_started_is_not_cancelled(world: World) -> None:
    messages, customer_id, clock = world
    now = messages.send(customer_id, _email())
    scheduled = messages.send(customer_id, _email(schedule_at=clock.now() + timedelta(hours=1)))
    clock.advance(timedelta(hours=2))

    for message_id in (now, scheduled):
        with pytest.raises(NotCancellable) as refused:
            messages.cancel(message_id, _user(customer_id))
        assert refused.value.code == "message-not-cancellable"


def test_a_scheduled_message_with_a_started_delivery_is_not_cancelled(world: World) -> None:
    messages, customer_id, clock = world
    message_id = messages.send(
        customer_id, SendRequest(channel="sms", to=["+31612345678", "+31612345679"], body="x",
                                 schedule_at=clock.now() + timedelta(hours=1))
    )  # fmt: skip
    first = messages.message(message_id, _user(customer_id)).deliveries[0].id
    messages.record_permanent_failure(first, FailureReason.INVALID_RECIPIENT)

    with pytest.raises(NotCancellable):
        messages.cancel(message_id, _user(customer_id))
    statuses = [d.status for d in messages.message(message_id, _user(customer_id)).deliveries]
    assert statuses == [DeliveryStatus.UNDELIVERED, DeliveryStatus.QUEUED]
