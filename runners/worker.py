"""`picasse worker`: a delivery worker process; run as many as the load needs.

Each also sends customers' webhooks (`WebhookSender`), on the same store and clock: the
webhooks application, the senders' record and the accounts view (to mail admins when an
endpoint is disabled) all use the messages pool, so the sender costs no connections."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from picasse.adapters.http.acklinks import ack_links_from
from picasse.adapters.master_key import read_master_key
from picasse.adapters.nats.webhook_sender import WebhookSender
from picasse.adapters.nats.worker import Worker, WorkerSettings
from picasse.adapters.postgres.provider_health import ProviderHealthTable
from picasse.adapters.postgres.store import factory_of
from picasse.adapters.postgres.webhook_log import WebhookLog
from picasse.adapters.providers.health import ProviderCounters
from picasse.adapters.providers.smpp import ReceiptSink, SessionReceipts
from picasse.adapters.providers.sms import start_session
from picasse.adapters.webhook_notices import mail_endpoint_disabled
from picasse.domain.errors import Conflict, Forbidden, NotFound
from picasse.domain.messages import FailureReason
from picasse.domain.messaging import Messages
from picasse.domain.webhooks import Webhooks
from picasse.runners import servers
from picasse.runners.processes import connect_nats, run_until_signalled
from picasse.runners.project import view_on_pool_of
from picasse.runners.settings import Settings
from picasse.runners.wiring import (
    close_providers,
    ensure_master_key,
    job_topology,
    open_messages,
    provider_health_table,
    providers_from,
    remember_sending,
    smsc_id_table,
    webhook_topology,
)

log = logging.getLogger(__name__)


def main(settings: Settings, *, concurrency: int = 32, ack_wait: float = 30.0) -> int:
    database_url = servers.postgres_url(settings)
    nats_url = servers.nats_url(settings)
    ensure_master_key(settings)
    # Its share of the connections, less the key listener's.
    pool_size = max(1, min(concurrency, settings.db_connections - 1))
    messages = open_messages(settings, database_url, pool_size=pool_size)
    remember_sending(messages)
    counters = ProviderCounters(messages.clock)
    receipts = SessionReceipts(smsc_id_table(messages, messages.clock), receipt_recorder(messages))
    providers = providers_from(settings, counters, receipts=receipts)
    worker_settings = WorkerSettings(
        max_attempts=settings.max_attempts,
        backoff_seconds=settings.retry_backoff,
        rate_per_customer=settings.rate_per_customer,
        concurrency=concurrency,
        ack_wait_seconds=ack_wait,
    )

    async def work(stop: asyncio.Event) -> None:
        # Bound before any job: receipts of what a worker before this one sent come in.
        start_session(*{id(p): p for p in providers.values()}.values())
        client = await connect_nats(nats_url, "picasse-worker", tls_ca=settings.nats_tls_ca)
        try:
            worker = Worker(
                messages,
                providers,
                client.jetstream(),
                worker_settings,
                topology=job_topology(settings),
                ack_links=ack_links_from(
                    read_master_key(settings.master_key_path), settings.public_url
                ),
            )
            sender = webhook_sender(settings, messages, client.jetstream())
            print("worker running", flush=True)
            health = provider_health_table(messages)
            await asyncio.gather(
                worker.run(stop),
                sender.run(stop),
                publish_provider_health(health, counters, stop),
            )
        finally:
            await close_providers(providers)
            await client.drain()

    try:
        # The jobs in hand get the drain time; a little more to close connections.
        run_until_signalled(work, deadline=settings.drain_seconds + 3)
    finally:
        messages.close()
    return 0


def receipt_recorder(messages: Messages) -> ReceiptSink:
    """Records a receipt an SMPP session received, by the rule of the receipt webhook
    (`Messages.record_receipt`): True once settled; False while the worker has not yet
    recorded the hand-over it answers (or the store is busy), so it is asked again."""

    async def record(
        reference: str, provider: str, provider_reference: str, failure: FailureReason | None
    ) -> bool:
        try:
            delivery_id = UUID(reference)
        except ValueError:
            return True
        try:
            await asyncio.to_thread(
                messages.record_receipt,
                delivery_id,
                failure,
                provider=provider,
                reference=provider_reference,
            )
        except (Conflict, IntegrityError):
            return False
        except (Forbidden, NotFound):
            log.warning("receipt from %s for delivery %s not recorded", provider, delivery_id)
        return True

    return record


def webhook_sender(settings: Settings, messages: Messages, js: Any) -> WebhookSender:
    """The webhook sender of a worker process, on its messages pool and clock."""
    datastore = factory_of(messages).datastore
    accounts_view = view_on_pool_of(messages, "accounts")
    return WebhookSender(
        Webhooks(clock=messages.clock, sharing=messages),
        WebhookLog(lambda: datastore.transaction(commit=True), datastore.schema),
        js,
        topology=webhook_topology(settings),
        clock=messages.clock,
        allow_private=settings.webhooks_allow_private,
        endpoint_disabled=lambda customer_id, endpoint_id: mail_endpoint_disabled(
            messages, accounts_view, customer_id, endpoint_id
        ),
    )


PUBLISH_SECONDS = 10.0  # how often a worker writes its providers' health


async def publish_provider_health(
    table: ProviderHealthTable, counters: ProviderCounters, stop: asyncio.Event
) -> None:
    """Writes this worker's providers' state and counts now, then every PUBLISH_SECONDS
    until stopped (and once more as it stops). A failed write is tried again next time:
    the overview only shows the providers' health a little late."""
    worker = uuid.uuid4().hex  # this process's rows; they age out after it is gone
    while True:
        try:
            await asyncio.to_thread(
                table.publish, worker, counters.snapshots(), counters.clock.now()
            )
        except Exception:
            log.warning("could not publish the providers' health", exc_info=True)
        if stop.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), PUBLISH_SECONDS)
