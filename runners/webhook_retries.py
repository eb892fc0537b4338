"""Webhook retries as a periodic job of the one scheduler: failed posts due again by the
platform's clock are published to the senders as `RetryDue` jobs; old records are pruned.

The back-off itself is the domain's (`domain/webhooks.py` `next_attempt_at`): each failed
post's next time is recorded with it, and this job only notices when it has come.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from picasse.adapters.nats.status_events import RetryDue, WebhookTopology, ensure_webhook_stream
from picasse.adapters.nats.status_events import publish as publish_jobs
from picasse.adapters.postgres.webhook_log import WebhookLog, transaction_on
from picasse.runners.processes import connect_nats
from picasse.runners.settings import Settings
from picasse.runners.wiring import webhook_topology

ROLE = "webhook-retries"
EVERY = timedelta(seconds=30)


class WebhookRetryJob:
    """A `PeriodicJob`: each run reads the due posts over a connection of its own and
    publishes over a NATS connection of its own, both closed when the run ends."""

    name = ROLE
    every = EVERY

    def __init__(
        self,
        webhook_log: WebhookLog,
        nats_url: str,
        topology: WebhookTopology,
        *,
        tls_ca: Path | None = None,
    ) -> None:
        self.log = webhook_log
        self.nats_url = nats_url
        self.topology = topology
        self.tls_ca = tls_ca
        self._tables_made = False

    def run(self, now: datetime) -> str:
        if not self._tables_made:
            self.log.create_tables()
            self._tables_made = True
        due = self.log.due(now)
        if due:
            asyncio.run(
                self._publish(
                    [RetryDue(endpoint, event, attempts) for endpoint, event, attempts in due]
                )
            )
        pruned = self.log.prune(now)
        return f"{len(due)} webhook posts due again" + (
            f", {pruned} old ones pruned" if pruned else ""
        )

    async def _publish(self, jobs: list[RetryDue]) -> None:
        client = await connect_nats(self.nats_url, "picasse-webhook-retries", tls_ca=self.tls_ca)
        try:
            js = client.jetstream()
            await ensure_webhook_stream(js, self.topology)
            await publish_jobs(js, self.topology, list(jobs))
        finally:
            await client.close()


def webhook_retry_job(settings: Settings, database_url: str, nats_url: str) -> WebhookRetryJob:
    return WebhookRetryJob(
        WebhookLog(transaction_on(dict(conninfo_to_dict(database_url))), settings.database_schema),
        nats_url,
        webhook_topology(settings),
        tls_ca=settings.nats_tls_ca,
    )
