"""The delivery worker: pulls jobs, opens what it needs in memory, sends, records, then acks.

Any number of worker processes share one durable pull consumer. Each keeps up to
`concurrency` jobs in hand, fetching more as jobs finish. Jobs fetched together start
their attempts together (one load per delivery and per message, nothing written); each
is sent as soon as it is open; outcomes are recorded in batches, each attempt together
with its outcome, one write for every outcome that is ready (more pile up while a write
is under way). A job is acknowledged only after its outcome is recorded, so a worker
killed at any point loses nothing: the job comes back after `ack_wait` and is sent again
under the same reference, and the Delivery aggregate refuses a second `Delivered`.
Temporary failures come back later by NAK with an exponential delay.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar
from uuid import UUID

import msgspec
from eventsourcing.persistence import IntegrityError
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from picasse.adapters.http.acklinks import AckLinks
from picasse.adapters.nats.jobs import (
    CheckAcknowledgements,
    Deliver,
    Fetcher,
    Topology,
    decoder,
    ensure_stream,
)
from picasse.adapters.providers import Delivery, PermanentFailure, Provider, TemporaryFailure
from picasse.adapters.providers.smpp_pdu import segment_count
from picasse.domain.clock import Clock
from picasse.domain.messages import FailureReason
from picasse.domain.messaging import (
    MAX_RECIPIENTS,
    Attempt,
    FailedForGood,
    FailedForNow,
    Messages,
    NothingToSend,
    Outcome,
    Sent,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

FETCH_TIMEOUT_SECONDS = 0.5  # also how soon an idle worker notices a stop request
# Database calls are per batch, not per job: a few threads are enough, and fewer threads
# contend less for the interpreter with the event loop. A fetched batch starts its
# attempts in one call, beside the outcome writes: one read of its deliveries, one of
# their messages and one of their customers. (Started in three parts at once, a batch
# read its message and customer three times, and the worker spent a third more CPU per
# delivery: 640-680 ms against 400-430 for a 1,000-recipient alert.)
DATABASE_THREADS = 4


class WorkerSettings(msgspec.Struct, frozen=True, kw_only=True):
    max_attempts: int = 5
    backoff_seconds: float = 2.0  # first retry after this, doubling each time
    backoff_max_seconds: float = 600.0
    rate_per_customer: float = 100.0  # messages per second per customer, per worker process
    # What a customer may send at once before the rate applies: one message to the most
    # recipients a message may have, so an alert reaches all of them without waiting out
    # the rate (1,000 recipients at 100/s took 10 s); the sustained rate stays the rate.
    burst_per_customer: float = float(MAX_RECIPIENTS)
    concurrency: int = 32  # jobs in hand at most
    ack_wait_seconds: float = 30.0
    # A job that is not yet due comes back at least this often, so a changed clock
    # (or a shortened schedule) is noticed without waiting out a long delay.
    recheck_seconds: float = 60.0


class RateLimiter:
    """A token bucket per customer, so one customer's burst cannot starve the rest: it holds
    `burst` tokens (by default one second's worth) and refills at `rate` a second."""

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        burst: float | None = None,
    ) -> None:
        self.rate = rate
        self.burst = max(1.0, rate if burst is None else burst)
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


