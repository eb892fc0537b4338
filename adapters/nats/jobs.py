"""Delivery jobs on JetStream: ids and times only, never personal data or content."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import msgspec
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

STREAM = "DELIVERIES"
SUBJECTS = "deliveries.>"
CHECKS_SUBJECT = "deliveries.checks"
# Jobs wait at most as long as a send may be scheduled ahead, plus a margin: the stream
# is a queue, never a second archive of the traffic.
MAX_AGE_SECONDS = 8 * 24 * 3600
DUPLICATE_WINDOW_SECONDS = 15 * 60


class Deliver(msgspec.Struct, frozen=True, tag="deliver"):
    delivery_id: UUID
    tenant_id: UUID
    channel: str
    not_before: datetime | None = None


class CheckAcknowledgements(msgspec.Struct, frozen=True, tag="check-acks"):
    message_id: UUID
    not_before: datetime


Job = Deliver | CheckAcknowledgements

encoder = msgspec.msgpack.Encoder()
decoder = msgspec.msgpack.Decoder(Job)


def subject_of(job: Job) -> str:
    if isinstance(job, Deliver):
        return f"deliveries.{job.channel}"
    return CHECKS_SUBJECT


async def ensure_stream(js: JetStreamContext) -> None:
    """Create or update the jobs stream (idempotent; every process may call it)."""
    config = StreamConfig(
        name=STREAM,
        subjects=[SUBJECTS],
        retention=RetentionPolicy.WORK_QUEUE,  # acknowledged jobs are deleted at once
        storage=StorageType.FILE,
        max_age=MAX_AGE_SECONDS,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
    )
    try:
        await js.stream_info(STREAM)
    except NotFoundError:
        await js.add_stream(config)
    else:
        await js.update_stream(config)
