"""What the relay and worker processes share: connecting, and stopping cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from picasse.runners.settings import nats_servers
from picasse.runners.signals import DEFAULT_DEADLINE, stop_requested

if TYPE_CHECKING:
    from nats.aio.client import Client

log = logging.getLogger(__name__)
T = TypeVar("T")


async def connect_nats(url: str, name: str, *, tls_ca: Path | None = None) -> Client:
    """Every platform process's one way onto NATS.

    Credentials travel in the URL (`nats://user:password@host:port`, `nats://token@host`):
    the embedded server's are added by `servers.nats_url`, an external server's are the
    operator's PICASSE_NATS_URL. `tls://` URLs speak TLS, verified against the system's
    CAs or PICASSE_NATS_TLS_CA (`tls_ca`). A comma-separated list names a cluster's nodes:
    the client connects to one and moves to another when that one goes.
    """
    import nats  # here: commands that import this module for the rest need not load it

    options: dict[str, Any] = {}
    if tls_ca is not None:
        options["tls"] = ssl.create_default_context(cafile=str(tls_ca))
    news = _ConnectionNews(name)
    return await nats.connect(
        nats_servers(url),
        name=name,
        max_reconnect_attempts=-1,
        connect_timeout=5,
        error_cb=news.error,
        reconnected_cb=news.reconnected,
        **options,
    )


class _ConnectionNews:
    """Says once that the connection to NATS is in trouble and once that it is back.
    (nats-py's own default prints a traceback at every failed attempt to reconnect.)"""

    def __init__(self, name: str) -> None:
        self.name = name
        self.troubled = False

    async def error(self, error: Exception) -> None:
        if not self.troubled:
            self.troubled = True
            log.warning(
                "%s: NATS connection lost (%s); reconnecting", self.name, type(error).__name__
            )

    async def reconnected(self) -> None:
        if self.troubled:
            self.troubled = False
            log.warning("%s: NATS connection is back", self.name)


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Runs `main` to its end on uvloop: the event loop of every long-running Picasse
    process (the API, relay, workers, scheduler). The API spends most of its CPU in its
    event loop; on uvloop it took about 8 % less per send (bench/messaging.py, quiet
    machine, alternating runs: 1.88-1.98 against 2.10-2.12 ms)."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def run_until_signalled(
    work: Callable[[asyncio.Event], Awaitable[None]], *, deadline: float = DEFAULT_DEADLINE
) -> None:
    """Run `work(stop)`; SIGTERM or SIGINT sets `stop`, and work finishes what it holds
    within `deadline` seconds."""
    with stop_requested(deadline) as request:

        async def main() -> None:
            await work(request.as_event())

        if not request.requested:
            run_loop(main())
