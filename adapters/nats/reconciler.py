"""The reconciler: republishes the jobs of deliveries the log says are open but the stream lost.

The log is the truth. A delivery is open while its last event is `Queued` or
`RetryScheduled`; once the relay has published its job, that job lives in the stream until
a worker acknowledges it (the stream is a work queue). So an open delivery that is overdue
by a grace period and has no message under its own subject in the stream has lost its job
(the stream was purged or lost, or the job outlived the stream's max age), and gets it again.

It never makes a second live job: it looks the delivery's subject up in the stream before
publishing, and only for deliveries the relay has already passed (the relay's recorded
position), so it never races the relay's first publication. A republished job carries the
Nats-Msg-Id the relay would give it for the delivery's current state, so two publications
of one state within the duplicate window collapse. A worker that meets a job of a settled
delivery acknowledges it and sends nothing.

The log is read from a position (the first delivery still open at the last run), so a run
reads only the deliveries queued since the oldest open one, never the whole history.
Deliveries of a terminated customer are left to termination, which ends them undelivered.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec
import psycopg
from eventsourcing.utils import get_topic
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from psycopg import sql
from psycopg.rows import dict_row

from picasse.adapters.nats.jobs import Deliver, Topology, encoder, ensure_stream
from picasse.domain.customers import Customer
from picasse.domain.messages import Delivery

log = logging.getLogger(__name__)

ROLE = "reconciler"
TABLE = "picasse_reconciler"
QUEUED = get_topic(Delivery.Queued)
RETRY_SCHEDULED = get_topic(Delivery.RetryScheduled)
TERMINATED = get_topic(Customer.Terminated)
OPEN_TOPICS = (QUEUED, RETRY_SCHEDULED)
# Deliveries read from the log per run at most; the next run goes on from there.
BATCH = 10_000


class _Queued(msgspec.Struct):
    timestamp: datetime
    tenant_id: UUID
    channel: str
    not_before: datetime | None


class _Changed(msgspec.Struct):
    timestamp: datetime


_queued = msgspec.msgpack.Decoder(_Queued)
_changed = msgspec.msgpack.Decoder(_Changed)


class OpenDelivery(msgspec.Struct, frozen=True):
    """A delivery whose last event leaves it waiting for an attempt (ids and times only)."""

    delivery_id: UUID
    notification_id: int  # of its Queued event: where the log is read from next time
    version: int  # of its last event
    tenant_id: UUID
    channel: str
    not_before: datetime | None
    since: datetime  # when its last event happened

    def due(self) -> datetime:
        return max(self.since, self.not_before) if self.not_before else self.since

    def message_id(self) -> str:
        """The relay's Nats-Msg-Id for a job of this state (the relay numbers a Queued
        event's one job 0)."""
        return f"{self.delivery_id}/{self.version}/0"


class ReconcilerRun(msgspec.Struct, frozen=True):
    """One run's figures (no personal data): what the health panel shows."""

    ran_at: datetime
    checked: int  # open deliveries read from the log
    overdue: int  # of those, overdue by the grace period (terminated customers left out)
    had_job: int  # of those, still with a job in the stream
    republished: int  # of those, given a job again
    terminated: int = 0  # open deliveries of terminated customers, left to termination
    position: int = 0  # log position the next run reads from
    republished_ids: tuple[UUID, ...] = ()  # not stored: for the one-off command to print

    def summary(self) -> str:
        return (
            f"{self.checked} open deliveries checked, {self.overdue} overdue,"
            f" {self.had_job} still queued in the stream, {self.republished} republished"
            + (f", {self.terminated} of terminated customers left alone" if self.terminated else "")
        )


