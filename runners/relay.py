"""`picasse relay`: publishes delivery jobs from the event log to JetStream, exactly once.

One relay publishes at a time: it plays the role "relay" (an advisory lock). A second
relay stands by and takes over when the first ends or loses its database connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from picasse.adapters.nats.relay import Relay
from picasse.adapters.postgres.notices import connection_kwargs
from picasse.adapters.postgres.roles import RoleClaims, TrackingTable
from picasse.adapters.postgres.store import factory_of, recorder_of
from picasse.runners import servers
from picasse.runners.processes import connect_nats, run_until_signalled
from picasse.runners.settings import Settings
from picasse.runners.wiring import ensure_master_key, job_topology, open_messages

log = logging.getLogger(__name__)
TRACKING_TABLE = "picasse_relay_tracking"
ROLE = "relay"
CLAIM_SECONDS = 1.0  # how often a standing-by relay tries the role, and a holder checks it


def main(settings: Settings) -> int:
    database_url = servers.postgres_url(settings)
    nats_url = servers.nats_url(settings)
    ensure_master_key(settings)
    # The relay reads ids and times only: it needs no listener for destroyed keys.
    messages = open_messages(settings, database_url, opens_sealed_fields=False)
    datastore = factory_of(messages).datastore
    tracking = TrackingTable(datastore, tracking_table_name=TRACKING_TABLE)
    tracking.create_table()
    claims = RoleClaims(connection_kwargs(datastore), datastore.schema)

    async def claimed(stop: asyncio.Event) -> bool:
        """Wait until this process plays the role; False if asked to stop first."""
        standing_by = False
        while not stop.is_set():
            try:
                if await asyncio.to_thread(claims.claim, ROLE):
                    return True
            except Exception as error:  # the database is away: keep trying
                log.warning("cannot claim the relay role (%s)", type(error).__name__)
            if not standing_by:
                log.info("another relay publishes; standing by")
                standing_by = True
            await _wait(stop, CLAIM_SECONDS)
        return False

    async def publish_while_held(stop: asyncio.Event) -> None:
        client = await connect_nats(nats_url, "picasse-relay", tls_ca=settings.nats_tls_ca)
        done = asyncio.Event()  # stop requested, or the role lost

        async def watch() -> None:
            while not done.is_set():
                await _wait(stop, CLAIM_SECONDS)
                try:
                    held = not stop.is_set() and await asyncio.to_thread(claims.holds, ROLE)
                except Exception:  # cannot tell: another relay may have the role now
                    held = False
                if not held:
                    if not stop.is_set():
                        log.warning("lost the relay role; standing by")
                    done.set()

        watcher = asyncio.create_task(watch())
        try:
            relay = Relay(
                recorder_of(messages),
                tracking,
                client.jetstream(),
                topology=job_topology(settings),
                application_name=messages.name,
                conninfo=connection_kwargs(datastore),
            )
            await relay.run(done)
        finally:
            done.set()
            watcher.cancel()
            await client.drain()

    async def work(stop: asyncio.Event) -> None:
        print("relay running", flush=True)
        try:
            while await claimed(stop):
                await publish_while_held(stop)
        finally:
            # Before the loop ends, which waits for its threads: one still waiting for a
            # pooled connection (the position, with the database gone) is let go now.
            messages.close()

    try:
        run_until_signalled(work)
    finally:
        claims.close()
        messages.close()
    return 0


async def _wait(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
