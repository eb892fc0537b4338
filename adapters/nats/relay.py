"""The relay: follows the event log and publishes one job per queued delivery, exactly once.

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
from datetime import datetime, timedelta
from uuid import UUID

import msgspec
import psycopg
from eventsourcing.persistence import Notification, Tracking
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresTrackingRecorder
from nats.js import JetStreamContext
from psycopg import sql

from picasse.adapters.nats.jobs import (
    CheckAcknowledgements,
    Deliver,
    Job,
    Topology,
    encoder,
    ensure_stream,
)

log = logging.getLogger(__name__)

QUEUED = "picasse.domain.messages:Delivery.Queued"
REQUESTED = "picasse.domain.messages:Message.Requested"
ESCALATED = "picasse.domain.messages:Message.Escalated"
# The events that call for jobs; the relay never reads the rest of the log.
TOPICS = (QUEUED, REQUESTED, ESCALATED)
# How stale the recorded position may get while jobs are published: what a restart
# republishes (and JetStream drops as duplicates) is at most this much work.
TRACKING_SECONDS = 0.25
TRACKING_NOTIFICATIONS = 1000
QUIET_POLL_SECONDS = 0.25  # bounds a missed NOTIFY, and how soon a stop request is seen


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


_queued = msgspec.msgpack.Decoder(_Queued)
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


class Relay:
    def __init__(
        self,
        recorder: PostgresApplicationRecorder,
        tracking: PostgresTrackingRecorder,
        js: JetStreamContext,
        *,
        topology: Topology,
        application_name: str,
        conninfo: dict[str, object],
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
        table = sql.Identifier(recorder.datastore.schema, recorder.events_table_name)
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
        position = (
            await asyncio.to_thread(self.tracking.max_tracking_id, self.application_name) or 0
        )
        log.info("relay resumes after notification %d", position)
        recorded, recorded_at = position, time.monotonic()
        async with await psycopg.AsyncConnection.connect(
            **self.conninfo, autocommit=True
        ) as listener:  # type: ignore[arg-type]
            await listener.execute(
                sql.SQL("LISTEN {}").format(sql.Identifier(self.recorder.channel_name))
            )
            try:
                while not stop.is_set():
                    notifications, read_up_to = await asyncio.to_thread(self._read, position)
                    if notifications:
                        await self._publish(notifications)
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
                        await self._record(position)
                    except Exception:
                        # A restart republishes from the last recorded position; JetStream
                        # drops the duplicates.
                        log.warning("relay position %d not recorded", position, exc_info=True)

    def _read(self, position: int) -> tuple[list[Notification], int]:
        """The next events after `position` that call for jobs, and how far the log has
        been read, in one round trip. Reading up to the log's head, whatever its events,
        keeps the position close behind it, so no read scans again what an earlier read
        passed over. (Notification ids commit in order: nothing appears below the head.)"""
        with self.recorder.datastore.get_connection() as conn, conn.cursor() as cursor:
            cursor.execute(
                self._read_statement, (position, position, list(TOPICS), self.batch), prepare=True
            )
            rows = cursor.fetchall()
        head = rows[0]["head"] if rows else None
        notifications = [
            Notification(
                id=row["notification_id"],
                originator_id=row["originator_id"],
                originator_version=row["originator_version"],
                topic=row["topic"],
                state=bytes(row["state"]),
            )
            for row in rows
            if row["notification_id"] is not None
        ]
        if len(notifications) == self.batch:
            return notifications, notifications[-1].id
        return notifications, max(position, head or 0)

    async def _record(self, position: int) -> None:
        await asyncio.to_thread(
            self.tracking.insert_tracking, Tracking(self.application_name, position)
        )

    async def _publish(self, notifications: Sequence[Notification]) -> None:
        futures = []
        for notification in notifications:
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
            await asyncio.gather(*futures)
            self.published += len(futures)

    @staticmethod
    async def _wait_for_news(listener: psycopg.AsyncConnection, timeout: float) -> None:
        # A NOTIFY from an inserting transaction wakes us; the timeout bounds a missed one
        # and lets the loop see a stop request.
        async for _ in listener.notifies(timeout=timeout, stop_after=1):
            break
        # Every insert notifies: one read takes in all that arrived meanwhile.
        async for _ in listener.notifies(timeout=0.0):
            pass
