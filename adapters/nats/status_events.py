"""Status events for customers' webhooks on JetStream: ids, statuses and times only.

The relay publishes one `StatusEvent` per delivery outcome, acknowledgement and escalation
that an active endpoint of its customer wants (as of that point in the log; the sender looks
up the endpoints again, to post to those still active); the scheduler's
webhook job publishes a `RetryDue` when a failed post is due again. Both go to a stream of
their own, a work queue that the webhook senders share.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import msgspec
from nats.js import JetStreamContext

from picasse.adapters.nats.jobs import ensure_work_queue, published
from picasse.domain.webhooks import WebhookEventType

# A status event is posted (or its post recorded for retries) within moments; the stream
# keeps what no sender took for two days, never as an archive.
MAX_AGE_SECONDS = 2 * 24 * 3600
DUPLICATE_WINDOW_SECONDS = 15 * 60


class StatusEvent(msgspec.Struct, frozen=True, tag="status", kw_only=True):
    """Something happened to a delivery or an alert; `event_id` is stable across repeats."""

    event_id: str
    event_type: WebhookEventType
    tenant_id: UUID
    message_id: UUID
    occurred_at: datetime
    delivery_id: UUID | None = None
    status: str | None = None
    escalation_level: int | None = None


class RetryDue(msgspec.Struct, frozen=True, tag="retry"):
    """A failed post to an endpoint is due again; `attempts` is how many were made so far."""

    endpoint_id: UUID
    event_id: str
    attempts: int


WebhookJob = StatusEvent | RetryDue
encoder = msgspec.msgpack.Encoder()
decoder = msgspec.msgpack.Decoder(WebhookJob)


class WebhookTopology(msgspec.Struct, frozen=True):
    """Names on the NATS server, namespaced like the delivery jobs' (jobs.Topology)."""

    namespace: str = ""
    replicas: int = 1  # as jobs.Topology's

    @property
    def stream(self) -> str:
        return f"{self.namespace.upper()}_WEBHOOKS" if self.namespace else "WEBHOOKS"

    @property
    def _prefix(self) -> str:
        return f"{self.namespace}.webhooks" if self.namespace else "webhooks"

    @property
    def subjects(self) -> str:
        return f"{self._prefix}.>"

    @property
    def durable(self) -> str:
        return "webhook-senders"

    def subject_of(self, job: WebhookJob) -> str:
        if isinstance(job, StatusEvent):
            return f"{self._prefix}.events.{job.tenant_id}"
        return f"{self._prefix}.retries.{job.endpoint_id}"

    def message_id_of(self, job: WebhookJob) -> str:
        """Nats-Msg-Id: a repeat within the duplicate window is dropped by JetStream."""
        if isinstance(job, StatusEvent):
            return f"status/{job.event_id}"
        return f"retry/{job.endpoint_id}/{job.event_id}/{job.attempts}"


async def ensure_webhook_stream(js: JetStreamContext, topology: WebhookTopology) -> None:
    """Create or update the status events' stream (idempotent; every process may call it)."""
    await ensure_work_queue(
        js,
        topology.stream,
        topology.subjects,
        max_age=MAX_AGE_SECONDS,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
        replicas=topology.replicas,
    )


async def publish(js: JetStreamContext, topology: WebhookTopology, jobs: list[WebhookJob]) -> None:
    futures = [
        await js.publish_async(
            topology.subject_of(job),
            encoder.encode(job),
            headers={"Nats-Msg-Id": topology.message_id_of(job)},
        )
        for job in jobs
    ]
    if futures:
        await published(futures)
