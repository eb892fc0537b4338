"""The webhook sender: takes status events and due retries from JetStream and posts them.

It runs inside each delivery worker process (`picasse worker`), on that process's store
and clock; all of them share one durable pull consumer. A status event is owed to every
active endpoint of its customer that wants its type: each is recorded (`WebhookLog.owe`)
and posted once. A failed post is tried again when the scheduler's webhook job finds it
due on the platform's clock and publishes a `RetryDue`; nothing here waits for time.

Delivery is at least once: a job is acknowledged only after its posts are recorded, so a
sender that dies mid-way has its job back after `ack_wait`, and a post that went out but
was not recorded goes out again (receivers drop repeats by `webhook-id`). An endpoint that
has failed for 24 hours is disabled, its pending posts cancelled, and its customer's
admins are mailed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from typing import Any, TypeVar
from uuid import UUID

import httpx
import msgspec
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from picasse.adapters.nats.jobs import Fetcher
from picasse.adapters.nats.status_events import (
    RetryDue,
    StatusEvent,
    WebhookTopology,
    decoder,
    ensure_webhook_stream,
)
from picasse.adapters.postgres.webhook_log import PostRow, WebhookLog
from picasse.adapters.webhook_posts import Payload, StatusData, post_event
from picasse.domain.clock import Clock
from picasse.domain.webhooks import Subscriber, Webhooks

log = logging.getLogger(__name__)

T = TypeVar("T")

FETCH_TIMEOUT_SECONDS = 0.5  # also how soon an idle sender notices a stop request
BATCH = 16  # jobs in hand at most
ACK_WAIT_SECONDS = 60.0  # more than a batch of posts at their time-out
RETRY_AFTER_ERROR_SECONDS = 5.0  # a job that met an unexpected error (database down) comes back

payload_encoder = msgspec.json.Encoder()


def payload_of(event: StatusEvent) -> bytes:
    return payload_encoder.encode(
        Payload(
            type=event.event_type.value,
            timestamp=event.occurred_at,
            data=StatusData(
                message_id=event.message_id,
                occurred_at=event.occurred_at,
                delivery_id=event.delivery_id,
                status=event.status,
                escalation_level=event.escalation_level,
            ),
        )
    )


# A customer's endpoints that want an event type, looked up once per fetched batch.
SubscribersOf = Callable[[UUID, Any], "asyncio.Future[list[Subscriber]]"]


class WebhookSender:
    def __init__(
        self,
        webhooks: Webhooks,
        webhook_log: WebhookLog,
        js: JetStreamContext,
        *,
        topology: WebhookTopology,
        clock: Clock,
        allow_private: bool,
        endpoint_disabled: Callable[[UUID, UUID], Any],  # (customer, endpoint): tell its admins
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.webhooks = webhooks
        self.log = webhook_log
        self.js = js
        self.topology = topology
        self.clock = clock
        self.allow_private = allow_private
        self.endpoint_disabled = endpoint_disabled
        self._http = http
        self._threads = ThreadPoolExecutor(2, thread_name_prefix="webhooks-db")
        self.posted = 0  # attempts made (tests watch it)

    async def run(self, stop: asyncio.Event) -> None:
        await ensure_webhook_stream(self.js, self.topology)
        await asyncio.get_running_loop().run_in_executor(self._threads, self.log.create_tables)
        subscription = await self.js.pull_subscribe(
            self.topology.subjects,
            durable=self.topology.durable,
            stream=self.topology.stream,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT, ack_wait=ACK_WAIT_SECONDS, max_deliver=-1
            ),
        )
        fetcher = Fetcher(subscription, "webhook sender")
        http = self._http or httpx.AsyncClient(trust_env=False)
        try:
            while not stop.is_set():
                fetched = await fetcher.fetch(BATCH, FETCH_TIMEOUT_SECONDS)
                subscribers = self._looked_up_once()
                await asyncio.gather(*(self._handle(http, msg, subscribers) for msg in fetched))
        finally:
            if self._http is None:
                await http.aclose()
            with suppress(Exception):
                await subscription.unsubscribe()
            self._threads.shutdown(wait=True)

    def _looked_up_once(self) -> SubscribersOf:
        """For one fetched batch: each customer's endpoints for each event type looked up
        once (a fan-out's status events all ask the same)."""
        found: dict[tuple[UUID, Any], asyncio.Future[list[Subscriber]]] = {}

        def subscribers(tenant_id: UUID, event_type: Any) -> asyncio.Future[list[Subscriber]]:
            key = (tenant_id, event_type)
            if key not in found:
                found[key] = asyncio.ensure_future(
                    self._db(self.webhooks.subscribers, tenant_id, event_type)
                )
            return found[key]

        return subscribers

    async def _db(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, lambda: call(*args, **kwargs))

    async def _handle(self, http: httpx.AsyncClient, msg: Msg, subscribers: SubscribersOf) -> None:
        try:
            job = decoder.decode(msg.data)
        except msgspec.DecodeError:
            log.error("undecodable webhook job %s terminated", msg.metadata.sequence.stream)
            await self._settle(msg.term())
            return
        try:
            if isinstance(job, StatusEvent):
                await self._status_event(http, job, subscribers)
            else:
                await self._retry(http, job)
        except Exception as error:
            # The database or a bug: the job comes back; what was recorded stays recorded.
            log.warning(
                "webhook job %s failed (%s); it comes back",
                msg.metadata.sequence.stream,
                type(error).__name__,
            )
            await self._settle(msg.nak(delay=RETRY_AFTER_ERROR_SECONDS))
            return
        await self._settle(msg.ack())

    @staticmethod
    async def _settle(settling: Any) -> None:
        try:
            await settling
        except Exception:  # the connection went: the job comes back after ack_wait anyway
            log.warning("could not settle a webhook job", exc_info=True)

    async def _status_event(
        self, http: httpx.AsyncClient, event: StatusEvent, subscribers_of: SubscribersOf
    ) -> None:
        subscribers = await subscribers_of(event.tenant_id, event.event_type)
        if not subscribers:
            return
        payload = payload_of(event)
        now = self.clock.now()

        async def owe_and_post(subscriber: Subscriber) -> None:
            post = await self._db(
                self.log.owe,
                subscriber.endpoint_id,
                event.event_id,
                tenant_id=event.tenant_id,
                event_type=event.event_type.value,
                payload=payload,
                now=now,
            )
            # Tried before (this job is a repeat): its retries are the scheduler's to time.
            if post.state == "pending" and post.attempts == 0:
                await self._attempt(http, subscriber, post)

        # Side by side: one slow endpoint holds the job up by one time-out, not by one each.
        await asyncio.gather(*(owe_and_post(s) for s in subscribers))

    async def _retry(self, http: httpx.AsyncClient, job: RetryDue) -> None:
        post = await self._db(self.log.post, job.endpoint_id, job.event_id)
        if post is None or post.state != "pending" or post.attempts != job.attempts:
            return  # settled meanwhile, or a repeat of a retry already made
        subscriber = await self._db(self.webhooks.subscriber, job.endpoint_id)
        if subscriber is None:  # deleted or disabled since
            await self._db(self.log.cancel, job.endpoint_id)
            return
        await self._attempt(http, subscriber, post)

    async def _attempt(
        self, http: httpx.AsyncClient, subscriber: Subscriber, post: PostRow
    ) -> None:
        at = self.clock.now()
        result = await post_event(
            http,
            subscriber.url,
            subscriber.secret,
            post.event_id,
            post.payload,
            at=at,
            allow_private=self.allow_private,
        )
        self.posted += 1
        recorded = await self._db(
            self.log.record,
            post,
            attempted_at=at,
            status_code=result.status_code,
            outcome=result.outcome,
            succeeded=result.succeeded,
        )
        if recorded.failing_too_long and recorded.failing_since is not None:
            customer_id = await self._db(
                self.webhooks.disable, subscriber.endpoint_id, recorded.failing_since
            )
            await self._db(self.log.cancel, subscriber.endpoint_id)
            if customer_id is not None:
                log.info(
                    "webhook endpoint %s disabled after failing 24 hours", subscriber.endpoint_id
                )
                await self._db(self.endpoint_disabled, customer_id, subscriber.endpoint_id)