class ReconcilerLog:
    """The log (and the reconciler's own row) as the reconciler reads and writes them."""

    def __init__(
        self,
        conninfo: dict[str, Any],
        schema: str,
        *,
        events_table: str = "picasse_events",
        relay_tracking_table: str = "picasse_relay_tracking",
        application_name: str = "Picasse",
    ) -> None:
        self.conninfo = {k: v for k, v in conninfo.items() if k != "row_factory"}
        self.schema = schema or "public"
        self.events = sql.Identifier(self.schema, events_table)
        self.relay_tracking = sql.Identifier(self.schema, relay_tracking_table)
        self.table = sql.Identifier(self.schema, TABLE)
        self.application_name = application_name

    def connect(self) -> psycopg.Connection[dict[str, Any]]:
        return psycopg.connect(**self.conninfo, autocommit=True, row_factory=dict_row)

    def create_table(self, conn: psycopg.Connection[dict[str, Any]]) -> None:
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (role text PRIMARY KEY, position bigint NOT NULL,"
                " ran_at timestamptz NOT NULL, checked integer NOT NULL, overdue integer NOT NULL,"
                " had_job integer NOT NULL, republished integer NOT NULL,"
                " terminated integer NOT NULL)"
            ).format(self.table)
        )

    def last_run(self, conn: psycopg.Connection[dict[str, Any]]) -> ReconcilerRun | None:
        try:
            row = conn.execute(
                sql.SQL(
                    "SELECT ran_at, checked, overdue, had_job, republished, terminated, position"
                    " FROM {} WHERE role = %s"
                ).format(self.table),
                (ROLE,),
            ).fetchone()
        except psycopg.errors.UndefinedTable:
            return None
        return ReconcilerRun(**row) if row else None

    def record(self, conn: psycopg.Connection[dict[str, Any]], run: ReconcilerRun) -> None:
        self.create_table(conn)
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (role, position, ran_at, checked, overdue, had_job, republished,"
                " terminated) VALUES (%(role)s, %(position)s, %(ran_at)s, %(checked)s,"
                " %(overdue)s, %(had_job)s, %(republished)s, %(terminated)s)"
                " ON CONFLICT (role) DO UPDATE SET position = EXCLUDED.position,"
                " ran_at = EXCLUDED.ran_at, checked = EXCLUDED.checked,"
                " overdue = EXCLUDED.overdue, had_job = EXCLUDED.had_job,"
                " republished = EXCLUDED.republished, terminated = EXCLUDED.terminated"
            ).format(self.table),
            {
                "role": ROLE,
                **{
                    name: getattr(run, name)
                    for name in ReconcilerRun.__struct_fields__
                    if name != "republished_ids"
                },
            },
        )

    def relay_position(self, conn: psycopg.Connection[dict[str, Any]]) -> int:
        """How far the relay has published: jobs beyond it are still the relay's to publish."""
        try:
            row = conn.execute(
                sql.SQL(
                    "SELECT max(notification_id) AS n FROM {} WHERE application_name = %s"
                ).format(self.relay_tracking),
                (self.application_name,),
            ).fetchone()
        except psycopg.errors.UndefinedTable:  # the relay has never run here
            return 0
        return int(row["n"] or 0) if row else 0

    def open_deliveries(
        self, conn: psycopg.Connection[dict[str, Any]], after: int, up_to: int
    ) -> tuple[list[OpenDelivery], int]:
        """Deliveries queued in (after, up_to] that are still open, and how far that read got."""
        rows = conn.execute(
            sql.SQL(
                "SELECT q.notification_id, q.originator_id, q.state AS queued,"
                " l.originator_version AS version, l.topic, l.state AS last"
                " FROM (SELECT notification_id, originator_id, state FROM {events}"
                "  WHERE notification_id > %s AND notification_id <= %s AND topic = %s"
                "  ORDER BY notification_id LIMIT %s) AS q"
                " CROSS JOIN LATERAL (SELECT originator_version, topic, state FROM {events} AS e"
                "  WHERE e.originator_id = q.originator_id"
                "  ORDER BY originator_version DESC LIMIT 1) AS l"
                " ORDER BY q.notification_id"
            ).format(events=self.events),
            (after, up_to, QUEUED, BATCH),
        ).fetchall()
        read_up_to = rows[-1]["notification_id"] if len(rows) == BATCH else up_to
        found = []
        for row in rows:
            if row["topic"] not in OPEN_TOPICS:
                continue
            queued = _queued.decode(bytes(row["queued"]))
            since = queued.timestamp
            if row["topic"] != QUEUED:
                since = _changed.decode(bytes(row["last"])).timestamp
            found.append(
                OpenDelivery(
                    delivery_id=row["originator_id"],
                    notification_id=row["notification_id"],
                    version=row["version"],
                    tenant_id=queued.tenant_id,
                    channel=queued.channel,
                    not_before=queued.not_before,
                    since=since,
                )
            )
        return found, read_up_to

    def terminated_customers(
        self, conn: psycopg.Connection[dict[str, Any]], tenants: set[UUID]
    ) -> set[UUID]:
        if not tenants:
            return set()
        rows = conn.execute(
            sql.SQL(
                "SELECT DISTINCT originator_id FROM {} WHERE originator_id = ANY(%s) AND topic = %s"
            ).format(self.events),
            (list(tenants), TERMINATED),
        ).fetchall()
        return {row["originator_id"] for row in rows}

    def last_version(self, conn: psycopg.Connection[dict[str, Any]], delivery_id: UUID) -> int:
        row = conn.execute(
            sql.SQL("SELECT max(originator_version) AS v FROM {} WHERE originator_id = %s").format(
                self.events
            ),
            (delivery_id,),
        ).fetchone()
        return int(row["v"] or 0) if row else 0


