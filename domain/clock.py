"""The shape of the one clock: whatever decides by time is handed one, never reads its own."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class Clock(Protocol):
    """Tells the time (timezone-aware, UTC). Tests and test platforms move it; nothing sleeps."""

    def now(self) -> datetime: ...

    def monotonic(self) -> float:
        """Seconds on a steady count, for how long to wait (back-offs, windows): only
        differences mean anything. Setting the system's time does not move it; tests move
        it with `now`."""
        ...


# The clock that stamps events. An event's `timestamp` (and with it an aggregate's
# `created_on` and `modified_on`, the views' times, the ledger's and the invoices' dates) is
# taken when the event is triggered, deep inside the library, where no application is at
# hand: so the process's clock is registered here, by each application it is given to
# (`PicasseApplication`). A process has one clock; the last one registered is it.


class NoClock(RuntimeError):
    """An event was triggered in a process that registered no clock to stamp it with."""


_stamping: list[Clock] = []  # at most one: the process's clock


def stamp_events_with(clock: Clock) -> None:
    """From now on, events triggered in this process are stamped with `clock`'s time."""
    _stamping[:] = [clock]


def event_time() -> datetime:
    """The time an event triggered now is stamped with: the process's clock's."""
    if not _stamping:
        raise NoClock("no clock stamps this process's events: give its applications one")
    return _stamping[0].now()
