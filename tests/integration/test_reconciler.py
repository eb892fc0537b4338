"""Lost delivery jobs are rebuilt from the log: the reconciler against real NATS and PostgreSQL,
with the relay and the worker as real processes."""

from __future__ import annotations

import asyncio
import collections
import subprocess
import sys
from datetime import timedelta
from uuid import UUID

import msgspec
import nats
import psycopg
import pytest
from eventsourcing.postgres import PostgresTrackingRecorder
from psycopg.conninfo import conninfo_to_dict

from picasse.adapters.clock import ManualClock, SystemClock
from picasse.adapters.http.health import HealthProbe, ReconcilerState
from picasse.adapters.nats.jobs import Topology
from picasse.adapters.nats.reconciler import QUEUED, ReconcilerRun
from picasse.adapters.postgres.roles import RoleClaims
from picasse.adapters.postgres.store import factory_of, recorder_of
from picasse.domain.accounts import Accounts
from picasse.domain.messages import FailureReason, delivery_id
from picasse.domain.messaging import Messages, SendRequest
from picasse.runners.reconcile import ReconcileJob, reconcile_job
from picasse.runners.relay import TRACKING_TABLE
from picasse.runners.settings import Settings
from tests.integration import test_delivery_pipeline as pipeline
from tests.integration.platform_processes import Processes, wait_until
from tests.integration.smtp_server import RecordingSmtpServer

GRACE = timedelta(minutes=5)
DELIVERED = pipeline.DELIVERED
_count = pipeline._count
_send_emails = pipeline._send_emails
# The delivery pipeline's fixtures: a customer, an SMTP server, the platform's processes
# (relay, worker) on this test's schema and namespace (Messages is conftest's).
customer = pipeline.customer
gateways = pipeline.gateways
platform = pipeline.platform
smtp = pipeline.smtp


@pytest.fixture
def topology(schema: str) -> Topology:
    return Topology(schema)  # the namespace the platform fixture gives its processes


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(SystemClock().now())


@pytest.fixture
def job(
    settings: Settings, database_url: str, nats_url: str, schema: str, clock: ManualClock
) -> ReconcileJob:
    here = msgspec.structs.replace(settings, database_schema=schema, nats_namespace=schema)
    return reconcile_job(here, database_url, nats_url, grace=GRACE)


async def _jetstream(nats_url: str, call: str, topology: Topology) -> int:
    client = await nats.connect(nats_url)
    try:
        js = client.jetstream()
        if call == "purge":
            await js.purge_stream(topology.stream)
        info = await js.stream_info(topology.stream)
        return int(info.state.messages)
    finally:
        await client.close()


def _jobs_in_stream(nats_url: str, topology: Topology) -> int:
    try:
        return asyncio.run(_jetstream(nats_url, "count", topology))
    except nats.js.errors.NotFoundError:
        return 0


def _purge(nats_url: str, topology: Topology) -> None:
    assert asyncio.run(_jetstream(nats_url, "purge", topology)) == 0


def _relay_has_passed_every_queued_delivery(raw: psycopg.Connection) -> bool:
    row = raw.execute(
        "SELECT (SELECT max(notification_id) FROM picasse_events WHERE topic = %s)"
        " <= (SELECT coalesce(max(notification_id), 0) FROM picasse_relay_tracking)",
        (QUEUED,),
    ).fetchone()
    return bool(row and row[0])


def _relay_published(
    platform: Processes, raw: psycopg.Connection, nats_url: str, topology: Topology, jobs: int
) -> None:
    wait_until(lambda: _jobs_in_stream(nats_url, topology) == jobs, 30, f"{jobs} jobs published")
    wait_until(
        lambda: _relay_has_passed_every_queued_delivery(raw), 30, "the relay's recorded position"
    )


