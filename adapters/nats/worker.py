"""The delivery worker: pulls jobs, opens what it needs in memory, sends, records, then acks.

Any number of worker processes share one durable pull consumer. A job is acknowledged
only after its outcome is recorded, so a worker killed at any point loses nothing: the
job comes back after `ack_wait`, and the Delivery aggregate refuses a second
`Delivered`. Temporary failures come back later by NAK with an exponential delay.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

import msgspec
from eventsourcing.persistence import IntegrityError
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import FetchTimeoutError

from picasse.adapters.http.acklinks import AckLinks
from picasse.adapters.nats.jobs import (
    CheckAcknowledgements,
    Deliver,
    Topology,
    decoder,
    ensure_stream,
)
from picasse.adapters.providers import Delivery, PermanentFailure, Provider, TemporaryFailure
from picasse.domain.errors import NotFound
from picasse.domain.messaging import Messages

log = logging.getLogger(__name__)

T = TypeVar("T")


class WorkerSettings(msgspec.Struct, frozen=True, kw_only=True):
    max_attempts: int = 5
    backoff_seconds: float = 2.0  # first retry after this, doubling each time
    backoff_max_seconds: float = 600.0
    rate_per_customer: float = 100.0  # messages per second per customer, per worker process
    concurrency: int = 32
    ack_wait_seconds: float = 30.0
    # A job that is not yet due comes back at least this often, so a changed clock
    # (or a shortened schedule) is noticed without waiting out a long delay.
    recheck_seconds: float = 60.0


class RateLimiter:
    """A token bucket per customer, so one customer's burst cannot starve the rest."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1.0, rate)
        self.clock = clock
        self._buckets: dict[UUID, tuple[float, float]] = {}

    def wait_needed(self, customer: UUID) -> float:
        """0 and a token taken if the customer may send now, else seconds to wait."""
        now = self.clock()
        tokens, last = self._buckets.get(customer, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[customer] = (tokens - 1.0, now)
            return 0.0
        self._buckets[customer] = (tokens, now)
        return (1.0 - tokens) / self.rate


class Worker:
    def __init__(
        self,
        messages: Messages,
        providers: Mapping[str, Provider],
        js: JetStreamContext,
        settings: WorkerSettings | None = None,
        *,
        topology: Topology,
        ack_links: AckLinks | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.messages = messages
        self.providers = providers
        self.js = js
        self.topology = topology
        self.ack_links = ack_links
        self.settings = settings or WorkerSettings()
        self.now = now
        self.limiter = RateLimiter(self.settings.rate_per_customer)
        self._threads = ThreadPoolExecutor(
            self.settings.concurrency, thread_name_prefix="worker-db"
        )
        self.handled = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set; jobs in hand are finished before returning."""
        await ensure_stream(self.js, self.topology)
        subscription = await self.js.pull_subscribe(
            self.topology.subjects,
            durable=self.topology.durable,
            stream=self.topology.stream,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=self.settings.ack_wait_seconds,
                max_deliver=-1,  # our own attempt count decides when to give up
                max_ack_pending=self.settings.concurrency * 20,
            ),
        )
        try:
            while not stop.is_set():
                try:
                    batch = await subscription.fetch(self.settings.concurrency, timeout=0.5)
                except (FetchTimeoutError, TimeoutError):
                    continue
                await asyncio.gather(*(self.handle(msg) for msg in batch))
        finally:
            await subscription.unsubscribe()
            self._threads.shutdown(wait=True)

    async def _db(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, lambda: call(*args, **kwargs))

    async def handle(self, msg: Msg) -> None:
        try:
            job = decoder.decode(msg.data)
        except msgspec.DecodeError:
            # Never log the payload; the stream sequence is enough to find it.
            log.error("undecodable job %s terminated", msg.metadata.sequence.stream)
            await msg.term()
            return
        due = job.not_before
        if due is not None and due > self.now():
            await msg.nak(
                delay=min((due - self.now()).total_seconds(), self.settings.recheck_seconds)
            )
            return
        try:
            if isinstance(job, Deliver):
                await self._deliver(msg, job)
            else:
                await self._check_acknowledgements(msg, job)
        except Exception:
            # Unexpected (database down, a bug): the job comes back after a pause.
            log.exception("job %s failed; it will be retried", msg.metadata.sequence.stream)
            await msg.nak(delay=self.settings.backoff_seconds)
        self.handled += 1

    async def _deliver(self, msg: Msg, job: Deliver) -> None:
        wait = self.limiter.wait_needed(job.tenant_id)
        if wait > 0:
            await msg.nak(delay=wait)
            return
        provider = self.providers.get(job.channel)
        try:
            attempt = await self._retrying(self.messages.start_attempt, job.delivery_id)
        except NotFound:
            log.warning("job for unknown delivery %s terminated", job.delivery_id)
            await msg.term()
            return
        if attempt is None:
            await msg.ack()  # already final (a duplicate job), or erased
            return
        if provider is None:
            await self._retrying(
                self.messages.record_permanent_failure,
                job.delivery_id,
                f"no provider configured for {job.channel}",
            )
            await msg.ack()
            return
        body = attempt.body
        if attempt.needs_acknowledgement and self.ack_links is not None:
            body += f"\n\nAcknowledge: {self.ack_links.link(job.delivery_id)}"
        delivery = Delivery(
            reference=str(job.delivery_id),
            channel=attempt.channel.value,
            to=attempt.to,
            body=body,
            subject=attempt.subject,
        )
        try:
            sent = await provider.send(delivery)
        except PermanentFailure as failure:
            await self._retrying(
                self.messages.record_permanent_failure, job.delivery_id, str(failure)
            )
            await msg.ack()
            return
        except TemporaryFailure as failure:
            again = await self._retrying(
                self.messages.record_temporary_failure,
                job.delivery_id,
                str(failure),
                max_attempts=self.settings.max_attempts,
            )
            if again:
                await msg.nak(delay=self.backoff(attempt.attempt))
            else:
                await msg.ack()
            return
        await self._retrying(
            self.messages.record_sent,
            job.delivery_id,
            sent.provider,
            sent.provider_reference,
            final=sent.final,
        )
        await msg.ack()

    async def _check_acknowledgements(self, msg: Msg, job: CheckAcknowledgements) -> None:
        await self._retrying(self.messages.escalate_unacknowledged, job.message_id)
        await msg.ack()

    def backoff(self, attempt: int) -> float:
        return min(
            self.settings.backoff_seconds * 2 ** (attempt - 1), self.settings.backoff_max_seconds
        )

    async def _retrying(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Commands load, decide and save; a concurrent save of the same aggregate wins,
        so reload and decide again."""
        for _ in range(4):
            try:
                return await self._db(call, *args, **kwargs)
            except IntegrityError:
                await asyncio.sleep(0.01)
        return await self._db(call, *args, **kwargs)
