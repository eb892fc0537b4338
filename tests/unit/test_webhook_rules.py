"""Webhook endpoints' rules without I/O: URLs, event types, the back-off over 24 hours, the
relay's status events (ids, statuses and times only) and the Standard Webhooks signature."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import msgspec
import pytest
from eventsourcing.persistence import Notification
from standardwebhooks.webhooks import Webhook

from picasse.adapters.nats.relay import status_event_for
from picasse.adapters.webhook_posts import signed_headers
from picasse.domain.errors import InvalidInput
from picasse.domain.webhooks import (
    RETRY_WINDOW,
    WebhookEventType,
    failing_too_long,
    new_secret,
    next_attempt_at,
    parse_event_types,
    parse_webhook_url,
)

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/x", "example.com/x", "http://", "https://u:p@example.com/",
     "http://example.com/\nx", "http://example.com:0/", "https://" + "a" * 2000 + ".com/"],
)  # fmt: skip
def test_a_webhook_url_must_be_http_or_https_with_a_host_and_no_credentials(url: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_webhook_url(url)
    assert refused.value.field == "url"


def test_event_types_are_the_five_known_ones_each_once() -> None:
    assert parse_event_types(["alert.escalated", "delivery.failed", "delivery.failed"]) == [
        WebhookEventType.DELIVERY_FAILED,
        WebhookEventType.ALERT_ESCALATED,
    ]
    for bad in ([], ["delivery.sent"]):
        with pytest.raises(InvalidInput):
            parse_event_types(bad)


def test_a_failing_event_is_retried_with_growing_waits_until_24_hours_then_given_up() -> None:
    attempts, at = 1, T0
    times = []
    while (following := next_attempt_at(T0, at, attempts)) is not None:
        assert following > at
        times.append(following)
        at, attempts = following, attempts + 1
    waits = [b - a for a, b in zip([T0, *times], times, strict=False)]
    assert waits[:3] == [timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=15)]
    assert max(waits) <= timedelta(hours=4)
    assert times[-1] == T0 + RETRY_WINDOW  # the last try falls on the window's end
    assert failing_too_long(T0, times[-1]) and not failing_too_long(T0, times[-2])
    assert not failing_too_long(None, times[-1])


def _notification(topic: str, state: dict[str, object], version: int = 3) -> Notification:
    return Notification(
        id=7, originator_id=uuid4(), originator_version=version, topic=topic,
        state=msgspec.msgpack.encode(state),
    )  # fmt: skip


def test_the_relay_turns_outcomes_acknowledgements_and_escalations_into_status_events() -> None:
    tenant, message = uuid4(), uuid4()
    queued = msgspec.msgpack.encode({"tenant_id": tenant, "message_id": message, "to": b"sealed"})
    requested = msgspec.msgpack.encode({"tenant_id": tenant, "body": b"sealed"})
    for topic, kind, status in (
        ("Delivery.Delivered", "delivery.delivered", "delivered"),
        ("Delivery.Failed", "delivery.failed", "failed"),
        ("Delivery.Undelivered", "delivery.undelivered", "undelivered"),
        ("Delivery.Acknowledged", "alert.acknowledged", "acknowledged"),
    ):
        told = _notification(f"picasse.domain.messages:{topic}", {"timestamp": T0, "via": "x"})
        event = status_event_for(told, queued)
        assert event is not None
        assert (event.event_type.value, event.status, event.tenant_id) == (kind, status, tenant)
        assert (event.message_id, event.delivery_id) == (message, told.originator_id)
        assert isinstance(told.originator_id, UUID)
        assert event.event_id == f"evt_{told.originator_id.hex}_3"
    escalated = _notification(
        "picasse.domain.messages:Message.Escalated", {"timestamp": T0, "level": 2, "added": 4}
    )
    event = status_event_for(escalated, requested)
    assert event is not None and event.event_type is WebhookEventType.ALERT_ESCALATED
    assert (event.message_id, event.delivery_id, event.escalation_level) == (
        escalated.originator_id, None, 2,
    )  # fmt: skip
    other = _notification("picasse.domain.messages:Delivery.Attempted", {"timestamp": T0})
    assert status_event_for(other, queued) is None


def test_our_signature_verifies_with_the_standard_webhooks_reference() -> None:
    secret, body = new_secret(), b'{"type":"delivery.failed"}'
    now = datetime.now(UTC)  # noqa: TID251 (the reference checks against the wall clock)
    headers = signed_headers(secret, "evt_1_2", now, body)
    assert Webhook(secret).verify(body, headers) == {"type": "delivery.failed"}
    headers["webhook-signature"] = signed_headers(new_secret(), "evt_1_2", now, body)[
        "webhook-signature"
    ]
    with pytest.raises(Exception, match="signature"):
        Webhook(secret).verify(body, headers)


def test_the_relays_listeners_follow_registration_disabling_enabling_and_deletion() -> None:
    from picasse.adapters.nats.relay import (
        ENDPOINT_DELETED,
        ENDPOINT_DISABLED,
        ENDPOINT_ENABLED,
        ENDPOINT_REGISTERED,
        Listeners,
    )

    tenant, other, endpoint = uuid4(), uuid4(), uuid4()
    delivered, failed = WebhookEventType.DELIVERY_DELIVERED, WebhookEventType.DELIVERY_FAILED
    listeners = Listeners()
    assert not listeners and not listeners.want(tenant, delivered)

    def fold(topic: str, state: dict[str, object]) -> None:
        told = Notification(
            id=1, originator_id=endpoint, originator_version=1, topic=topic,
            state=msgspec.msgpack.encode(state),
        )  # fmt: skip
        assert listeners.fold(told)

    fold(ENDPOINT_REGISTERED, {"tenant_id": tenant, "events": ["delivery.delivered"], "url": b"x"})
    assert listeners and listeners.want(tenant, delivered)
    assert not listeners.want(tenant, failed) and not listeners.want(other, delivered)
    fold(ENDPOINT_DISABLED, {"failing_since": T0})
    assert not listeners.want(tenant, delivered)
    fold(ENDPOINT_ENABLED, {})
    assert listeners.want(tenant, delivered)
    fold(ENDPOINT_DELETED, {})
    assert not listeners and not listeners.want(tenant, delivered)
    other_event = _notification("picasse.domain.messages:Delivery.Delivered", {"timestamp": T0})
    assert not listeners.fold(other_event)


def test_a_copy_of_the_relays_listeners_folds_on_its_own() -> None:
    """A batch's endpoint events go into a copy, kept only once the batch is published: a
    batch read again after a failed publish meets the listeners as they were before it."""
    from picasse.adapters.nats.relay import ENDPOINT_DISABLED, ENDPOINT_REGISTERED, Listeners

    tenant, endpoint = uuid4(), uuid4()
    delivered = WebhookEventType.DELIVERY_DELIVERED

    def told(topic: str, state: dict[str, object]) -> Notification:
        return Notification(
            id=1, originator_id=endpoint, originator_version=1, topic=topic,
            state=msgspec.msgpack.encode(state),
        )  # fmt: skip

    before = Listeners()
    before.fold(told(ENDPOINT_REGISTERED, {"tenant_id": tenant, "events": ["delivery.delivered"]}))
    batch = before.copy()
    batch.fold(told(ENDPOINT_DISABLED, {"failing_since": T0}))
    assert not batch.want(tenant, delivered)
    assert before.want(tenant, delivered)
