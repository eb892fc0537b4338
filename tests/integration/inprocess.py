"""Relay and worker inside the test process, for tests that move the worker's clock."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

import nats
from eventsourcing.postgres import PostgresTrackingRecorder
from nats.js.errors import NotFoundError

from picasse.adapters.http.acklinks import AckLinks
from picasse.adapters.nats.jobs import Topology
from picasse.adapters.nats.relay import Relay
from picasse.adapters.nats.status_events import WebhookTopology
from picasse.adapters.nats.worker import Worker, WorkerSettings
from picasse.adapters.postgres.notices import connection_kwargs
from picasse.adapters.postgres.store import factory_of, recorder_of
from picasse.adapters.providers import Provider
from picasse.domain.clock import Clock
from picasse.domain.messaging import Messages


@contextmanager
def relay_and_worker(
    messages: Messages,
    providers: Mapping[str, Provider],
    nats_url: str,
    topology: Topology,
    *,
    settings: WorkerSettings,
    clock: Clock | None = None,  # None: the Messages application's clock
    ack_links: AckLinks | None = None,
    also: Callable[[Any], Any] | None = None,  # given the JetStream context: a thing to .run(stop)
) -> Iterator[Worker]:
    datastore = factory_of(messages).datastore
    tracking = PostgresTrackingRecorder(datastore, tracking_table_name="picasse_relay_tracking")
    tracking.create_table()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    started = threading.Event()
    holder: dict[str, Worker] = {}
    failure: list[BaseException] = []

    async def main() -> None:
        client = await nats.connect(nats_url)
        js = client.jetstream()
        relay = Relay(
            recorder_of(messages),
            tracking,
            js,
            topology=topology,
            application_name=messages.name,
            conninfo=connection_kwargs(datastore),
        )
        worker = Worker(
            messages, providers, js, settings, topology=topology, ack_links=ack_links, clock=clock
        )
        holder["worker"] = worker
        extra = also(js) if also is not None else None
        started.set()
        try:
            await asyncio.gather(
                relay.run(stop), worker.run(stop), *([extra.run(stop)] if extra else [])
            )
        finally:
            try:
                await js.delete_stream(topology.stream)
                with suppress(NotFoundError):  # made by the relay's start
                    await js.delete_stream(WebhookTopology(topology.namespace).stream)
            finally:
                await client.close()

    def run() -> None:
        try:
            loop.run_until_complete(main())
        except BaseException as error:  # surfaced to the test below
            failure.append(error)
            started.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(30)
    if failure:
        raise failure[0]
    try:
        yield holder["worker"]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        if failure:
            raise failure[0]