class Reconciler:
    """Finds open, overdue deliveries without a job in the stream and publishes their jobs."""

    def __init__(
        self, log: ReconcilerLog, js: JetStreamContext, topology: Topology, *, grace: timedelta
    ) -> None:
        self.log = log
        self.js = js
        self.topology = topology
        self.grace = grace

    async def run(self, now: datetime) -> ReconcilerRun:
        await ensure_stream(self.js, self.topology)
        with self.log.connect() as conn:
            last = self.log.last_run(conn)
            after = last.position if last else 0
            up_to = self.log.relay_position(conn)
            found, read_up_to = self.log.open_deliveries(conn, after, up_to)
            terminated = self.log.terminated_customers(conn, {d.tenant_id for d in found})
            # The next run starts at the first delivery still open: everything before it
            # is settled for good.
            position = min((d.notification_id - 1 for d in found), default=read_up_to)
            live = [d for d in found if d.tenant_id not in terminated]
            overdue = [d for d in live if d.due() + self.grace <= now]
            blocked = await self._channels_with_legacy_jobs({d.channel for d in overdue})
            had_job = 0
            republished: list[UUID] = []
            for delivery in overdue:
                if delivery.channel in blocked or await self._has_job(delivery):
                    had_job += 1
                    continue
                # Settled while we looked (its job acknowledged meanwhile)? Then leave it.
                if self.log.last_version(conn, delivery.delivery_id) != delivery.version:
                    continue
                if await self._publish(delivery, now):
                    republished.append(delivery.delivery_id)
                else:
                    had_job += 1
            run = ReconcilerRun(
                ran_at=now,
                checked=len(found),
                overdue=len(overdue),
                had_job=had_job,
                republished=len(republished),
                terminated=len(found) - len(live),
                position=max(position, after),
                republished_ids=tuple(republished),
            )
            self.log.record(conn, run)
        if republished:
            log.warning("reconciler: %s", run.summary())
        return run

    async def _has_job(self, delivery: OpenDelivery) -> bool:
        subject = self.topology.delivery_subject(delivery.channel, delivery.delivery_id)
        try:
            await self.js.get_last_msg(self.topology.stream, subject)
        except NotFoundError:
            return False
        return True

    async def _channels_with_legacy_jobs(self, channels: set[str]) -> set[str]:
        """Channels whose jobs still wait under the old shared subject: their deliveries
        cannot be looked up one by one, so they are left until those jobs are gone."""
        blocked = set()
        for channel in channels:
            try:
                await self.js.get_last_msg(
                    self.topology.stream, self.topology.legacy_subject(channel)
                )
            except NotFoundError:
                continue
            blocked.add(channel)
        if blocked:
            log.warning("reconciler: jobs under the old subjects of %s wait; left alone", blocked)
        return blocked

    async def _publish(self, delivery: OpenDelivery, now: datetime) -> bool:
        """Publishes the delivery's job; False if a job turned up meanwhile."""
        job = Deliver(
            delivery.delivery_id, delivery.tenant_id, delivery.channel, delivery.not_before
        )
        subject = self.topology.subject_of(job)
        data = encoder.encode(job)
        ack = await self.js.publish(
            subject,
            data,
            stream=self.topology.stream,
            headers={"Nats-Msg-Id": delivery.message_id()},
        )
        if not ack.duplicate:
            return True
        # A purge empties the stream but not its memory of message ids: the job published
        # under this id minutes ago is gone, yet a job with its id is refused as a duplicate
        # for the rest of the window. Unless a job turned up meanwhile, publish it under
        # an id of this run.
        if await self._has_job(delivery):
            return False
        await self.js.publish(
            subject,
            data,
            stream=self.topology.stream,
            headers={"Nats-Msg-Id": f"{delivery.message_id()}/reconciled/{now.isoformat()}"},
        )
        return True
