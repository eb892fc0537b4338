"""The relay: follows the event log and publishes one job per queued delivery, exactly once.

Jobs are published with the event's identity as Nats-Msg-Id, then the log position is
recorded; a relay stopped between the two republishes on restart and JetStream drops
the duplicates. The relay reads only plain (unsealed) fields: it holds no keys.
"""

from __future__ import annotations

import asyncio
import logging
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

    async def run(self, stop: asyncio.Event) -> None:
        await ensure_stream(self.js, self.topology)
        position = (
            await asyncio.to_thread(self.tracking.max_tracking_id, self.application_name) or 0
        )
        log.info("relay resumes after notification %d", position)
        async with await psycopg.AsyncConnection.connect(
            **self.conninfo, autocommit=True
        ) as listener:  # type: ignore[arg-type]
            await listener.execute(
                sql.SQL("LISTEN {}").format(sql.Identifier(self.recorder.channel_name))
            )
            while not stop.is_set():
                notifications = await asyncio.to_thread(
                    self.recorder.select_notifications, position + 1, self.batch
                )
                if notifications:
                    await self._publish(notifications)
                    position = notifications[-1].id
                    await asyncio.to_thread(
                        self.tracking.insert_tracking, Tracking(self.application_name, position)
                    )
                    continue
                await self._wait_for_news(listener)

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
    async def _wait_for_news(listener: psycopg.AsyncConnection) -> None:
        # A NOTIFY from an inserting transaction wakes us; the timeout bounds a missed one
        # and lets the loop see a stop request.
        async for _ in listener.notifies(timeout=0.25, stop_after=1):
            break
