"""Group commit: saves that arrive while a save is being written go into the next one, together.

The event store takes a table-wide lock for every write, so writes are one at a time
whatever the number of connections, and a transaction per request caps requests at
the database's commit rate. Here one save is written at a time: requests that arrive
meanwhile wait for it and are then written together, in one transaction. A request
returns only after the commit that holds its events, so nothing is acknowledged before
it is durable. Nothing waits for a timer: when nothing else is being written, a save is
written at once, alone; the busier the store, the larger the groups.

If a group's write fails (one request's idempotency claim lost a race, say), each of its
requests is written again on its own, in its own thread, so each gets its own outcome and
one request's conflict fails no other.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from eventsourcing.application import Application

MAX_GROUP_EVENTS = 2000  # a group this large closes; the next request starts another


class _Group:
    def __init__(self) -> None:
        self.events: list[list[Any]] = []  # each request's events
        self.size = 0
        self.done = threading.Event()
        self.failed = False


class GroupCommit:
    """`save(*aggregates)` as `Application.save`, written together with concurrent saves."""

    def __init__(self, application: Application[Any], max_events: int = MAX_GROUP_EVENTS) -> None:
        self.application = application
        self.max_events = max_events
        self._lock = threading.Lock()  # guards _open
        self._writing = threading.Lock()  # held while a group is written: one at a time
        self._open: _Group | None = None
        self._in_write: _Group | None = None
        self.groups = 0  # transactions written (tests read them; the bench counts xmins)
        self.saves = 0  # requests written

    def waiting(self) -> int:
        """Requests gathered for the next write (tests read it)."""
        with self._lock:
            return len(self._open.events) if self._open is not None else 0

    def writing(self) -> bool:
        """Whether a group is being written (tests read it)."""
        return self._in_write is not None

    def save(self, *aggregates: Any) -> None:
        # Collected at once, in the caller's thread: the aggregates are the caller's.
        events = [event for aggregate in aggregates for event in aggregate.collect_events()]
        if not events:
            return
        with self._lock:
            group = self._open
            leader = group is None
            if group is None:
                group = self._open = _Group()
            group.events.append(events)
            group.size += len(events)
            if group.size >= self.max_events:
                self._open = None  # full: the next request starts another
        if leader:
            self._write(group)
        else:
            group.done.wait()
        if group.failed:
            self.application.save(*events)  # alone: this request's own outcome

    def _write(self, group: _Group) -> None:
        """The leader's part: wait for the write before, close the group, write it."""
        with self._writing:
            with self._lock:
                if self._open is group:
                    self._open = None  # from now on, arrivals start the next group
                self._in_write = group
            try:
                self.application.save(*_flat(group.events))
                self.groups += 1
                self.saves += len(group.events)
            except BaseException:  # whatever it was, each member then writes alone
                group.failed = True
            finally:
                self._in_write = None
                group.done.set()


def _flat(events: Sequence[list[Any]]) -> list[Any]:
    return [event for request in events for event in request]
