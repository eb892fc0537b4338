"""The relay: follows the event log and publishes one job per queued delivery, exactly once,
and one status event per delivery outcome, acknowledgement and escalation that an active
webhook endpoint of its customer wants.

Which endpoints want what it learns from the log it reads anyway: an endpoint's
registration, deletion, disabling or enabling read before a status event decides for that
event (the log's order is the truth), and on start it folds the endpoints' events up to its
position. So an endpoint registered just before a delivery's outcome hears of it, and a
customer without endpoints (most of them) costs no status event, publish or sender's look-up.

Jobs are published with the event's identity as Nats-Msg-Id, then the log position is
recorded: not after every batch, but at most every quarter second (or thousand events),
and within a quarter second once the log goes quiet. A relay stopped between the two
republishes on restart what it published since, and JetStream drops those duplicates
(its duplicate window is minutes long). The relay reads only the events that call for
jobs, and only their plain (unsealed) fields: it holds no keys.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from contextlib import suppress
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec
import nats.errors
import psycopg
from eventsourcing.persistence import Notification, Tracking
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresTrackingRecorder
from nats.js import JetStreamContext
from psycopg import sql
from psycopg.rows import dict_row

from picasse.adapters.nats.jobs import (
    CheckAcknowledgements,
    Deliver,
    Job,
    Topology,
    encoder,
    ensure_stream,
    published,
)
from picasse.adapters.nats.status_events import (
    StatusEvent,
    WebhookTopology,
    ensure_webhook_stream,
)
from picasse.adapters.nats.status_events import publish as publish_status_events
from picasse.adapters.postgres.store import topics_literal
from picasse.domain.webhooks import ENDPOINT_TOPICS, WebhookEventType, endpoint_active

log = logging.getLogger(__name__)

QUEUED = "picasse.domain.messages:Delivery.Queued"
REQUESTED = "picasse.domain.messages:Message.Requested"
ESCALATED = "picasse.domain.messages:Message.Escalated"
DELIVERED = "picasse.domain.messages:Delivery.Delivered"
FAILED = "picasse.domain.messages:Delivery.Failed"
UNDELIVERED = "picasse.domain.messages:Delivery.Undelivered"
ACKNOWLEDGED = "picasse.domain.messages:Delivery.Acknowledged"
# What customers' webhooks hear of, by the event that tells it.
STATUS_TOPICS = {
    DELIVERED: (WebhookEventType.DELIVERY_DELIVERED, "delivered"),
    FAILED: (WebhookEventType.DELIVERY_FAILED, "failed"),
    UNDELIVERED: (WebhookEventType.DELIVERY_UNDELIVERED, "undelivered"),
    ACKNOWLEDGED: (WebhookEventType.ALERT_ACKNOWLEDGED, "acknowledged"),
    ESCALATED: (WebhookEventType.ALERT_ESCALATED, "escalated"),
}
# What tells the relay which customers' endpoints want which status events.
ENDPOINT_REGISTERED, ENDPOINT_DELETED, ENDPOINT_DISABLED, ENDPOINT_ENABLED = ENDPOINT_TOPICS
# The events that call for jobs or status events, or decide who wants the status events;
# the relay never reads the rest of the log.
TOPICS = (QUEUED, REQUESTED, *STATUS_TOPICS, *ENDPOINT_TOPICS)
# How stale the recorded position may get while jobs are published: what a restart
# republishes (and JetStream drops as duplicates) is at most this much work.
TRACKING_SECONDS = 0.25
TRACKING_NOTIFICATIONS = 1000
QUIET_POLL_SECONDS = 0.25  # bounds a missed NOTIFY, and how soon a stop request is seen
UNAVAILABLE_PAUSE_SECONDS = 0.5  # before publishing again what JetStream could not take
# How long a stopping relay tries to record where it got to. Not recording loses nothing
# (a restart republishes from the last recorded position, and JetStream drops the
# duplicates), while a database that went away first would hold the stop for the pool's
# whole wait, and then its retries.
LAST_RECORD_SECONDS = 3.0


class _Queued(msgspec.Struct):
    tenant_id: UUID
    channel: str
    not_before: datetime | None


class _Ack(msgspec.Struct):
    within_minutes: int


class _Requested(msgspec.Struct):
    timestamp: datetime
    ack: _Ack | None


class _Escalated(msgspec.Struct):
    timestamp: datetime
    check_again_in_minutes: int | None


class _Happened(msgspec.Struct):
    timestamp: datetime
    level: int | None = None  # of an escalation


class _First(msgspec.Struct):
    """What a status event needs of its aggregate's first event (Queued or Requested)."""

    tenant_id: UUID
    message_id: UUID | None = None  # a delivery's; a message is its own


