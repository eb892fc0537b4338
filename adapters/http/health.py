"""Platform health for the dashboard: how far views and relay trail the log, and the job queue."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import msgspec
from eventsourcing.persistence import ProgrammingError, TrackingRecorder
from eventsourcing.postgres import PostgresApplicationRecorder
from msgspec import Meta
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js.errors import NotFoundError
from psycopg import OperationalError as DatabaseUnreachable
from psycopg_pool import PoolTimeout

from picasse.adapters.nats.jobs import Topology
from picasse.adapters.nats.reconciler import ReconcilerLog
from picasse.adapters.nats.relay import TOPICS as RELAY_TOPICS
from picasse.adapters.postgres.provider_health import ProviderHealth, ProviderHealthTable
from picasse.adapters.postgres.views import ViewFailure, ViewStatusTable, events_after
from picasse.adapters.up_state import ServiceState, read_state
from picasse.domain.application import LOG_NAME
from picasse.domain.clock import Clock

# The relay's lag counts only the events it turns into jobs or status events (RELAY_TOPICS).
NATS_TIMEOUT = 2.0  # seconds; a page waits no longer than this for the queue's state
DATABASE_TIMEOUT = 2.0  # seconds `/health` waits for a pooled connection
DATABASE_OK = "ok"
POOL_EXHAUSTED = "pool exhausted"
DATABASE_DOWN = "unreachable"


class ViewLag(msgspec.Struct, frozen=True):
    name: str
    position: int  # the last log notification the view has taken in
    lag: int  # events for this view still to take in
    stopped: ViewFailure | None = None  # set while the view cannot take an event


class RelayState(msgspec.Struct, frozen=True):
    position: int | None  # None: the relay has never run on this database
    lag: int  # events whose jobs are still to be published


class WorkerState(msgspec.Struct, frozen=True):
    reachable: bool  # False: NATS did not answer, or no worker has ever started
    pending: int = 0  # jobs waiting for a worker
    in_flight: int = 0  # jobs handed to a worker and not yet acknowledged
    waiting_pulls: int = 0  # open fetch requests: roughly the idle workers alive
    problem: str | None = None  # why it is not reachable, in words for an operator


class ReconcilerState(msgspec.Struct, frozen=True):
    """The reconciler's last run (figures only, no personal data); None fields: never ran."""

    last_run: Annotated[datetime | None, Meta(description="when it last ran; null: never")] = None
    checked: Annotated[int, Meta(description="open deliveries it read from the log")] = 0
    overdue: Annotated[int, Meta(description="of those, overdue by the grace period")] = 0
    republished: Annotated[
        int, Meta(description="of those, whose lost jobs it published again")
    ] = 0


class PlatformHealth(msgspec.Struct, frozen=True):
    checked_at: datetime
    log_head: int
    views: list[ViewLag]
    relay: RelayState
    workers: WorkerState
    reconciler: ReconcilerState | None = None  # None: this probe does not watch it
    processes: list[ServiceState] = msgspec.field(default_factory=list)  # from `up`
    providers: list[ProviderHealth] = msgspec.field(default_factory=list)  # as workers publish


class ProcessLiveness(msgspec.Struct, frozen=True, kw_only=True):
    """A service of `up` as anyone may see it: no paths, addresses or exit reasons."""

    name: Annotated[str, Meta(description="the service: api, relay, a worker, a projection…")]
    state: Annotated[str, Meta(description="running or restarting")]
    restarts: Annotated[int, Meta(description="how often `up` has restarted it")]
    last_restart_at: Annotated[
        datetime | None, Meta(description="when it was last restarted; null: never")
    ]


