"""The reconciler as a periodic job of the one scheduler, and `picasse reconcile` once."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from picasse.adapters.nats.jobs import Topology
from picasse.adapters.nats.reconciler import ROLE, Reconciler, ReconcilerLog, ReconcilerRun
from picasse.adapters.postgres.roles import RoleClaims
from picasse.runners import servers
from picasse.runners.processes import connect_nats
from picasse.runners.relay import TRACKING_TABLE
from picasse.runners.settings import Settings
from picasse.runners.wiring import clock_from, job_topology

EVERY = timedelta(minutes=1)
EXIT_REFUSED = 1


class ReconcileJob:
    """A `PeriodicJob`: each run reads the log over one connection of its own and talks to
    NATS over a connection of its own, both closed when the run ends."""

    name = ROLE
    every = EVERY

    def __init__(
        self,
        log: ReconcilerLog,
        nats_url: str,
        topology: Topology,
        *,
        grace: timedelta,
        tls_ca: Path | None = None,
    ) -> None:
        self.log = log
        self.nats_url = nats_url
        self.tls_ca = tls_ca
        self.topology = topology
        self.grace = grace

    def run(self, now: datetime) -> str:
        done: ReconcilerRun = self.reconcile(now)
        return done.summary()

    def reconcile(self, now: datetime) -> ReconcilerRun:
        return asyncio.run(self._reconcile(now))

    async def _reconcile(self, now: datetime) -> ReconcilerRun:
        client = await connect_nats(self.nats_url, "picasse-reconciler", tls_ca=self.tls_ca)
        try:
            reconciler = Reconciler(self.log, client.jetstream(), self.topology, grace=self.grace)
            return await reconciler.run(now)
        finally:
            await client.close()


def reconciler_log(settings: Settings, database_url: str) -> ReconcilerLog:
    return ReconcilerLog(
        _conninfo(database_url),
        settings.database_schema,
        relay_tracking_table=TRACKING_TABLE,
    )


def reconcile_job(
    settings: Settings,
    database_url: str,
    nats_url: str,
    *,
    grace: timedelta | None = None,
) -> ReconcileJob:
    """The reconciler as a job of the one scheduler, which hands each run the clock's now."""
    return ReconcileJob(
        reconciler_log(settings, database_url),
        nats_url,
        job_topology(settings),
        grace=grace if grace is not None else timedelta(seconds=settings.reconcile_grace_seconds),
        tls_ca=settings.nats_tls_ca,
    )


class Refused(Exception):
    """The reconciler runs elsewhere (under `picasse up`)."""


def main(settings: Settings, *, grace: float | None = None) -> int:
    """`picasse reconcile`: one run now, unless a running platform plays the role."""
    database_url = servers.postgres_url(settings)
    nats_url = servers.nats_url(settings)
    clock = clock_from(settings)
    job = reconcile_job(
        settings,
        database_url,
        nats_url,
        grace=timedelta(seconds=grace) if grace is not None else None,
    )
    # Keyed as the scheduler keys its roles, so the two never run the reconciler at once.
    claims = RoleClaims(_conninfo(database_url), settings.database_schema)
    try:
        if not claims.claim(ROLE):
            with job.log.connect() as conn:
                last = job.log.last_run(conn)
            when = (
                f" (last run {last.ran_at:%Y-%m-%d %H:%M:%S %Z}: {last.summary()})" if last else ""
            )
            raise Refused(
                "the reconciler runs under the running platform (picasse up) every"
                f" {int(EVERY.total_seconds())} s{when}"
            )
        run = job.reconcile(clock.now())
    finally:
        claims.close()
    for delivery_id in run.republished_ids:
        print(f"republished the job of delivery {delivery_id}")
    print(f"reconciled with a grace of {job.grace.total_seconds():g} s: {run.summary()}")
    return 0


def _conninfo(database_url: str) -> dict[str, Any]:
    return dict(conninfo_to_dict(database_url))