class _Registered(msgspec.Struct):
    """An endpoint's plain fields (its URL and secret are sealed and skipped unopened)."""

    tenant_id: UUID
    events: list[WebhookEventType]


class _Endpoint(msgspec.Struct):
    tenant_id: UUID
    events: frozenset[WebhookEventType]
    deleted: bool = False
    disabled: bool = False


_registered = msgspec.msgpack.Decoder(_Registered)
_queued = msgspec.msgpack.Decoder(_Queued)
_happened = msgspec.msgpack.Decoder(_Happened)
_first = msgspec.msgpack.Decoder(_First)
_requested = msgspec.msgpack.Decoder(_Requested)
_escalated = msgspec.msgpack.Decoder(_Escalated)


def jobs_for(notification: Notification) -> list[Job]:
    """The jobs one event calls for (sealed fields are skipped unopened)."""
    topic = notification.topic
    originator = notification.originator_id
    assert isinstance(originator, UUID)
    if topic == QUEUED:
        queued = _queued.decode(notification.state)
        return [Deliver(originator, queued.tenant_id, queued.channel, queued.not_before)]
    if topic == REQUESTED:
        requested = _requested.decode(notification.state)
        if requested.ack is None:
            return []
        due = requested.timestamp + timedelta(minutes=requested.ack.within_minutes)
        return [CheckAcknowledgements(originator, due)]
    if topic == ESCALATED:
        escalated = _escalated.decode(notification.state)
        if escalated.check_again_in_minutes is None:
            return []
        due = escalated.timestamp + timedelta(minutes=escalated.check_again_in_minutes)
        return [CheckAcknowledgements(originator, due)]
    return []


def status_event_for(notification: Notification, first_state: bytes | None) -> StatusEvent | None:
    """The webhooks' status event one event calls for, given its aggregate's first event
    (which names the customer and, for a delivery, the message); plain fields only."""
    told = STATUS_TOPICS.get(notification.topic)
    if told is None or first_state is None:
        return None
    event_type, status = told
    originator = notification.originator_id
    assert isinstance(originator, UUID)
    happened = _happened.decode(notification.state)
    first = _first.decode(first_state)
    is_message = notification.topic == ESCALATED
    return StatusEvent(
        event_id=f"evt_{originator.hex}_{notification.originator_version}",
        event_type=event_type,
        tenant_id=first.tenant_id,
        message_id=originator if is_message else (first.message_id or originator),
        delivery_id=None if is_message else originator,
        status=None if is_message else status,
        escalation_level=happened.level if is_message else None,
        occurred_at=happened.timestamp,
    )


class Listeners:
    """Which customers' active endpoints want which status events, as the endpoints' events
    folded in so far tell it (in log order; "active" is the endpoints' own rule)."""

    def __init__(self) -> None:
        self._endpoints: dict[UUID, _Endpoint] = {}
        self._of_customer: dict[UUID, set[UUID]] = {}

    def __bool__(self) -> bool:
        """False while no customer has an endpoint: no status event is wanted."""
        return bool(self._endpoints)

    def copy(self) -> Listeners:
        """A copy to fold a batch into, kept only once the batch is published."""
        copied = Listeners()
        copied._endpoints = {i: msgspec.structs.replace(e) for i, e in self._endpoints.items()}
        copied._of_customer = {c: set(ids) for c, ids in self._of_customer.items()}
        return copied

    def fold(self, notification: Notification) -> bool:
        """Takes in an endpoint's event; False (and nothing done) for any other event."""
        topic = notification.topic
        if topic not in ENDPOINT_TOPICS:
            return False
        endpoint_id = notification.originator_id
        assert isinstance(endpoint_id, UUID)
        if topic == ENDPOINT_REGISTERED:
            registered = _registered.decode(notification.state)
            self._endpoints[endpoint_id] = _Endpoint(
                registered.tenant_id, frozenset(registered.events)
            )
            self._of_customer.setdefault(registered.tenant_id, set()).add(endpoint_id)
            return True
        endpoint = self._endpoints.get(endpoint_id)
        if endpoint is None:  # its registration is not in the log (cannot happen)
            return True
        if topic == ENDPOINT_DELETED:
            endpoint.deleted = True
        else:
            endpoint.disabled = topic == ENDPOINT_DISABLED
        if endpoint.deleted:  # for good: forgotten
            del self._endpoints[endpoint_id]
            of_customer = self._of_customer[endpoint.tenant_id]
            of_customer.discard(endpoint_id)
            if not of_customer:
                del self._of_customer[endpoint.tenant_id]
        return True

    def want(self, tenant_id: UUID, event_type: WebhookEventType) -> bool:
        """Whether an active endpoint of this customer wants this type of event."""
        for endpoint_id in self._of_customer.get(tenant_id, ()):
            endpoint = self._endpoints[endpoint_id]
            if event_type in endpoint.events and endpoint_active(
                deleted=endpoint.deleted, disabled=endpoint.disabled
            ):
                return True
        return False


