"""What the relay and worker processes share: connecting, and stopping cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import nats
from nats.aio.client import Client


def connection_kwargs(datastore: Any) -> dict[str, Any]:
    """psycopg connection parameters of an eventsourcing datastore (for LISTEN)."""
    kwargs = dict(datastore.pool.kwargs)
    kwargs.pop("row_factory", None)
    return kwargs


async def connect_nats(url: str, name: str) -> Client:
    return await nats.connect(url, name=name, max_reconnect_attempts=-1, connect_timeout=5)


def run_until_signalled(work: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `work(stop)`; SIGTERM or SIGINT sets `stop`, and work finishes what it holds."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await work(stop)

    asyncio.run(main())
