"""The delivery pipeline on a three-node NATS JetStream cluster whose streams are replicated
three times: the DELIVERIES stream's leader is killed in the middle of a run, and every
message is still delivered exactly once."""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from uuid import UUID

import psycopg
import pytest

from picasse.adapters.nats.jobs import Topology
from picasse.domain.messages import delivery_id
from picasse.domain.messaging import Messages, SendRequest
from picasse.runners.settings import Settings
from tests.integration import test_delivery_pipeline as pipeline
from tests.integration.nats_cluster import Cluster, nats_cluster
from tests.integration.platform_processes import Processes, platform_env, processes, wait_until
from tests.integration.smtp_server import RecordingSmtpServer

# Kills a server of its own; about half a minute on a busy machine, so started first.
pytestmark = [pytest.mark.own_servers, pytest.mark.slow]

# 2,000 e-mails, as 200 requests to ten recipients each: one delivery job per e-mail, while
# the test's own sending (a transaction per request) stays cheap.
REQUESTS = 200
RECIPIENTS = 10
MESSAGES = REQUESTS * RECIPIENTS
KILL_AT = 400  # e-mails received when the leader is killed
REPLICAS = 3
DELIVERED = "picasse.domain.messages:Delivery.Delivered"
OUTCOMES = (
    DELIVERED,
    "picasse.domain.messages:Delivery.Failed",
    "picasse.domain.messages:Delivery.Undelivered",
)


_count = pipeline._count
smtp = pipeline.smtp  # a real SMTP server, recording what it takes


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with nats_cluster(tmp_path / "nats") as started:
        yield started


@pytest.fixture
def platform(
    settings: Settings,
    database_url: str,
    schema: str,
    cluster: Cluster,
    smtp: RecordingSmtpServer,
    tmp_path: Path,
) -> Iterator[Processes]:
    env = platform_env(
        settings,
        database_url,
        cluster.url,  # every node, as a deployment gives them
        schema,
        PICASSE_NATS_REPLICAS=str(REPLICAS),
        PICASSE_SMTP_URL=smtp.url,
        PICASSE_RATE_PER_CUSTOMER="100000",  # the run is one customer's
    )
    with processes(env, tmp_path / "logs") as group:
        yield group


def test_the_deliveries_stream_loses_its_leader_mid_run_and_each_message_is_delivered_once(
    platform: Processes,
    cluster: Cluster,
    messages: Messages,
    customer: UUID,
    smtp: RecordingSmtpServer,
    raw: psycopg.Connection,
    schema: str,
) -> None:
    stream = Topology(schema).stream
    platform.start("relay")
    platform.start("worker", "--ack-wait", "10")
    platform.start("worker", "--ack-wait", "10")
    assert cluster.stream_leader(stream)[1] == REPLICAS  # as PICASSE_NATS_REPLICAS says
    # The worst case, every run: the leader is the node the relay publishes through, so
    # the relay loses its connection and the stream's leader at once, answers in flight.
    leader = cluster.node_of_client("picasse-relay")
    cluster.make_leader(stream, leader)

    sent: list[UUID] = []
    lock = threading.Lock()

    def send(i: int) -> None:
        to = [f"person{i}-{j}@inbox.example" for j in range(RECIPIENTS)]
        request = SendRequest(channel="email", to=to, body=f"Body {i}", subject="Alert")
        message_id = messages.send(customer, request)
        with lock:
            sent.append(message_id)

    with ThreadPoolExecutor(4) as senders:
        sending = [senders.submit(send, i) for i in range(REQUESTS)]
        smtp.wait_for(KILL_AT, timeout=60)
        cluster.kill(leader)
        received_at_kill = len(smtp.received)
        for future in sending:
            future.result()
    assert received_at_kill < MESSAGES, "the run ended before the kill: nothing was tested"
    wait_until(lambda: _count(raw, DELIVERED) == MESSAGES, 90, "every delivery recorded", 0.5)

    # The stream lives on under another leader...
    assert cluster.stream_leader(stream)[0] != leader
    # ...each recipient got its e-mail once...
    recipients = collections.Counter(r for m in smtp.received for r in m.rcpt_tos)
    assert len(recipients) == MESSAGES and set(recipients.values()) == {1}
    # ...and each delivery of each request has one outcome in the log: Delivered.
    outcomes = raw.execute(
        "SELECT originator_id, count(*), min(topic) FROM picasse_events"
        " WHERE topic = ANY(%s) GROUP BY 1",
        (list(OUTCOMES),),
    ).fetchall()
    assert {ident for ident, _, _ in outcomes} == {
        delivery_id(m, j) for m in sent for j in range(RECIPIENTS)
    }
    assert {(n, topic) for _, n, topic in outcomes} == {(1, DELIVERED)}
