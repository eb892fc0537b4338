"""Platform health for the dashboard: how far views and relay trail the log, and the job queue."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from eventsourcing.persistence import ProgrammingError, TrackingRecorder
from eventsourcing.postgres import PostgresApplicationRecorder
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js.errors import NotFoundError
from psycopg import OperationalError as DatabaseUnreachable
from psycopg_pool import PoolTimeout

from picasse.adapters.nats.jobs import Topology
from picasse.adapters.nats.relay import ESCALATED, QUEUED, REQUESTED
from picasse.adapters.postgres.views import events_after
from picasse.adapters.up_state import ServiceState, read_state
from picasse.domain.application import LOG_NAME

# The events the relay turns into jobs: its lag counts only those.
RELAY_TOPICS = (QUEUED, REQUESTED, ESCALATED)
NATS_TIMEOUT = 2.0  # seconds; a page waits no longer than this for the queue's state
DATABASE_TIMEOUT = 2.0  # seconds `/health` waits for a pooled connection
DATABASE_OK = "ok"
POOL_EXHAUSTED = "pool exhausted"
DATABASE_DOWN = "unreachable"


class ViewLag(msgspec.Struct, frozen=True):
    name: str
    position: int  # the last log notification the view has taken in
    lag: int  # events for this view still to take in


class RelayState(msgspec.Struct, frozen=True):
    position: int | None  # None: the relay has never run on this database
    lag: int  # events whose jobs are still to be published


class WorkerState(msgspec.Struct, frozen=True):
    reachable: bool  # False: NATS did not answer, or no worker has ever started
    pending: int = 0  # jobs waiting for a worker
    in_flight: int = 0  # jobs handed to a worker and not yet acknowledged
    waiting_pulls: int = 0  # open fetch requests: roughly the idle workers alive
    problem: str | None = None  # why it is not reachable, in words for an operator


class PlatformHealth(msgspec.Struct, frozen=True):
    checked_at: datetime
    log_head: int
    views: list[ViewLag]
    relay: RelayState
    workers: WorkerState
    processes: list[ServiceState] = msgspec.field(default_factory=list)  # from `up`


class Liveness(msgspec.Struct, frozen=True, omit_defaults=True):
    """What `/health` answers: whether requests can be served, and `up`'s services."""

    status: str  # "ok", or "unavailable" while the database cannot be used
    database: str  # DATABASE_OK, POOL_EXHAUSTED or DATABASE_DOWN
    processes: list[ServiceState] = msgspec.field(default_factory=list)
    stopping: str | None = None  # `up` gave up on a service and stops


@dataclass(frozen=True)
class WatchedView:
    """A view to report on: its tracking recorder and the topics its projection reads."""

    name: str
    view: TrackingRecorder
    topics: Sequence[str]


class JobQueueProbe:
    """Reads the workers' durable consumer on the jobs stream over one lazily opened connection."""

    def __init__(self, connect: Callable[[], Awaitable[Client]], topology: Topology) -> None:
        self._connect = connect
        self.topology = topology
        self._client: Client | None = None
        self._lock = asyncio.Lock()

    async def state(self) -> WorkerState:
        try:
            client = await asyncio.wait_for(self._connected(), NATS_TIMEOUT)
            info = await client.jetstream(timeout=NATS_TIMEOUT).consumer_info(
                self.topology.stream, self.topology.durable
            )
        except NotFoundError:
            return WorkerState(reachable=False, problem="no worker has started yet")
        except (TimeoutError, NatsError, OSError):
            return WorkerState(reachable=False, problem="the message queue (NATS) does not answer")
        return WorkerState(
            reachable=True,
            pending=info.num_pending or 0,
            in_flight=info.num_ack_pending or 0,
            waiting_pulls=info.num_waiting or 0,
        )

    async def _connected(self) -> Client:
        async with self._lock:
            if self._client is None or self._client.is_closed:
                self._client = await self._connect()
            return self._client

    async def close(self) -> None:
        async with self._lock:
            if self._client is not None and not self._client.is_closed:
                await self._client.close()
            self._client = None


class HealthProbe:
    """Gathers what the overview shows about the platform's moving parts; decides nothing."""

    def __init__(
        self,
        *,
        log: PostgresApplicationRecorder,
        views: Sequence[WatchedView],
        relay: TrackingRecorder,
        jobs: JobQueueProbe | None,
        application_name: str = LOG_NAME,
        data_dir: Path | None = None,  # where `up` keeps its state file, if under `up`
    ) -> None:
        self.data_dir = data_dir
        self.log = log
        self.views = list(views)
        self.relay = relay
        self.jobs = jobs
        self.application_name = application_name

    async def check(self) -> PlatformHealth:
        positions = asyncio.to_thread(self._positions)
        if self.jobs is None:
            workers = WorkerState(reachable=False, problem="not connected to the message queue")
            head, views, relay = await positions
        else:
            (head, views, relay), workers = await asyncio.gather(positions, self.jobs.state())
        return PlatformHealth(
            checked_at=datetime.now(UTC),
            log_head=head,
            views=views,
            relay=relay,
            workers=workers,
            processes=self._processes(),
        )

    async def liveness(self) -> Liveness:
        database = await asyncio.to_thread(self._database)
        state = read_state(self.data_dir) if self.data_dir is not None else None
        return Liveness(
            status="ok" if database == DATABASE_OK else "unavailable",
            database=database,
            processes=state.services if state else [],
            stopping=state.stopping if state else None,
        )

    def _processes(self) -> list[ServiceState]:
        state = read_state(self.data_dir) if self.data_dir is not None else None
        return state.services if state else []

    def _database(self) -> str:
        """One short query on the pool every request uses, not waiting long for it."""
        pool = self.log.datastore.pool
        try:
            with pool.connection(timeout=DATABASE_TIMEOUT) as connection:
                connection.execute("SELECT 1")
        except PoolTimeout:
            # Also what a pool says that cannot open a connection at all.
            return POOL_EXHAUSTED if pool.get_stats().get("pool_size", 0) else DATABASE_DOWN
        except DatabaseUnreachable:
            return DATABASE_DOWN
        return DATABASE_OK

    def _positions(self) -> tuple[int, list[ViewLag], RelayState]:
        head = self.log.max_notification_id() or 0
        views = []
        for watched in self.views:
            position = watched.view.max_tracking_id(self.application_name) or 0
            lag = events_after(self.log, position, tuple(watched.topics))
            views.append(ViewLag(watched.name, position, lag))
        return head, views, self._relay_state()

    def _relay_state(self) -> RelayState:
        try:
            position = self.relay.max_tracking_id(self.application_name)
        except ProgrammingError:  # its tracking table is made when the relay first starts
            return RelayState(None, events_after(self.log, 0, RELAY_TOPICS))
        return RelayState(position, events_after(self.log, position or 0, RELAY_TOPICS))

    async def close(self) -> None:
        if self.jobs is not None:
            await self.jobs.close()