def test_jobs_lost_in_a_purge_are_republished_and_each_delivered_exactly_once(
    platform: Processes,
    messages: Messages,
    customer: UUID,
    smtp: RecordingSmtpServer,
    raw: psycopg.Connection,
    nats_url: str,
    topology: Topology,
    job: ReconcileJob,
    clock: ManualClock,
) -> None:
    platform.start("relay")
    message_ids = _send_emails(messages, customer, 20)
    _relay_published(platform, raw, nats_url, topology, 20)
    _purge(nats_url, topology)

    clock.advance(GRACE + timedelta(minutes=1))
    run = job.reconcile(clock.now())

    assert (run.checked, run.overdue, run.republished) == (20, 20, 20)
    assert set(run.republished_ids) == {delivery_id(m, 0) for m in message_ids}
    assert _jobs_in_stream(nats_url, topology) == 20
    platform.start("worker", "--concurrency", "8")
    wait_until(lambda: _count(raw, DELIVERED) == 20, 60, "20 Delivered events")
    per_delivery = raw.execute(
        "SELECT originator_id, count(*) FROM picasse_events WHERE topic = %s GROUP BY 1",
        (DELIVERED,),
    ).fetchall()
    assert {i for i, _ in per_delivery} == set(run.republished_ids)
    assert {n for _, n in per_delivery} == {1}
    smtp.wait_for(20, timeout=30)
    recipients = collections.Counter(r for m in smtp.received for r in m.rcpt_tos)
    assert len(recipients) == 20 and set(recipients.values()) == {1}


def test_a_delivery_whose_job_is_still_in_the_stream_gets_no_second_job(
    platform: Processes,
    messages: Messages,
    customer: UUID,
    raw: psycopg.Connection,
    nats_url: str,
    topology: Topology,
    job: ReconcileJob,
    clock: ManualClock,
) -> None:
    platform.start("relay")
    _send_emails(messages, customer, 3)
    _relay_published(platform, raw, nats_url, topology, 3)

    clock.advance(GRACE + timedelta(minutes=1))
    first = job.reconcile(clock.now())
    again = job.reconcile(clock.now() + timedelta(minutes=20))  # past the duplicate window

    assert (first.overdue, first.had_job, first.republished) == (3, 3, 0)
    assert (again.overdue, again.had_job, again.republished) == (3, 3, 0)
    assert _jobs_in_stream(nats_url, topology) == 3


def test_deliveries_not_yet_overdue_and_scheduled_sends_are_left_alone(
    platform: Processes,
    messages: Messages,
    customer: UUID,
    raw: psycopg.Connection,
    nats_url: str,
    topology: Topology,
    job: ReconcileJob,
    clock: ManualClock,
) -> None:
    platform.start("relay")
    _send_emails(messages, customer, 2)
    scheduled = messages.send(
        customer,
        SendRequest(
            channel="sms",
            to=["+31612340009"],
            body="Tomorrow's shift",
            schedule_at=clock.now() + timedelta(hours=2),
        ),
    )
    _relay_published(platform, raw, nats_url, topology, 3)
    _purge(nats_url, topology)

    within_grace = job.reconcile(clock.now() + GRACE - timedelta(minutes=1))
    before_the_scheduled_time = job.reconcile(clock.now() + timedelta(hours=1))
    after_it = job.reconcile(clock.now() + timedelta(hours=2) + GRACE + timedelta(minutes=1))

    assert (within_grace.checked, within_grace.overdue, within_grace.republished) == (3, 0, 0)
    assert (before_the_scheduled_time.overdue, before_the_scheduled_time.republished) == (2, 2)
    assert after_it.republished_ids == (delivery_id(scheduled, 0),)
    assert _jobs_in_stream(nats_url, topology) == 3


