"""`picasse relay`: publishes delivery jobs from the event log to JetStream, exactly once."""

from __future__ import annotations

import asyncio
import logging

from eventsourcing.postgres import PostgresTrackingRecorder

from picasse.adapters.nats.jobs import Topology
from picasse.adapters.nats.relay import Relay
from picasse.runners import servers
from picasse.runners.processes import connect_nats, connection_kwargs, run_until_signalled
from picasse.runners.settings import Settings
from picasse.runners.wiring import ensure_master_key, open_messages

log = logging.getLogger(__name__)
TRACKING_TABLE = "picasse_relay_tracking"


def main(settings: Settings) -> int:
    database_url = servers.postgres_url(settings)
    nats_url = servers.nats_url(settings)
    ensure_master_key(settings)
    messages = open_messages(settings, database_url)
    datastore = messages.factory.datastore  # type: ignore[attr-defined]
    tracking = PostgresTrackingRecorder(datastore, tracking_table_name=TRACKING_TABLE)
    tracking.create_table()

    async def work(stop: asyncio.Event) -> None:
        client = await connect_nats(nats_url, "picasse-relay")
        try:
            relay = Relay(
                messages.recorder,  # type: ignore[arg-type]
                tracking,
                client.jetstream(),
                topology=Topology(settings.nats_namespace),
                application_name=messages.name,
                conninfo=connection_kwargs(datastore),
            )
            print("relay running", flush=True)
            await relay.run(stop)
        finally:
            await client.drain()

    try:
        run_until_signalled(work)
    finally:
        messages.close()
    return 0
