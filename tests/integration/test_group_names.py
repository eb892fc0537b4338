"""Group names on PostgreSQL: stored only sealed, yet a group is found by its name."""

from __future__ import annotations

from uuid import UUID

import psycopg
import pytest

from picasse.adapters.postgres.store import recorder_of
from picasse.domain.access import Viewer
from picasse.domain.accounts import Accounts
from picasse.domain.errors import InvalidInput
from picasse.domain.messages import delivery_id
from picasse.domain.messaging import Messages, SendRequest
from picasse.domain.values import Role

# High entropy, so a hit means this value and nothing else.
CANARY = "Ploeg Xq7vKz93Wm nacht"


def _stored(raw: psycopg.Connection[tuple[object, ...]], messages: Messages) -> bytes:
    """Every stored event's bytes, read past the mapper."""
    rows = raw.execute(f"SELECT topic, state FROM {recorder_of(messages).events_table_name}")
    stored = []
    for topic, state in rows:
        assert isinstance(topic, str) and isinstance(state, bytes)
        stored.append(topic.encode() + state)
    return b"".join(stored)


def _found(text: str, stored: bytes) -> bool:
    forms = {text, text.lower(), text.casefold()}
    return any(form.encode(codec) in stored for form in forms for codec in ("utf-8", "utf-16-le"))


def test_the_events_table_holds_no_group_name_and_the_search_finds_an_unsealed_one(
    messages: Messages, customer: UUID, raw: psycopg.Connection[tuple[object, ...]]
) -> None:
    messages.create_group(customer, CANARY, ["+31612300011"])
    message_id = messages.send(customer, SendRequest(channel="sms", group=CANARY, body="Hi"))

    assert not _found(CANARY, _stored(raw, messages))
    assert not _found("Xq7vKz93Wm", _stored(raw, messages))
    # The same text through a field that is not sealed: the search must find it there.
    messages.acknowledge(delivery_id(message_id, 0), via=CANARY)
    assert _found(CANARY, _stored(raw, messages))


def test_a_group_is_found_by_its_name_however_spaced_or_cased(
    messages: Messages, customer: UUID
) -> None:
    group = messages.create_group(customer, CANARY, ["+31612300011"])
    assert messages.create_group(customer, "  ploeg  XQ7VKZ93WM Nacht ", ["+31612300012"]) == group

    message_id = messages.send(
        customer, SendRequest(channel="sms", group="ploeg xq7vkz93wm NACHT", body="Hi")
    )

    viewer = Viewer(role=Role.CUSTOMER_USER, customer_id=customer)
    assert [d.to for d in messages.message(message_id, viewer).deliveries] == ["+31612300012"]


def test_another_customer_cannot_reach_a_group_by_its_name(
    messages: Messages, customer: UUID, accounts: Accounts
) -> None:
    messages.create_group(customer, CANARY, ["+31612300011"])
    other = accounts.register_customer(
        organisation="Other", contact_name="Eve", email="eve@example.com",
        phone="+31612345679", billing_address="Street 2",
    )  # fmt: skip
    accounts.start_subscription(other)

    with pytest.raises(InvalidInput, match="no group"):
        messages.send(other, SendRequest(channel="sms", group=CANARY, body="Hi"))
