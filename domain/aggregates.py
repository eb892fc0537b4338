"""The base of every aggregate: the library's, its events stamped by the process's clock.

The library stamps an event with the system's time when it is triggered. Ours take the
time of the one clock (`domain/clock.py`), so that what the log and the views say
happened when agrees with what the domain decided by time: under a test clock moved seven
months, a message sent then is sent seven months later in its event, its views, its
invoice and its traffic key alike. ruff bans the library's class elsewhere (TID251).
"""

from __future__ import annotations

from datetime import datetime

from eventsourcing.domain import Aggregate as LibraryAggregate  # noqa: TID251

from picasse.domain.clock import event_time

__all__ = ["Aggregate"]


class Aggregate(LibraryAggregate):
    class Event(LibraryAggregate.Event):
        @staticmethod
        def create_timestamp() -> datetime:
            return event_time()

    class Created(Event, LibraryAggregate.Created):
        pass
