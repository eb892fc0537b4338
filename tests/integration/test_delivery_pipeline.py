"""Request → relay → JetStream → worker → SMTP server / SMS gateway → outcome events, for real."""

from __future__ import annotations

import asyncio
import collections
import re
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID, uuid4

import nats
import psycopg
import pytest

from picasse.adapters.nats.jobs import Deliver, Topology, encoder
from picasse.adapters.nats.worker import WorkerSettings
from picasse.adapters.providers import Delivery as ProviderDelivery
from picasse.adapters.providers import Provider, Sent
from picasse.domain.access import Viewer
from picasse.domain.accounts import Accounts
from picasse.domain.messages import DeliveryStatus, FailureReason, delivery_id
from picasse.domain.messaging import Attempt, Messages, NothingToSend, SendRequest
from picasse.domain.values import Role
from picasse.runners.settings import Settings
from tests.integration.gateway import FakeGateway
from tests.integration.inprocess import relay_and_worker
from tests.integration.platform_processes import (
    Processes,
    delete_streams,
    jetstream_store_dir,
    platform_env,
    processes,
    wait_until,
)
from tests.integration.smtp_server import RecordingSmtpServer

DELIVERED = "picasse.domain.messages:Delivery.Delivered"


@pytest.fixture
def customer(accounts: Accounts) -> UUID:
    customer_id = accounts.register_customer(
        organisation="Acme Alerts", contact_name="Carla Contact", email="carla@acme.example",
        phone="+31 6 5555 0000", billing_address="Kade 1, Delft",
    )  # fmt: skip
    accounts.start_subscription(customer_id)
    return customer_id


@pytest.fixture
def smtp() -> Iterator[RecordingSmtpServer]:
    with RecordingSmtpServer() as server:
        yield server


@pytest.fixture
def gateways() -> Iterator[tuple[FakeGateway, FakeGateway]]:
    with (
        FakeGateway(token="primary-token") as primary,
        FakeGateway(token="failover-token") as failover,
    ):
        yield primary, failover


@pytest.fixture
def platform(
    settings: Settings,
    database_url: str,
    nats_url: str,
    schema: str,
    smtp: RecordingSmtpServer,
    gateways: tuple[FakeGateway, FakeGateway],
    tmp_path: Path,
) -> Iterator[Processes]:
    primary, failover = gateways
    env = platform_env(
        settings,
        database_url,
        nats_url,
        schema,
        PICASSE_SMTP_URL=smtp.url,
        PICASSE_SMS_GATEWAY_URL=primary.url,
        PICASSE_SMS_GATEWAY_TOKEN="primary-token",
        PICASSE_SMS_FAILOVER_URL=failover.url,
        PICASSE_SMS_FAILOVER_TOKEN="failover-token",
        PICASSE_RETRY_BACKOFF="0.2",
        PICASSE_MAX_ATTEMPTS="3",
    )
    with processes(env, tmp_path / "logs") as group:
        yield group
    asyncio.run(delete_streams(nats_url, schema))


def _count(raw: psycopg.Connection, topic: str) -> int:
    row = raw.execute("SELECT count(*) FROM picasse_events WHERE topic = %s", (topic,)).fetchone()
    assert row is not None
    return int(row[0])


def _send_emails(messages: Messages, customer: UUID, count: int) -> list[UUID]:
    return [
        messages.send(
            customer,
            SendRequest(
                channel="email",
                to=[f"person{i}@inbox.example"],
                body=f"Body number {i}",
                subject="Alert",
            ),
        )
        for i in range(count)
    ]


def _statuses(messages: Messages, message_ids: list[UUID]) -> collections.Counter[DeliveryStatus]:
    return collections.Counter(messages.delivery_status(delivery_id(m, 0)) for m in message_ids)


@pytest.mark.slow
def test_two_hundred_emails_arrive_exactly_once_and_are_delivered_in_the_log(
    platform: Processes,
    messages: Messages,
    customer: UUID,
    smtp: RecordingSmtpServer,
    raw: psycopg.Connection,
) -> None:
    platform.start("relay")
    platform.start("worker", "--concurrency", "16")
    message_ids = _send_emails(messages, customer, 200)
    smtp.wait_for(200, timeout=90)
    wait_until(lambda: _count(raw, DELIVERED) == 200, 30, "200 Delivered events")
    recipients = collections.Counter(r for m in smtp.received for r in m.rcpt_tos)
    assert len(recipients) == 200 and set(recipients.values()) == {1}
    assert _statuses(messages, message_ids) == {DeliveryStatus.DELIVERED: 200}
    bodies = {m.message().get_content().strip() for m in smtp.received}
    assert bodies == {f"Body number {i}" for i in range(200)}


