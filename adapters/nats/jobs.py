"""Delivery jobs on JetStream: ids and times only, never personal data or content."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import FetchTimeoutError, NotFoundError

log = logging.getLogger(__name__)

PUBLISH_ANSWER_SECONDS = 5.0  # JetStream answers in milliseconds; silence means a lost answer

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


class Topology(msgspec.Struct, frozen=True):
    """Names on the NATS server. A namespace lets deployments (or test runs) share one."""

    namespace: str = ""
    replicas: int = 1  # copies of the stream on a cluster's nodes (PICASSE_NATS_REPLICAS)

    @property
    def stream(self) -> str:
        return f"{self.namespace.upper()}_DELIVERIES" if self.namespace else "DELIVERIES"

    @property
    def _prefix(self) -> str:
        return f"{self.namespace}.deliveries" if self.namespace else "deliveries"

    @property
    def subjects(self) -> str:
        return f"{self._prefix}.>"

    @property
    def durable(self) -> str:
        return "workers"

    def subject_of(self, job: Job) -> str:
        if isinstance(job, Deliver):
            return self.delivery_subject(job.channel, job.delivery_id)
        return f"{self._prefix}.checks.{job.message_id}"

    def delivery_subject(self, channel: str, delivery_id: UUID) -> str:
        """One subject per delivery, so its job can be looked up directly in the stream
        (a work-queue stream keeps a job until it is acknowledged)."""
        return f"{self._prefix}.{channel}.{delivery_id}"

    def legacy_subject(self, channel: str) -> str:
        """Where jobs went before each delivery had a subject of its own."""
        return f"{self._prefix}.{channel}"


async def ensure_stream(js: JetStreamContext, topology: Topology) -> None:
    """Create or update the jobs stream (idempotent; every process may call it).

    An existing stream takes this config as it is now (subjects included), so a stream
    made by an older version follows the current subjects."""
    await ensure_work_queue(
        js,
        topology.stream,
        topology.subjects,
        max_age=MAX_AGE_SECONDS,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
        replicas=topology.replicas,
    )


async def ensure_work_queue(
    js: JetStreamContext,
    name: str,
    subjects: str,
    *,
    max_age: int,
    duplicate_window: int,
    replicas: int,
) -> None:
    """Create or update a work-queue stream on disk: a message is deleted once acknowledged.

    `replicas` copies live on as many nodes of a cluster; an existing stream is brought to
    that number (JetStream moves a stream's replicas up or down in place). Its consumers
    inherit it."""
    config = StreamConfig(
        name=name,
        subjects=[subjects],
        retention=RetentionPolicy.WORK_QUEUE,  # acknowledged jobs are deleted at once
        storage=StorageType.FILE,
        max_age=max_age,
        duplicate_window=duplicate_window,
        num_replicas=replicas,
    )
    try:
        await js.stream_info(name)
    except NotFoundError:
        await js.add_stream(config)
    else:
        await js.update_stream(config)


async def published(
    answers: Iterable[Awaitable[Any]], timeout: float = PUBLISH_ANSWER_SECONDS
) -> None:
    """Waits for JetStream's answers to `publish_async` calls; raises the first failure
    once every answer is in (so none is left unretrieved).

    nats-py waits for an answer without end, and one can be lost: a node that dies after
    taking the message, a connection that moves to another node. So after `timeout` they
    count as failed (nats.errors.TimeoutError); publishing them again is harmless, since
    JetStream drops a repeated Nats-Msg-Id."""
    try:
        results = await asyncio.wait_for(asyncio.gather(*answers, return_exceptions=True), timeout)
    except TimeoutError:
        raise nats.errors.TimeoutError from None
    for result in results:
        if isinstance(result, BaseException):
            raise result


class Fetcher:
    """Pulls from a durable consumer, riding out the moments JetStream cannot serve.

    A fetch that times out, or that JetStream answers with an error because it cannot serve
    now (a cluster electing a stream's or consumer's leader, the connection moving to
    another node), returns no jobs after a pause; the caller asks again. Says once that
    fetching is in trouble and once that it is back, like the connection's own news."""

    def __init__(self, subscription: JetStreamContext.PullSubscription, name: str) -> None:
        self.subscription = subscription
        self.name = name
        self.troubled = False

    async def fetch(self, batch: int, timeout: float) -> list[Msg]:
        try:
            fetched = await self.subscription.fetch(batch, timeout=timeout)
        except (FetchTimeoutError, TimeoutError):
            return []
        except nats.errors.Error as error:
            if not self.troubled:
                self.troubled = True
                log.warning(
                    "%s: JetStream cannot serve (%s); retrying", self.name, type(error).__name__
                )
            await asyncio.sleep(timeout)
            return []
        if self.troubled:
            self.troubled = False
            log.warning("%s: JetStream serves again", self.name)
        return fetched
