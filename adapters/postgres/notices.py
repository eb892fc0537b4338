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
from collections.abc import Callable, Hashable
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from picasse.domain.clock import Clock

log = logging.getLogger(__name__)

# The payload saying that a key, a user or a customer changed (domain/api_keys.py,
# ACCOUNT_SOURCES); the key store's own payloads name a key, a tenant or an epoch.
ACCOUNTS_CHANGED = "accounts"


def connection_kwargs(datastore: Any) -> dict[str, Any]:
    """The psycopg connection parameters of an eventsourcing datastore's pool, for a
    connection of its own beside the pool (a LISTEN, role claims, an audit's snapshot)."""
    given = datastore.pool.kwargs  # psycopg_pool takes a dict, a callable or None
    kwargs = dict((given() if callable(given) else given) or {})
    kwargs.pop("row_factory", None)
    return kwargs


class Notices:
    """The listener of one schema's channel, in a thread of its own once started."""

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


class NoticedCache:
    """Values read from the database, kept between calls until any notice on the schema's
    channel or any gap in them (everything is forgotten then: the changes that send notices
    are rare), and never kept while the notices are not listened to. An entry lives at most
    `lifetime` by the clock besides, a bound in case a change ever sent no notice; the cache
    holds at most `size` entries. Implements the domain's `Remembered`."""

    def __init__(
        self, clock: Clock, notices: Notices, lifetime: timedelta, size: int = 10_000
    ) -> None:
        self._clock = clock
        self._notices = notices
        self._lifetime = lifetime
        self._size = size
        self._lock = threading.Lock()
        self._values: dict[Hashable, tuple[Any, datetime]] = {}
        self.generation = 0  # moves at each forgetting: a read that began before keeps nothing
        notices.subscribe(lambda _payload: self.forget(), self.forget)

    def get(self, key: Hashable) -> Any | None:
        found = self._values.get(key)
        if found is None or not self._notices.listening.is_set():
            return None
        value, until = found
        return value if self._clock.now() < until else None

    def keep(self, key: Hashable, value: Any, generation: int) -> None:
        """`generation`: as read before the value was; if anything was forgotten since, the
        value may be from before the change, and is not kept."""
        with self._lock:
            if generation != self.generation or not self._notices.listening.is_set():
                return
            if len(self._values) >= self._size:
                self._values.clear()  # rare: more in use than it holds; start again
            self._values[key] = (value, self._clock.now() + self._lifetime)

    def forget(self) -> None:
        with self._lock:
            self.generation += 1
            self._values.clear()