@pytest.mark.slow
def test_a_worker_killed_mid_batch_loses_nothing_and_delivers_nothing_twice(
    platform: Processes,
    messages: Messages,
    customer: UUID,
    smtp: RecordingSmtpServer,
    raw: psycopg.Connection,
) -> None:
    platform.start("relay")
    doomed = platform.start("worker", "--concurrency", "16", "--ack-wait", "2")
    message_ids = _send_emails(messages, customer, 200)
    wait_until(lambda: len(smtp.received) >= 40, 60, "the first worker to be busy")
    platform.kill(doomed)
    assert len(smtp.received) < 200, "the batch finished before the kill: nothing was tested"
    platform.start("worker", "--concurrency", "16", "--ack-wait", "2")
    wait_until(lambda: _count(raw, DELIVERED) == 200, 90, "every delivery recorded")
    assert _statuses(messages, message_ids) == {DeliveryStatus.DELIVERED: 200}
    # Exactly one Delivered event per delivery...
    per_delivery = raw.execute(
        "SELECT originator_id, count(*) FROM picasse_events WHERE topic = %s GROUP BY 1",
        (DELIVERED,),
    ).fetchall()
    assert len(per_delivery) == 200 and {n for _, n in per_delivery} == {1}
    # ...and every inbox got its message. A send interrupted by the kill may arrive
    # again, but as the same message (same Message-ID), which mail systems collapse.
    message_ids_seen: dict[str, set[str]] = collections.defaultdict(set)
    for received in smtp.received:
        message_ids_seen[received.rcpt_tos[0]].add(str(received.message()["Message-ID"]))
    assert len(message_ids_seen) == 200
    assert all(len(ids) == 1 for ids in message_ids_seen.values())


def _sms(messages: Messages, customer: UUID, number: str) -> UUID:
    return messages.send(customer, SendRequest(channel="sms", to=[number], body="Gate 4 is open"))


@pytest.mark.slow
def test_gateway_503s_are_retried_and_then_fail_over_to_the_second_gateway(
    platform: Processes,
    messages: Messages,
    customer: UUID,
    gateways: tuple[FakeGateway, FakeGateway],
) -> None:
    primary, failover = gateways
    primary.fail_next(1000, status=503)
    platform.start("relay")
    platform.start("worker")
    message_id = _sms(messages, customer, "+31612340001")
    failover.wait_for(1, timeout=30)
    assert failover.submissions[0].to == "+31612340001"
    wait_until(
        lambda: messages.message(message_id, _support()).deliveries[0].provider == "sms-failover",
        15, "the failover to be recorded",
    )  # fmt: skip


def test_a_hanging_gateway_times_out_and_fails_over(
    platform: Processes,
    messages: Messages,
    customer: UUID,
    gateways: tuple[FakeGateway, FakeGateway],
) -> None:
    primary, failover = gateways
    primary.hang_next(1000)
    platform.start("relay")
    platform.start("worker")
    # 71 characters outside GSM 03.38: UCS-2, two segments, counted by the worker for billing.
    text = "⚡" * 71
    message_id = messages.send(customer, SendRequest(channel="sms", to=["+31612340002"], body=text))
    failover.wait_for(1, timeout=40)
    wait_until(
        lambda: messages.repository.get(delivery_id(message_id, 0)).segments == 2,
        15, "the worker to record the SMS's two segments",
    )  # fmt: skip


def test_a_permanently_refused_number_ends_undelivered_with_the_reason(
    platform: Processes,
    messages: Messages,
    customer: UUID,
    gateways: tuple[FakeGateway, FakeGateway],
) -> None:
    primary, failover = gateways
    primary.refuse("+31612340003")
    platform.start("relay")
    platform.start("worker")
    message_id = _sms(messages, customer, "+31612340003")
    wait_until(
        lambda: messages.delivery_status(delivery_id(message_id, 0)) is DeliveryStatus.UNDELIVERED, 30,
        "the delivery to be given up",
    )  # fmt: skip
    delivery = messages.message(message_id, _support()).deliveries[0]
    assert delivery.reason is FailureReason.INVALID_RECIPIENT  # the gateway's words dropped
    assert failover.submissions == []


