"""The health probe tells how far the views and the relay trail the log, and what the
workers' queue holds, read from the real PostgreSQL and NATS."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import nats
import pytest
from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from nats.js.api import AckPolicy, ConsumerConfig

from picasse.adapters.http.health import (
    HealthProbe,
    JobQueueProbe,
    PlatformHealth,
    WatchedView,
    WorkerState,
)
from picasse.adapters.nats.jobs import Deliver, Topology, encoder, ensure_stream
from picasse.adapters.postgres.store import factory_of, recorder_of
from picasse.adapters.postgres.views import events_after
from picasse.domain.accounts import Accounts
from picasse.domain.application import LOG_NAME
from picasse.domain.messaging import Messages, SendRequest
from picasse.runners.project import VIEWS, view_on_pool_of
from picasse.runners.relay import TRACKING_TABLE
from picasse.runners.settings import Settings
from picasse.runners.wiring import open_messages
from tests.integration.projection_runners import running, statuses


@pytest.fixture
def here(settings: Settings, schema: str) -> Settings:
    return msgspec.structs.replace(settings, database_schema=schema)


@pytest.fixture
def messages(here: Settings, database_url: str) -> Iterator[Messages]:
    app = open_messages(here, database_url)
    yield app
    app.close()


@pytest.fixture
def views(messages: Messages) -> dict[str, Any]:
    """The views as the API opens them (on its messages pool): tables made, nothing projected."""
    return {name: view_on_pool_of(messages, name) for name in VIEWS}


def _send_two(accounts: Accounts, messages: Messages) -> None:
    customer = accounts.register_customer(
        organisation="Probe BV", contact_name="Pia Probe", email="pia@probe.example",
        phone="+31 6 1234 5678", billing_address="Dijk 1, Gouda",
    )  # fmt: skip
    accounts.start_subscription(customer)
    for to in ("a@rcpt.example", "b@rcpt.example"):
        messages.send(customer, SendRequest(channel="email", to=[to], body="Hello"))


def _relay_tracking(messages: Messages) -> PostgresTrackingRecorder:
    datastore = factory_of(messages).datastore
    return PostgresTrackingRecorder(datastore, tracking_table_name=TRACKING_TABLE)


def _probe(messages: Messages, views: dict[str, Any]) -> HealthProbe:
    return HealthProbe(
        log=recorder_of(messages),
        views=[WatchedView(name, view, VIEWS[name][0].topics) for name, view in views.items()],
        relay=_relay_tracking(messages),
        jobs=None,
        clock=messages.clock,
    )


def _check(probe: HealthProbe) -> PlatformHealth:
    return asyncio.run(probe.check())


def test_views_and_a_relay_that_have_not_run_count_every_event_of_theirs_as_lag(
    accounts: Accounts, messages: Messages, views: dict[str, Any]
) -> None:
    _send_two(accounts, messages)
    health = _check(_probe(messages, views))
    assert health.log_head == messages.recorder.max_notification_id()
    lags = {view.name: view.lag for view in health.views}
    assert lags == {
        name: events_after(messages.recorder, 0, VIEWS[name][0].topics) for name in VIEWS
    }
    assert lags["accounts"] == 2 and lags["traffic"] == 4  # registered + subscribed; 2 + 2
    assert health.relay.position is None  # its tracking table is made when it first runs
    assert health.relay.lag == 4  # two requests and two queued deliveries
    assert health.workers == WorkerState(
        reachable=False, problem="not connected to the message queue"
    )


def test_caught_up_views_and_relay_report_no_lag(
    accounts: Accounts,
    messages: Messages,
    views: dict[str, Any],
    here: Settings,
    database_url: str,
) -> None:
    _send_two(accounts, messages)
    with running(here, database_url, list(VIEWS)) as runners:
        deadline = time.monotonic() + 20
        while any(s.lag for s in statuses(runners)):
            assert time.monotonic() < deadline, statuses(runners)
            time.sleep(0.05)
    relay = _relay_tracking(messages)
    relay.create_table()
    head = messages.recorder.max_notification_id()
    assert head is not None
    relay.insert_tracking(Tracking(LOG_NAME, head))
    health = _check(_probe(messages, views))
    assert {view.name: view.lag for view in health.views} == dict.fromkeys(VIEWS, 0)
    assert (health.relay.position, health.relay.lag) == (head, 0)


def test_the_queue_probe_tells_jobs_waiting_jobs_in_hand_and_workers_asking(
    nats_url: str,
) -> None:
    topology = Topology(f"health_{uuid.uuid4().hex[:10]}")

    async def scenario() -> list[WorkerState]:
        client = await nats.connect(nats_url)
        js = client.jetstream()
        probe = JobQueueProbe(lambda: nats.connect(nats_url), topology)
        seen = [await probe.state()]
        try:
            await ensure_stream(js, topology)
            pull = await js.pull_subscribe(
                topology.subjects,
                durable=topology.durable,
                stream=topology.stream,
                config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30),
            )
            for _ in range(3):
                job = Deliver(uuid.uuid4(), uuid.uuid4(), "email")
                await js.publish(topology.subject_of(job), encoder.encode(job))
            seen.append(await probe.state())
            await pull.fetch(1, timeout=2)  # taken, not acknowledged: in hand
            seen.append(await probe.state())
            await pull.fetch(2, timeout=2)
            asking = asyncio.create_task(pull.fetch(1, timeout=5))  # a worker waiting
            # Until the server has the pull request (no sleeping on a guess); it lasts 5 s.
            waiting = await probe.state()
            deadline = time.monotonic() + 4
            while waiting.waiting_pulls == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                waiting = await probe.state()
            seen.append(waiting)
            with pytest.raises(nats.errors.TimeoutError):
                await asking
        finally:
            await probe.close()
            await js.delete_stream(topology.stream)
            await client.close()
        return seen

    absent, queued, taken, waiting = asyncio.run(scenario())
    assert absent == WorkerState(reachable=False, problem="no worker has started yet")
    assert (queued.pending, queued.in_flight, queued.waiting_pulls) == (3, 0, 0)
    assert (taken.pending, taken.in_flight) == (2, 1)
    assert (waiting.pending, waiting.in_flight, waiting.waiting_pulls) == (0, 3, 1)


def test_a_queue_that_does_not_answer_is_reported_within_seconds() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        url = f"nats://127.0.0.1:{unused.getsockname()[1]}"
    probe = JobQueueProbe(
        lambda: nats.connect(
            url, connect_timeout=1, max_reconnect_attempts=0, allow_reconnect=False
        ),
        Topology("nowhere"),
    )
    # Answered, not hung (the bound is a safety limit: the connection is refused at once).
    state = asyncio.run(asyncio.wait_for(probe.state(), 60))
    assert state == WorkerState(reachable=False, problem="the message queue (NATS) does not answer")
