"""The relay publishes a status event to the WEBHOOKS stream only where an active endpoint of
its customer wants it, as the log's order tells: real PostgreSQL and NATS, the relay and a
delivery worker in this process, and no webhook sender (the stream keeps what it gets)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from uuid import UUID

import msgspec
import nats
import psycopg
import pytest
from psycopg import sql

from picasse.adapters.http.app import HttpDeps
from picasse.adapters.nats.jobs import Topology
from picasse.adapters.nats.relay import Relay
from picasse.adapters.nats.status_events import StatusEvent, WebhookTopology, decoder
from picasse.adapters.nats.worker import WorkerSettings
from picasse.adapters.postgres.notices import connection_kwargs
from picasse.adapters.postgres.store import factory_of, recorder_of
from picasse.adapters.providers.maildir import MaildirProvider
from picasse.domain.access import Viewer
from picasse.domain.messages import DeliveryStatus, delivery_id
from picasse.domain.messaging import SendRequest
from picasse.domain.values import Role
from picasse.domain.webhooks import WebhookEventType
from picasse.runners.api import http_deps
from picasse.runners.settings import Settings
from tests.integration.api_server import Tenant, make_tenant, module_settings
from tests.integration.inprocess import relay_and_worker
from tests.integration.plans import plan_nodes
from tests.integration.platform_processes import wait_until

WAIT = 20.0  # seconds of wall time a step may take at most
URL = "https://hooks.example.com/picasse"


@pytest.fixture(scope="module")
def here(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Settings]:
    with module_settings(tmp_path_factory, database_url, "relay-status") as settings:
        yield msgspec.structs.replace(settings, nats_namespace=f"rs{uuid.uuid4().hex[:10]}")


@pytest.fixture(scope="module")
def deps(here: Settings, database_url: str) -> Iterator[HttpDeps]:
    with http_deps(here, database_url) as opened:
        yield opened


@pytest.fixture(scope="module")
def pipeline(
    deps: HttpDeps, here: Settings, nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    provider = MaildirProvider(tmp_path_factory.mktemp("relay-status-maildir"))
    with relay_and_worker(
        deps.messages,
        {"email": provider, "sms": provider, "voice": provider},
        nats_url,
        Topology(here.nats_namespace),
        settings=WorkerSettings(),
    ):
        yield


@pytest.fixture(scope="module")
def marker(deps: HttpDeps) -> Tenant:
    """A customer whose every delivery is told: once its newest one is on the stream, the
    relay has read the log up to there."""
    tenant = make_tenant(deps, "Marker")
    _register(deps, tenant, ["delivery.delivered"])
    return tenant


def _admin(tenant: Tenant) -> Viewer:
    return Viewer(role=Role.CUSTOMER_ADMIN, customer_id=tenant.customer_id, user_id=tenant.admin_id)


def _register(deps: HttpDeps, tenant: Tenant, events: list[str]) -> UUID:
    return deps.webhooks.register(tenant.customer_id, URL, events, by=_admin(tenant)).endpoint.id


def _delivered(deps: HttpDeps, tenant: Tenant) -> UUID:
    """Sends one e-mail and waits until its Delivered is in the log."""
    message_id = deps.messages.send(
        tenant.customer_id,
        SendRequest(channel="email", to=["someone@rcpt.example"], body="Hello", subject="Hi"),
        requested_by=tenant.user_id,
    )
    wait_until(
        lambda: (
            deps.messages.delivery_status(delivery_id(message_id, 0)) is DeliveryStatus.DELIVERED
        ),
        WAIT,
        "the delivery delivered",
    )
    return message_id


def _on_stream(nats_url: str, here: Settings) -> list[StatusEvent]:
    """Every status event the stream holds (no sender takes them here)."""

    async def read() -> list[StatusEvent]:
        client = await nats.connect(nats_url)
        try:
            js = client.jetstream()
            stream = WebhookTopology(here.nats_namespace).stream
            state = (await js.stream_info(stream)).state
            events = []
            for sequence in range(state.first_seq, state.last_seq + 1):
                job = decoder.decode((await js.get_msg(stream, sequence)).data or b"")
                assert isinstance(job, StatusEvent)
                events.append(job)
            return events
        finally:
            await client.close()

    return asyncio.run(read())


def _told(nats_url: str, here: Settings, message_id: UUID) -> bool:
    return any(e.message_id == message_id for e in _on_stream(nats_url, here))


def _read_past(deps: HttpDeps, marker: Tenant, nats_url: str, here: Settings) -> None:
    """Until the relay has read the log up to now: a marker delivery's event is published."""
    sent = _delivered(deps, marker)
    wait_until(lambda: _told(nats_url, here, sent), WAIT, "the marker's status event")


def test_a_customer_without_an_endpoint_gets_no_status_event(
    deps: HttpDeps, here: Settings, nats_url: str, pipeline: None, marker: Tenant
) -> None:
    quiet = make_tenant(deps, "Quiet")
    sent = _delivered(deps, quiet)
    _read_past(deps, marker, nats_url, here)
    assert not any(e.tenant_id == quiet.customer_id for e in _on_stream(nats_url, here))
    assert not _told(nats_url, here, sent)