@dataclass
class _Finished:
    """One sent attempt waiting for its outcome to be recorded, then its job to be settled."""

    msg: Msg
    attempt: Attempt
    outcome: Outcome
    settled: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


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
        clock: Clock | None = None,
    ) -> None:
        self.messages = messages
        self.providers = providers
        self.js = js
        self.topology = topology
        self.ack_links = ack_links
        self.settings = settings or WorkerSettings()
        self.clock = clock if clock is not None else messages.clock  # one clock per process
        self.limiter = RateLimiter(
            self.settings.rate_per_customer, burst=self.settings.burst_per_customer
        )
        self._threads = ThreadPoolExecutor(DATABASE_THREADS, thread_name_prefix="worker-db")
        self._in_hand = 0
        self._slot_freed = asyncio.Event()
        self._to_record: list[_Finished] = []
        self._outcome_ready = asyncio.Event()
        self.handled = 0
        self.not_yet_due = 0  # jobs looked at and put back until their time (tests watch it)
        self.writes = 0  # outcome writes: fewer than jobs when batching works
        self.batches = 0  # fetched batches with deliveries to start
        self.starts = 0  # start_attempts calls: one per such batch (tests compare them)

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
        fetcher = Fetcher(subscription, "worker")
        recorder = asyncio.create_task(self._record_outcomes())
        batches: set[asyncio.Task[None]] = set()
        try:
            while not stop.is_set():
                free = self.settings.concurrency - self._in_hand
                if free <= 0:
                    self._slot_freed.clear()
                    with suppress(TimeoutError):
                        await asyncio.wait_for(self._slot_freed.wait(), FETCH_TIMEOUT_SECONDS)
                    continue
                fetched = await fetcher.fetch(free, FETCH_TIMEOUT_SECONDS)
                if not fetched:
                    continue
                self._in_hand += len(fetched)
                batch = asyncio.create_task(self._handle_batch(fetched))
                batches.add(batch)
                batch.add_done_callback(batches.discard)
        finally:
            # SIGTERM: what is in hand is finished (sent, recorded, acknowledged) first.
            await asyncio.gather(*batches, return_exceptions=True)
            recorder.cancel()
            with suppress(asyncio.CancelledError):
                await recorder
            await subscription.unsubscribe()
            self._threads.shutdown(wait=True)
            log.info("worker stops: %d jobs handled, %d outcome writes", self.handled, self.writes)

    async def _db(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, lambda: call(*args, **kwargs))

    def _done(self) -> None:
        self._in_hand -= 1
        self.handled += 1
        self._slot_freed.set()

    async def _settle(self, msg: Msg, settle: Callable[[Msg], Any]) -> None:
        """Acks, NAKs or terminates one job; its slot is free afterwards, come what may."""
        try:
            await settle(msg)
        except Exception:
            # The connection went: the job comes back after ack_wait anyway.
            log.warning("could not settle job %s", msg.metadata.sequence.stream, exc_info=True)
        finally:
            self._done()

    async def _handle_batch(self, fetched: Sequence[Msg]) -> None:
        deliveries: list[tuple[Msg, Deliver]] = []
        others: list[asyncio.Future[None]] = []
        for msg in fetched:
            try:
                job = decoder.decode(msg.data)
            except msgspec.DecodeError:
                # Never log the payload; the stream sequence is enough to find it.
                log.error("undecodable job %s terminated", msg.metadata.sequence.stream)
                others.append(asyncio.ensure_future(self._settle(msg, Msg.term)))
                continue
            due = job.not_before
            now = self.clock.now()
            if due is not None and due > now:
                delay = min((due - now).total_seconds(), self.settings.recheck_seconds)
                self.not_yet_due += 1
                others.append(asyncio.ensure_future(self._nak(msg, delay)))
                continue
            if isinstance(job, CheckAcknowledgements):
                others.append(asyncio.ensure_future(self._check_acknowledgements(msg, job)))
                continue
            wait = self.limiter.wait_needed(job.tenant_id)
            if wait > 0:
                others.append(asyncio.ensure_future(self._nak(msg, wait)))
                continue
            deliveries.append((msg, job))
        if deliveries:
            self.batches += 1
            others.append(asyncio.ensure_future(self._deliver(deliveries)))
        await asyncio.gather(*others)

    async def _nak(self, msg: Msg, delay: float) -> None:
        await self._settle(msg, lambda m: m.nak(delay=delay))

    async def _deliver(self, jobs: Sequence[tuple[Msg, Deliver]]) -> None:
        self.starts += 1
        try:
            started = await self._db(
                self.messages.start_attempts, [job.delivery_id for _, job in jobs]
            )
        except Exception:
            # Unexpected (database down, a bug): the jobs come back after a pause.
            log.exception("%d jobs could not start; they will be retried", len(jobs))
            await asyncio.gather(
                *(self._nak(msg, self.settings.backoff_seconds) for msg, _ in jobs)
            )
            return
        sending = []
        for (msg, job), attempt in zip(jobs, started, strict=True):
            if isinstance(attempt, Attempt):
                sending.append(self._send(msg, job, attempt))
            elif attempt is NothingToSend.UNKNOWN:
                log.warning("job for unknown delivery %s terminated", job.delivery_id)
                sending.append(self._settle(msg, Msg.term))
            else:
                sending.append(self._settle(msg, Msg.ack))  # a repeated job, or erased
        await asyncio.gather(*sending)

    async def _send(self, msg: Msg, job: Deliver, attempt: Attempt) -> None:
        """Sends one attempt, then waits until its outcome is recorded and the job settled."""
        opened = attempt.job
        provider = self.providers.get(job.channel)
        outcome: Outcome
        if provider is None:
            outcome = FailedForGood(FailureReason.NO_PROVIDER)
        else:
            body = opened.body
            # A call is acknowledged by keypad, where its provider offers one: a link
            # read out loud helps nobody.
            if (
                opened.needs_acknowledgement
                and self.ack_links is not None
                and opened.channel.value != "voice"
            ):
                body += f"\n\nAcknowledge: {self.ack_links.link(job.delivery_id)}"
            delivery = Delivery(
                reference=str(job.delivery_id),  # the same for every attempt: duplicates collapse
                channel=opened.channel.value,
                to=opened.to,
                body=body,
                subject=opened.subject,
                handed_over_at=self.clock.now(),
                acknowledgeable=opened.needs_acknowledgement,
                qr_code=opened.qr_code,
            )
            try:
                sent = await provider.send(delivery)
            except PermanentFailure as failure:
                outcome = FailedForGood(failure.reason)
            except TemporaryFailure as failure:
                outcome = FailedForNow(failure.reason)
            except Exception as error:
                # A provider's bug: counted as a failed attempt, so it ends after max_attempts.
                # The log names the error's type only: its text (and a traceback's locals)
                # might quote the recipient or the body. The reason is a code.
                log.error(
                    "provider %s failed on job %s: %s",
                    provider.name,
                    job.delivery_id,
                    type(error).__name__,
                )
                outcome = FailedForNow(FailureReason.PROVIDER_ERROR)
            else:
                # What an SMS is billed by, counted now (billing never reads content, R7):
                # the provider's own count where it has one (SMPP), else from the text.
                segments = sent.segments
                if segments is None and opened.channel.value == "sms":
                    segments = segment_count(body)
                outcome = Sent(sent.provider, sent.provider_reference, sent.final, segments)
        finished = _Finished(msg, attempt, outcome)
        self._to_record.append(finished)
        self._outcome_ready.set()
        await finished.settled

    async def _record_outcomes(self) -> None:
        """Records whatever outcomes are ready, in one write, then settles their jobs; those
        that finish meanwhile go in the next write."""
        while True:
            await self._outcome_ready.wait()
            self._outcome_ready.clear()
            batch, self._to_record = self._to_record, []
            if batch:
                await self._record(batch)

    async def _record(self, batch: Sequence[_Finished]) -> None:
        try:
            self.writes += 1
            # Not retried here: it settles conflicts delivery by delivery itself, and the
            # attempts are spent once it has been called.
            again = await self._db(
                self.messages.record_outcomes,
                [(f.attempt, f.outcome) for f in batch],
                max_attempts=self.settings.max_attempts,
            )
            settling = [
                self._nak(f.msg, self.backoff(f.attempt.job.attempt))
                if retry
                else self._settle(f.msg, Msg.ack)
                for f, retry in zip(batch, again, strict=True)
            ]
        except Exception:
            # Unexpected (database down, a bug): each job comes back after a pause. One
            # whose outcome was recorded after all is then found settled and acknowledged;
            # the others are sent again under the same reference.
            log.exception("%d outcomes could not be recorded; will retry", len(batch))
            settling = [self._nak(f.msg, self.settings.backoff_seconds) for f in batch]
        try:
            await asyncio.gather(*settling)
        finally:
            for finished in batch:
                if not finished.settled.done():
                    finished.settled.set_result(None)

    async def _check_acknowledgements(self, msg: Msg, job: CheckAcknowledgements) -> None:
        try:
            await self._retrying(self.messages.escalate_unacknowledged, job.message_id)
        except Exception:
            log.exception("job %s failed; it will be retried", msg.metadata.sequence.stream)
            await self._nak(msg, self.settings.backoff_seconds)
            return
        await self._settle(msg, Msg.ack)

    def backoff(self, attempt: int) -> float:
        return min(
            self.settings.backoff_seconds * 2.0 ** (attempt - 1), self.settings.backoff_max_seconds
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