def test_both_gateways_down_ends_undelivered_after_the_configured_attempts(
    platform: Processes,
    messages: Messages,
    customer: UUID,
    gateways: tuple[FakeGateway, FakeGateway],
) -> None:
    primary, failover = gateways
    primary.fail_next(1000, status=503)
    failover.fail_next(1000, status=503)
    platform.start("relay")
    platform.start("worker")
    message_id = _sms(messages, customer, "+31612340004")
    wait_until(
        lambda: messages.delivery_status(delivery_id(message_id, 0)) is DeliveryStatus.UNDELIVERED, 30,
        "attempts to run out",
    )  # fmt: skip
    delivery = messages.message(message_id, _support()).deliveries[0]
    assert delivery.attempts == 3 and delivery.reason is FailureReason.MAX_ATTEMPTS


def _support() -> Viewer:
    return Viewer(role=Role.SUPPORT, customer_id=None)


def test_no_recipient_or_body_is_stored_in_plaintext_in_jetstream_or_the_events_table(
    platform: Processes, messages: Messages, customer: UUID, smtp: RecordingSmtpServer,
    raw: psycopg.Connection, nats_url: str, embedded_settings: Settings,
) -> None:  # fmt: skip
    platform.start("relay")
    # No worker yet: the jobs wait in the stream, where we look for plaintext.
    secrets = [f"secretperson{i}@hidden.example" for i in range(5)]
    messages.send(
        customer,
        SendRequest(
            channel="email", to=secrets, body="Confidential body 4711", subject="Top subject 4712"
        ),
    )
    messages.send(
        customer, SendRequest(channel="sms", to=["+31612349876"], body="Confidential sms 4713")
    )
    # Every job published (the relay's position at the log's head), and in the store's files.
    wait_until(lambda: _relay_position(raw) == _head(raw), 30, "the relay to publish every job")
    store = jetstream_store_dir(nats_url, embedded_settings)
    wait_until(lambda: b"deliveries" in _files_under(store), 30, "the jobs in the store's files")
    stored = _files_under(store)
    with raw.cursor().copy("COPY picasse_events TO STDOUT (FORMAT binary)") as copy:
        table = b"".join(bytes(chunk) for chunk in copy)
    needles = [s.encode() for s in secrets] + [
        b"Confidential",
        b"Top subject",
        b"+31612349876",
        b"31612349876",
    ]
    assert [n for n in needles if n in stored] == []
    assert [n for n in needles if n in table] == []
    assert re.search(rb"deliveries", stored), (
        "looked in the wrong place: no jobs found in the store"
    )
    platform.start("worker")
    smtp.wait_for(5, timeout=30)


# The worker's batches and the relay's position, in-process with a provider that accepts at once.

ATTEMPTED = "picasse.domain.messages:Delivery.Attempted"


class InstantProvider:
    """Accepts every delivery at once and notes its reference."""

    name = "instant"

    def __init__(self) -> None:
        self.references: list[str] = []

    async def send(self, delivery: ProviderDelivery) -> Sent:
        self.references.append(delivery.reference)
        return Sent(provider=self.name, final=True)

    async def close(self) -> None:
        pass


def _instant(provider: InstantProvider) -> dict[str, Provider]:
    return {"sms": provider, "email": provider, "voice": provider}


def _transactions(raw: psycopg.Connection, topic: str) -> set[int]:
    rows = raw.execute(
        "SELECT DISTINCT xmin::text FROM picasse_events WHERE topic = %s", (topic,)
    ).fetchall()
    return {int(xmin) for (xmin,) in rows}