def test_an_endpoint_hears_of_what_happens_after_it_in_the_log_until_disabled_or_deleted(
    deps: HttpDeps, here: Settings, nats_url: str, pipeline: None, marker: Tenant
) -> None:
    tenant = make_tenant(deps, "Listening")
    before = _delivered(deps, tenant)  # Delivered before the endpoint's registration
    endpoint = _register(deps, tenant, ["delivery.delivered"])
    after = _delivered(deps, tenant)
    wait_until(lambda: _told(nats_url, here, after), WAIT, "the status event after registering")
    (told,) = [e for e in _on_stream(nats_url, here) if e.message_id == after]
    assert told.tenant_id == tenant.customer_id
    assert told.event_type is WebhookEventType.DELIVERY_DELIVERED
    assert not _told(nats_url, here, before)

    # Disabled (it failed for 24 hours): nothing is posted of its disabled time, so the
    # relay publishes nothing for it.
    deps.webhooks.disable(endpoint, failing_since=datetime(2026, 1, 1, tzinfo=UTC))
    while_disabled = _delivered(deps, tenant)
    _read_past(deps, marker, nats_url, here)
    assert not _told(nats_url, here, while_disabled)

    deps.webhooks.enable(endpoint, by=_admin(tenant))
    enabled = _delivered(deps, tenant)
    wait_until(lambda: _told(nats_url, here, enabled), WAIT, "the status event after enabling")

    deps.webhooks.delete(endpoint, by=_admin(tenant))
    deleted = _delivered(deps, tenant)
    _read_past(deps, marker, nats_url, here)
    assert not _told(nats_url, here, deleted)
    assert not _told(nats_url, here, while_disabled)


def test_an_endpoint_hears_only_of_the_event_types_it_wants(
    deps: HttpDeps, here: Settings, nats_url: str, pipeline: None, marker: Tenant
) -> None:
    tenant = make_tenant(deps, "Failures")
    _register(deps, tenant, ["delivery.failed", "alert.escalated"])
    sent = _delivered(deps, tenant)
    _read_past(deps, marker, nats_url, here)
    assert not _told(nats_url, here, sent)


def test_a_relay_starting_knows_the_endpoints_as_of_its_position_in_the_log(
    deps: HttpDeps, here: Settings, database_url: str
) -> None:
    tenant = make_tenant(deps, "Restart")
    relay = _starting_relay(deps, here)
    table = f'"{here.database_schema}"."{recorder_of(deps.messages).events_table_name}"'

    def head() -> int:
        with psycopg.connect(database_url) as conn:
            row = conn.execute(f"SELECT max(notification_id) FROM {table}").fetchone()
            assert row is not None
            return int(row[0])

    before = head()
    endpoint = _register(deps, tenant, ["delivery.failed"])
    registered = head()
    deps.webhooks.disable(endpoint, failing_since=datetime(2026, 1, 1, tzinfo=UTC))
    disabled = head()

    async def want_at(position: int) -> bool:
        async with await psycopg.AsyncConnection.connect(**relay.conninfo) as conn:
            listeners = await relay._listeners_at(conn, position)
        return listeners.want(tenant.customer_id, WebhookEventType.DELIVERY_FAILED)

    assert asyncio.run(want_at(before)) is False
    assert asyncio.run(want_at(registered)) is True
    assert asyncio.run(want_at(disabled)) is False


def test_a_relay_starting_reads_the_endpoints_events_by_their_own_index_not_the_whole_log(
    deps: HttpDeps, here: Settings
) -> None:
    """Its read at start goes through the partial index of the endpoints' events: a few rows
    whatever the log's length. Without the index, or with a condition PostgreSQL cannot
    match to it, the plan scans the log (here: the notification ids' index, filtering each
    row's topic), since sequential and bitmap scans are priced out to make the choice plain."""
    _register(deps, make_tenant(deps, "Plan"), ["delivery.failed"])
    relay = _starting_relay(deps, here)
    with psycopg.connect(**relay.conninfo) as conn:
        conn.execute("SET enable_seqscan = off")
        conn.execute("SET enable_bitmapscan = off")
        statement = sql.SQL("EXPLAIN (FORMAT JSON) ") + relay._endpoint_events_statement
        row = conn.execute(statement, (2**62,)).fetchone()
    assert row is not None
    nodes = [n for n in plan_nodes(row[0]) if "Node Type" in n]
    scans = [n for n in nodes if n["Node Type"].endswith("Scan")]
    index = f"{recorder_of(deps.messages).events_table_name}_endpoint_events"
    assert [(n["Node Type"], n.get("Index Name"), n.get("Filter")) for n in scans] == [
        ("Index Scan", index, None)
    ]
    assert not [n for n in nodes if n["Node Type"] == "Sort"]  # the index gives the order


def _starting_relay(deps: HttpDeps, here: Settings) -> Relay:
    """A relay as it starts, for its read of the endpoints' events: no position, no NATS."""
    return Relay(
        recorder_of(deps.messages),
        None,  # type: ignore[arg-type]  # its position is given here
        None,  # type: ignore[arg-type]  # it publishes nothing here
        topology=Topology(here.nats_namespace),
        application_name="test",
        conninfo=connection_kwargs(factory_of(deps.messages).datastore),
    )