class Relay:
    def __init__(
        self,
        recorder: PostgresApplicationRecorder,
        tracking: PostgresTrackingRecorder,
        js: JetStreamContext,
        *,
        topology: Topology,
        application_name: str,
        conninfo: dict[str, Any],  # psycopg connection parameters (notices.connection_kwargs)
        batch: int = 500,
    ) -> None:
        self.recorder = recorder
        self.tracking = tracking
        self.js = js
        self.topology = topology
        self.application_name = application_name
        self.conninfo = conninfo
        self.batch = batch
        self.published = 0
        self.webhook_topology = WebhookTopology(topology.namespace, topology.replicas)
        self.listeners = Listeners()
        table = sql.Identifier(recorder.datastore.schema, recorder.events_table_name)
        self._endpoint_events_statement = sql.SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state FROM {table}"
            " WHERE notification_id <= %s AND topic = ANY({topics}) ORDER BY notification_id"
        ).format(table=table, topics=topics_literal(ENDPOINT_TOPICS))
        self._first_events_statement = sql.SQL(
            "SELECT originator_id, state FROM {table}"
            " WHERE originator_id = ANY(%s) AND originator_version = 1"
        ).format(table=table)
        self._read_statement = sql.SQL(
            "SELECT head.id AS head, e.notification_id, e.originator_id, e.originator_version,"
            " e.topic, e.state"
            " FROM (SELECT coalesce(max(notification_id), %s) AS id FROM {table}) AS head"
            " LEFT JOIN LATERAL (SELECT * FROM {table}"
            "  WHERE notification_id > %s AND notification_id <= head.id AND topic = ANY(%s)"
            "  ORDER BY notification_id LIMIT %s) AS e ON true"
            " ORDER BY e.notification_id"
        ).format(table=table)

    async def run(self, stop: asyncio.Event) -> None:
        await ensure_stream(self.js, self.topology)
        await ensure_webhook_stream(self.js, self.webhook_topology)
        position = (
            await asyncio.to_thread(self.tracking.max_tracking_id, self.application_name) or 0
        )
        log.info("relay resumes after notification %d", position)
        recorded, recorded_at = position, time.monotonic()
        unavailable = False  # said once when JetStream stops taking jobs, once when it takes them
        # One connection listens and reads, on the event loop: no thread hop for a read
        # (one follows every committed send). A notice that arrives during a read is seen
        # at the next wait, or, at worst, the next poll (QUIET_POLL_SECONDS) reads anyway.
        async with await psycopg.AsyncConnection.connect(
            **self.conninfo, autocommit=True
        ) as listener:
            await listener.execute(
                sql.SQL("LISTEN {}").format(sql.Identifier(self.recorder.channel_name))
            )
            self.listeners = await self._listeners_at(listener, position)
            try:
                while not stop.is_set():
                    notifications, firsts, read_up_to = await self._read(listener, position)
                    if notifications:
                        try:
                            await self._publish(notifications, firsts)
                        except nats.errors.Error as error:
                            # JetStream cannot take them now (a cluster electing a stream's
                            # leader, a connection moving to another node): the same events
                            # are published again shortly, and it drops what it already has.
                            if not unavailable:
                                unavailable = True
                                log.warning(
                                    "JetStream takes no jobs (%s); publishing them again",
                                    type(error).__name__,
                                )
                            with suppress(TimeoutError):
                                await asyncio.wait_for(stop.wait(), UNAVAILABLE_PAUSE_SECONDS)
                            continue  # `listeners` still as at `position`: the batch is read again
                        if unavailable:
                            unavailable = False
                            log.warning("JetStream takes jobs again")
                    position = read_up_to
                    due = recorded_at + TRACKING_SECONDS
                    if position != recorded and (
                        time.monotonic() >= due or position - recorded >= TRACKING_NOTIFICATIONS
                    ):
                        await self._record(position)
                        recorded, recorded_at = position, time.monotonic()
                    if len(notifications) < self.batch:
                        # Caught up: wait for news, but no longer than until the position is due.
                        wait = QUIET_POLL_SECONDS
                        if position != recorded:
                            wait = min(wait, max(0.0, due - time.monotonic()))
                        await self._wait_for_news(listener, wait)
            finally:
                if position != recorded:
                    try:
                        await asyncio.wait_for(self._record(position), LAST_RECORD_SECONDS)
                    except Exception:
                        # A restart republishes from the last recorded position; JetStream
                        # drops the duplicates.
                        log.warning("relay position %d not recorded", position, exc_info=True)

    async def _listeners_at(
        self, connection: psycopg.AsyncConnection[Any], position: int
    ) -> Listeners:
        """Who wants status events as of the log up to `position`: its endpoints' events
        folded in order (a few per endpoint, read once at start)."""
        listeners = Listeners()
        async with connection.cursor(row_factory=dict_row) as cursor:
            await cursor.execute(self._endpoint_events_statement, (position,))
            async for row in cursor:
                listeners.fold(_notification(row))
        return listeners

    async def _read(
        self, connection: psycopg.AsyncConnection[Any], position: int
    ) -> tuple[list[Notification], dict[UUID | str, bytes], int]:
        """The next events after `position` that call for jobs or status events, the first
        events of the aggregates of the status events among them, and how far the log has
        been read. Reading up to the log's head, whatever its events, keeps the position
        close behind it, so no read scans again what an earlier read passed over.
        (Notification ids commit in order: nothing appears below the head.)"""
        async with connection.cursor(row_factory=dict_row) as cursor:
            await cursor.execute(
                self._read_statement, (position, position, list(TOPICS), self.batch), prepare=True
            )
            rows = await cursor.fetchall()
            # A status event needs its customer (in its aggregate's first event) only if some
            # customer has an endpoint, before or among these events.
            told = list({row["originator_id"] for row in rows if row["topic"] in STATUS_TOPICS})
            if not self.listeners and not any(row["topic"] in ENDPOINT_TOPICS for row in rows):
                told = []
            firsts: dict[UUID | str, bytes] = {}  # by originator id, as Notification types it
            if told:
                await cursor.execute(self._first_events_statement, (told,), prepare=True)
                firsts = {
                    row["originator_id"]: bytes(row["state"]) for row in await cursor.fetchall()
                }
        head = rows[0]["head"] if rows else None
        notifications = [_notification(row) for row in rows if row["notification_id"] is not None]
        if len(notifications) == self.batch:
            return notifications, firsts, notifications[-1].id
        return notifications, firsts, max(position, head or 0)

    async def _record(self, position: int) -> None:
        await asyncio.to_thread(
            self.tracking.insert_tracking, Tracking(self.application_name, position)
        )

    async def _publish(
        self, notifications: Sequence[Notification], firsts: dict[UUID | str, bytes]
    ) -> None:
        futures = []
        status_events = []
        # Endpoints' events of this batch are folded into a copy, which replaces the
        # listeners only once the batch is published: a batch that fails is read again
        # from the same position, against the listeners as they were there.
        listeners = self.listeners
        for notification in notifications:
            if notification.topic in ENDPOINT_TOPICS:
                if listeners is self.listeners:
                    listeners = self.listeners.copy()
                listeners.fold(notification)
                continue  # an endpoint's event: it decides for the status events after it
            if listeners and notification.topic in STATUS_TOPICS:
                status_event = status_event_for(
                    notification,
                    firsts.get(notification.originator_id),
                )
                if status_event is not None and listeners.want(
                    status_event.tenant_id, status_event.event_type
                ):
                    status_events.append(status_event)
            for number, job in enumerate(jobs_for(notification)):
                message_id = (
                    f"{notification.originator_id}/{notification.originator_version}/{number}"
                )
                futures.append(
                    await self.js.publish_async(
                        self.topology.subject_of(job),
                        encoder.encode(job),
                        headers={"Nats-Msg-Id": message_id},
                    )
                )
        if futures:
            await published(futures)
            self.published += len(futures)
        if status_events:
            await publish_status_events(self.js, self.webhook_topology, list(status_events))
        self.listeners = listeners

    @staticmethod
    async def _wait_for_news(listener: psycopg.AsyncConnection, timeout: float) -> None:
        # A NOTIFY from an inserting transaction wakes us; the timeout bounds a missed one
        # and lets the loop see a stop request.
        async for _ in listener.notifies(timeout=timeout, stop_after=1):
            break
        # Every insert notifies: one read takes in all that arrived meanwhile.
        async for _ in listener.notifies(timeout=0.0):
            pass


def _notification(row: dict[str, Any]) -> Notification:
    return Notification(
        id=row["notification_id"],
        originator_id=row["originator_id"],
        originator_version=row["originator_version"],
        topic=row["topic"],
        state=bytes(row["state"]),
    )