def test_a_backlog_is_recorded_in_batches_each_attempt_in_one_write_with_its_outcome(
    messages: Messages, customer: UUID, raw: psycopg.Connection, nats_url: str, schema: str
) -> None:
    message_ids = _send_emails(messages, customer, 60)
    provider = InstantProvider()
    settings = WorkerSettings(concurrency=16)
    with relay_and_worker(
        messages, _instant(provider), nats_url, Topology(schema), settings=settings
    ) as worker:
        wait_until(lambda: _count(raw, DELIVERED) == 60, 30, "60 Delivered events")
    assert sorted(provider.references) == sorted(str(delivery_id(m, 0)) for m in message_ids)
    writes = _transactions(raw, DELIVERED)
    assert len(writes) < 60 and worker.writes == len(writes)
    # Each fetched batch started in one call: its messages and customers read once.
    assert worker.starts == worker.batches < 60
    # Each attempt was written in the same transaction as its outcome, and no other.
    same = raw.execute(
        "SELECT count(*) FROM picasse_events a JOIN picasse_events d USING (originator_id)"
        " WHERE a.topic = %s AND d.topic = %s AND a.xmin = d.xmin",
        (ATTEMPTED, DELIVERED),
    ).fetchone()
    assert same == (60,) and _count(raw, ATTEMPTED) == 60


def test_a_repeated_job_for_a_delivered_message_sends_nothing_and_is_acknowledged(
    messages: Messages, customer: UUID, raw: psycopg.Connection, nats_url: str, schema: str
) -> None:
    (message_id,) = _send_emails(messages, customer, 1)
    ident = delivery_id(message_id, 0)
    provider = InstantProvider()
    topology = Topology(schema)
    with relay_and_worker(
        messages, _instant(provider), nats_url, topology, settings=WorkerSettings()
    ) as worker:
        wait_until(lambda: _count(raw, DELIVERED) == 1, 30, "the delivery")
        handled = worker.handled
        asyncio.run(_publish(nats_url, topology, Deliver(ident, customer, "email"), "again"))
        wait_until(lambda: worker.handled > handled, 30, "the repeated job")
        # Acknowledged: a work queue keeps no job that was acknowledged.
        wait_until(lambda: asyncio.run(_stored(nats_url, topology)) == 0, 5, "the job acked")
    assert provider.references == [str(ident)]
    assert _count(raw, DELIVERED) == 1


async def _publish(nats_url: str, topology: Topology, job: Deliver, message_id: str) -> None:
    client = await nats.connect(nats_url)
    try:
        await client.jetstream().publish(
            topology.subject_of(job), encoder.encode(job), headers={"Nats-Msg-Id": message_id}
        )
    finally:
        await client.close()


async def _stored(nats_url: str, topology: Topology) -> int:
    client = await nats.connect(nats_url)
    try:
        info = await client.jetstream().stream_info(topology.stream)
    finally:
        await client.close()
    return int(info.state.messages)


def test_the_relay_position_follows_the_log_past_events_that_call_for_no_job(
    messages: Messages, customer: UUID, raw: psycopg.Connection, nats_url: str, schema: str
) -> None:
    _send_emails(messages, customer, 5)
    provider = InstantProvider()
    with relay_and_worker(
        messages, _instant(provider), nats_url, Topology(schema), settings=WorkerSettings(),
    ):  # fmt: skip
        wait_until(lambda: _count(raw, DELIVERED) == 5, 30, "the deliveries")
        # The last events are the worker's, which the relay does not read; once the log is
        # quiet its recorded position reaches the log's head all the same.
        wait_until(
            lambda: _relay_position(raw) == _head(raw), 5, "the relay's position at the head"
        )


def _files_under(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in directory.rglob("*") if p.is_file())


def _relay_position(raw: psycopg.Connection) -> int | None:
    row = raw.execute("SELECT max(notification_id) FROM picasse_relay_tracking").fetchone()
    return None if row is None else row[0]


def _head(raw: psycopg.Connection) -> int:
    row = raw.execute("SELECT max(notification_id) FROM picasse_events").fetchone()
    assert row is not None
    return int(row[0])


def test_deliveries_started_together_are_each_opened_once_with_their_own_message(
    messages: Messages, customer: UUID
) -> None:
    sent = [
        messages.send(
            customer, SendRequest(channel="sms", to=[f"+316120000{n:02d}"], body=f"Gate {n}")
        )
        for n in range(3)
    ]
    ids = [delivery_id(message_id, 0) for message_id in sent]
    # One call reads all deliveries, their messages and customers together (three queries).
    started = messages.start_attempts([*ids, ids[0], uuid4()])
    attempts = [a for a in started[:3] if isinstance(a, Attempt)]
    assert [(a.job.to, a.job.body, a.job.attempt) for a in attempts] == [
        (f"+316120000{n:02d}", f"Gate {n}", 1) for n in range(3)
    ]
    assert started[3:] == [NothingToSend.SETTLED, NothingToSend.UNKNOWN]  # repeated, unknown