class Liveness(msgspec.Struct, frozen=True, omit_defaults=True):
    """What `/health` answers: whether requests can be served, and `up`'s services."""

    status: Annotated[
        str,
        Meta(
            description="ok; degraded while a view is stopped at an event it cannot take"
            " (still 200); unavailable while the database cannot be used (503)"
        ),
    ]
    database: Annotated[
        str, Meta(description="ok, pool exhausted or unreachable (or: not checked)")
    ]  # DATABASE_OK, POOL_EXHAUSTED or DATABASE_DOWN
    processes: Annotated[
        list[ProcessLiveness], Meta(description="the services `picasse up` runs")
    ] = msgspec.field(default_factory=list)
    stopping: Annotated[
        str | None, Meta(description="set when `up` gave up on a service and stops")
    ] = None
    # Said only while the database can be used:
    stopped_views: Annotated[
        list[ViewFailure], Meta(description="views stopped at an event they cannot take")
    ] = msgspec.field(default_factory=list)  # only when some
    reconciler: Annotated[
        ReconcilerState | None,
        Meta(description="the reconciler's last run, where this server watches it"),
    ] = None


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
        clock: Clock,
        application_name: str = LOG_NAME,
        reconciler: ReconcilerLog | None = None,
        data_dir: Path | None = None,  # where `up` keeps its state file, if under `up`
        providers: ProviderHealthTable | None = None,  # the delivery providers, as published
    ) -> None:
        self.providers = providers
        self.clock = clock
        self.data_dir = data_dir
        self.log = log
        self.views = list(views)
        self.relay = relay
        self.jobs = jobs
        self.application_name = application_name
        self.reconciler = reconciler
        self.view_status = ViewStatusTable(log.datastore)

    async def check(self) -> PlatformHealth:
        positions = asyncio.to_thread(self._positions)
        if self.jobs is None:
            workers = WorkerState(reachable=False, problem="not connected to the message queue")
            head, views, relay = await positions
        else:
            (head, views, relay), workers = await asyncio.gather(positions, self.jobs.state())
        reconciler = await asyncio.to_thread(self.reconciler_state)
        providers = (
            await asyncio.to_thread(self.providers.read, self.clock.now())
            if self.providers is not None
            else []
        )
        return PlatformHealth(
            checked_at=self.clock.now(),
            log_head=head,
            views=views,
            relay=relay,
            workers=workers,
            reconciler=reconciler,
            processes=self._processes(),
            providers=providers,
        )

    def reconciler_state(self) -> ReconcilerState | None:
        """The reconciler's last run, read from the row each run writes."""
        if self.reconciler is None:
            return None
        with self.log.datastore.get_connection() as conn:
            last = self.reconciler.last_run(conn)
        if last is None:
            return ReconcilerState()
        return ReconcilerState(
            last.ran_at.astimezone(UTC), last.checked, last.overdue, last.republished
        )

    async def liveness(self) -> Liveness:
        database = await asyncio.to_thread(self._database)
        state = read_state(self.data_dir) if self.data_dir is not None else None
        stopped: list[ViewFailure] = []
        reconciler = None
        if database == DATABASE_OK:
            # Liveness answers even if these cannot be read; it then says less.
            with contextlib.suppress(Exception):
                stopped = await self.stopped_views()
            with contextlib.suppress(Exception):
                reconciler = await asyncio.to_thread(self.reconciler_state)
        status = "unavailable" if database != DATABASE_OK else "degraded" if stopped else "ok"
        return Liveness(
            status=status,
            database=database,
            processes=[
                ProcessLiveness(
                    name=service.name,
                    state=service.state,
                    restarts=service.restarts,
                    last_restart_at=service.last_restart_at,
                )
                for service in (state.services if state else [])
            ],
            stopping=state.stopping if state else None,
            stopped_views=stopped,
            reconciler=reconciler,
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
        stopped = {failure.view: failure for failure in self.view_status.failures()}
        views = []
        for watched in self.views:
            position = watched.view.max_tracking_id(self.application_name) or 0
            lag = events_after(self.log, position, tuple(watched.topics))
            views.append(ViewLag(watched.name, position, lag, stopped.get(watched.name)))
        return head, views, self._relay_state()

    async def stopped_views(self) -> list[ViewFailure]:
        """The views stopped at an event they cannot take (where, and the error's type)."""
        return await asyncio.to_thread(self.view_status.failures)

    def _relay_state(self) -> RelayState:
        try:
            position = self.relay.max_tracking_id(self.application_name)
        except ProgrammingError:  # its tracking table is made when the relay first starts
            return RelayState(None, events_after(self.log, 0, RELAY_TOPICS))
        return RelayState(position, events_after(self.log, position or 0, RELAY_TOPICS))

    async def close(self) -> None:
        if self.jobs is not None:
            await self.jobs.close()
