"""One LISTEN connection per process that keeps caches true: every notice on the schema's
channel goes to each cache that listens, and so does every gap (the connection was lost or
made again: a notice may have been missed). A cache trusts what it holds only while
`listening` is set; a process whose listener is down does not cache at all.

Notices are sent in the transaction that makes the change (NOTIFY is delivered at its
commit), so another process hears of it within the time PostgreSQL takes to deliver one.
The process that made the change tells its own caches at once, after the commit (`tell`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

# The payload saying that a key, a user or a customer changed (domain/api_keys.py,
# CALLER_SOURCES); the key store's own payloads name a key, a tenant or an epoch.
CALLERS_CHANGED = "callers"


class Notices:
    def __init__(self, connection_kwargs: dict[str, Any], channel: str) -> None:
        self.channel = channel
        self.listening = threading.Event()
        self._connection_kwargs = connection_kwargs
        self._listeners: list[tuple[Callable[[str], None], Callable[[], None]]] = []
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def subscribe(self, on_notice: Callable[[str], None], on_gap: Callable[[], None]) -> None:
        """`on_notice(payload)` for each notice, `on_gap()` whenever one may have been missed."""
        self._listeners.append((on_notice, on_gap))

    def start(self, wait: float = 10.0) -> None:
        self._thread = threading.Thread(target=self._listen, name="notice-listener", daemon=True)
        self._thread.start()
        self.listening.wait(timeout=wait)

    def tell(self, payload: str) -> None:
        """This process's own change: its caches hear of it now, not when the notice arrives."""
        for on_notice, _ in self._listeners:
            on_notice(payload)

    def close(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _gap(self) -> None:
        for _, on_gap in self._listeners:
            on_gap()

    def _listen(self) -> None:
        backoff = 0.2
        lost = False  # said once per outage, not at every attempt to reconnect
        while not self._stopping.is_set():
            try:
                with psycopg.connect(**self._connection_kwargs, autocommit=True) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    self._gap()  # anything cached before may have missed a notice
                    self.listening.set()
                    if lost:
                        log.warning("notice listener reconnected; caching again")
                    backoff, lost = 0.2, False
                    while not self._stopping.is_set():
                        for notice in conn.notifies(timeout=0.1):
                            self.tell(notice.payload)
            except psycopg.Error as error:
                if not lost:
                    log.warning(
                        "notice listener lost its connection (%s); not caching until it is back",
                        type(error).__name__,
                    )
                lost = True
            finally:
                self.listening.clear()
                self._gap()
            self._stopping.wait(backoff)
            backoff = min(backoff * 2, 5.0)
