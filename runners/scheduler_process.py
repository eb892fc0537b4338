"""`picasse scheduler`: the one process that runs the platform's periodic jobs on its clock.

Each job is a role (`RoleClaims`): however many schedulers run, one runs each job. The
clock is `clock_from(settings)`, so a test that moves the test clock's file makes due
jobs run at once, and nobody sleeps for them.
"""

from __future__ import annotations

import asyncio
from contextlib import ExitStack, suppress

from psycopg.conninfo import conninfo_to_dict

from picasse.adapters.postgres.roles import RoleClaims
from picasse.adapters.postgres.store import shredder_of
from picasse.domain.privacy import Privacy
from picasse.domain.visitors import Visitors
from picasse.runners import servers
from picasse.runners.overdue import OverdueJob
from picasse.runners.processes import run_until_signalled
from picasse.runners.reconcile import reconcile_job
from picasse.runners.retention import RetentionJob, VisitorRetentionJob, periods_of
from picasse.runners.scheduler import POLL_SECONDS, PeriodicJob, Scheduler
from picasse.runners.settings import Settings
from picasse.runners.webhook_retries import webhook_retry_job
from picasse.runners.wiring import (
    clock_from,
    ensure_master_key,
    open_messages,
    recording_eraser,
    smsc_id_table,
)


def periodic_jobs(settings: Settings, database_url: str, opened: ExitStack) -> list[PeriodicJob]:
    """Every periodic job of the platform, in one list: a new job is one line here.

    What a job opens is closed by `opened` when the scheduler stops.
    """
    # One store (pool, key store and its listener) for every job: the scheduler's share of
    # the connection budget (`children.CONNECTIONS`) has room for one.
    messages = open_messages(settings, database_url)
    opened.callback(messages.close)
    privacy = Privacy(shredder=shredder_of, sharing=messages)
    return [
        RetentionJob(
            privacy,
            periods_of(settings),
            recording_eraser(settings, privacy),
            smsc_id_table(messages, messages.clock),
        ),
        VisitorRetentionJob(privacy, Visitors(clock=clock_from(settings), sharing=privacy)),
        reconcile_job(settings, database_url, servers.nats_url(settings)),
        webhook_retry_job(settings, database_url, servers.nats_url(settings)),
        OverdueJob(messages),
    ]


def main(settings: Settings) -> int:
    """Run the jobs when due until SIGTERM or SIGINT; one line on stdout once running."""
    clock = clock_from(settings)
    database_url = servers.postgres_url(settings)
    ensure_master_key(settings)
    with ExitStack() as opened:
        jobs = periodic_jobs(settings, database_url, opened)
        claims = RoleClaims(conninfo_to_dict(database_url), settings.database_schema)
        opened.callback(claims.close)
        scheduler = Scheduler(jobs, clock, claims)

        async def work(stop: asyncio.Event) -> None:
            print(f"scheduler running: {', '.join(job.name for job in jobs)}", flush=True)
            while not stop.is_set():
                await asyncio.to_thread(scheduler.run_due)
                with suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), POLL_SECONDS)

        run_until_signalled(work)
    return 0