def test_the_reconcile_command_prints_what_it_republished_and_its_figures_are_kept(
    platform: Processes,
    messages: Messages,
    customer: UUID,
    raw: psycopg.Connection,
    nats_url: str,
    topology: Topology,
    job: ReconcileJob,
) -> None:
    platform.start("relay")
    message_ids = _send_emails(messages, customer, 2)
    _relay_published(platform, raw, nats_url, topology, 2)
    _purge(nats_url, topology)

    done = subprocess.run(
        [sys.executable, "-m", "picasse.runners.cli", "reconcile", "--grace", "0"],
        env=platform.env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    for message_id in message_ids:
        assert f"republished the job of delivery {delivery_id(message_id, 0)}" in done.stdout
    assert "2 republished" in done.stdout
    assert _jobs_in_stream(nats_url, topology) == 2
    with job.log.connect() as conn:
        kept = job.log.last_run(conn)
    assert isinstance(kept, ReconcilerRun)
    assert (kept.checked, kept.republished) == (2, 2)


def test_the_health_probe_shows_the_reconcilers_last_run(
    platform: Processes,
    messages: Messages,
    customer: UUID,
    raw: psycopg.Connection,
    nats_url: str,
    topology: Topology,
    job: ReconcileJob,
    clock: ManualClock,
) -> None:
    probe = HealthProbe(
        log=recorder_of(messages),
        views=[],
        relay=PostgresTrackingRecorder(
            factory_of(messages).datastore,
            tracking_table_name=TRACKING_TABLE,
        ),
        jobs=None,
        reconciler=job.log,
        clock=clock,
    )
    assert probe.reconciler_state() == ReconcilerState()  # never ran: nothing to show
    platform.start("relay")
    _send_emails(messages, customer, 2)
    _relay_published(platform, raw, nats_url, topology, 2)
    _purge(nats_url, topology)
    clock.advance(GRACE + timedelta(minutes=1))
    job.run(clock.now())

    health = asyncio.run(probe.check())

    assert health.reconciler == ReconcilerState(
        last_run=clock.now(), checked=2, overdue=2, republished=2
    )


def test_lost_jobs_of_a_terminated_customer_are_not_republished(
    platform: Processes,
    messages: Messages,
    customer: UUID,
    accounts: Accounts,
    raw: psycopg.Connection,
    nats_url: str,
    topology: Topology,
    job: ReconcileJob,
    clock: ManualClock,
) -> None:
    platform.start("relay")
    _send_emails(messages, customer, 2)
    _relay_published(platform, raw, nats_url, topology, 2)
    _purge(nats_url, topology)
    accounts.terminate_customer(customer)
    clock.advance(GRACE + timedelta(minutes=1))

    run = job.reconcile(clock.now())

    assert (run.checked, run.terminated, run.overdue, run.republished) == (2, 2, 0, 0)
    assert _jobs_in_stream(nats_url, topology) == 0


def test_a_delivery_awaiting_a_retry_whose_job_was_lost_gets_it_again(
    platform: Processes,
    messages: Messages,
    customer: UUID,
    raw: psycopg.Connection,
    nats_url: str,
    topology: Topology,
    job: ReconcileJob,
    clock: ManualClock,
) -> None:
    platform.start("relay")
    (message_id,) = _send_emails(messages, customer, 1)
    _relay_published(platform, raw, nats_url, topology, 1)
    retrying = delivery_id(message_id, 0)
    assert messages.record_temporary_failure(
        retrying, FailureReason.PROVIDER_UNAVAILABLE, max_attempts=5
    )
    _purge(nats_url, topology)
    clock.advance(GRACE + timedelta(minutes=1))

    run = job.reconcile(clock.now())

    assert run.republished_ids == (retrying,)
    assert _jobs_in_stream(nats_url, topology) == 1


def test_the_reconcile_command_refuses_while_another_process_plays_the_reconciler(
    platform: Processes, database_url: str, schema: str
) -> None:
    claims = RoleClaims(dict(conninfo_to_dict(database_url)), schema)
    assert claims.claim("reconciler")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "picasse.runners.cli", "reconcile"],
            env=platform.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        claims.close()

    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "runs under the running platform" in done.stderr
