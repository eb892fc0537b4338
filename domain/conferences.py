"""Conferences: calls a customer schedules on a dial-in number of its pool, their PINs, and
what happens on the call as the telephony provider reports it.

Call records are traffic data (R4, R5): participants' numbers and addresses, callers'
numbers and the times the provider reports are sealed under the customer's traffic key of
the month they were recorded in, so retention erases them with the month's messages.
Titles and recording references are content (R7), sealed under the month's content key.
Counts (minutes, legs) and ids stay readable: billing sums them after the numbers are gone.

PINs are never stored: a conference holds the keyed HMACs of its PINs (`pin_claim_id`),
which are also the ids of the `PinClaim`s that keep two active conferences on one number
from sharing a PIN.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated
from uuid import NAMESPACE_URL, UUID, uuid5

import msgspec
from eventsourcing.domain import event

from picasse.domain.aggregates import Aggregate
from picasse.domain.errors import Conflict
from picasse.domain.personal import Erased, Personal

EARLY_ENTRY = timedelta(minutes=15)  # callers may dial in this long before the start
LONGEST_CALL = timedelta(hours=24)  # a conference is active at most this long after its start
WRONG_PIN_LIMIT = 5  # wrong PINs a caller may enter on one number …
WRONG_PIN_PERIOD = timedelta(minutes=15)  # … within this period, before being refused


class CallRole(StrEnum):
    HOST = "host"
    PARTICIPANT = "participant"


class InviteeKind(StrEnum):
    USER = "user"  # one of the customer's users: invited at their account's e-mail address
    PHONE = "phone"  # an external number: invited by SMS
    EMAIL = "email"  # an external address: invited by e-mail


class Control(StrEnum):
    """What a host may do on a running call."""

    MUTE = "mute"
    UNMUTE = "unmute"
    REMOVE = "remove"
    LOCK = "lock"
    END = "end"

    @property
    def on_participant(self) -> bool:
        return self in (Control.MUTE, Control.UNMUTE, Control.REMOVE)


class Invitee(msgspec.Struct, frozen=True):
    """One participant as scheduled: a user by id, or an external number or address."""

    kind: InviteeKind
    user_id: UUID | None = None
    address: Annotated[str | None, Personal("traffic", of="month")] = None


class Recording(msgspec.Struct, kw_only=True):
    """A recording the provider holds, by its reference (content: sealed under `month`)."""

    month: str
    reference: str | Erased
    deletion_requested: bool = False


class Leg(msgspec.Struct, kw_only=True):
    """One caller on the call, from admission to leaving (the provider's call id)."""

    id: UUID  # the participant id host controls name
    call: str  # the provider's id of the call
    role: CallRole
    caller: str | Erased
    joined_at: str | Erased | None = None  # ISO time as the provider reported it
    left_at: str | Erased | None = None
    joined: datetime | None = None  # our clock's, for counting minutes
    minutes: int | None = None  # set once the leg has left
    muted: bool = False


def leg_id(conference_id: UUID, call: str) -> UUID:
    return uuid5(conference_id, f"leg/{call}")


def dial_in_number_id(e164: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"picasse:dial-in/{e164}")


def dial_in_pool_id(customer_id: UUID) -> UUID:
    return uuid5(customer_id, "dial-in-pool")


def minutes_between(start: datetime, end: datetime) -> int:
    """Call minutes as telephony bills them: every started minute counts."""
    seconds = max(0.0, (end - start).total_seconds())
    return int(-(-seconds // 60))


class PinTaken(Conflict):
    """Another active conference on the number holds this PIN."""

    code = "pin-taken"


class Conference(Aggregate):
    """A customer's scheduled call. `month` names the keys its personal fields are sealed
    under: the month each event was recorded in."""

    @event("Scheduled")
    def __init__(
        self,
        id: UUID,  # chosen first: its PIN claims name it in the same save
        tenant_id: UUID,
        month: str,
        title: Annotated[str, Personal("content", of="month")],
        start: datetime,
        duration_minutes: int,
        host_id: UUID,
        invitees: list[Invitee],
        number: str,
        participant_pin: UUID,  # the PIN's keyed HMAC (its PinClaim's id), never the PIN
        host_pin: UUID,
        scheduled_by: UUID | None,
    ) -> None:
        self.tenant_id = tenant_id
        self.month = month
        self.title = title
        self.start = start
        self.duration_minutes = duration_minutes
        self.host_id = host_id
        self.invitees = invitees
        self.number = number
        self.participant_pin = participant_pin
        self.host_pin = host_pin
        self.scheduled_by = scheduled_by
        self.cancelled = False
        self.started_at: datetime | None = None
        self.ended_at: datetime | None = None
        self.locked = False
        self.legs: dict[UUID, Leg] = {}
        self.provider_events: list[str] = []  # ids of the provider's reports taken
        self.recordings: list[Recording] = []
        self.minutes = 0

    # ------------------------------------------------------------ schedule

    @property
    def opens(self) -> datetime:
        return self.start - EARLY_ENTRY

    @property
    def closes(self) -> datetime:
        """When the conference stops being active: its end once it ended, else at most
        24 hours after its start."""
        return self.ended_at or (self.start + LONGEST_CALL)

    @property
    def over(self) -> bool:
        return self.cancelled or self.ended_at is not None

    def active_at(self, moment: datetime) -> bool:
        return not self.over and self.opens <= moment < self.closes

    def _guard_open(self) -> None:
        if self.cancelled:
            raise Conflict(f"conference {self.id} is cancelled")
        if self.ended_at is not None:
            raise Conflict(f"conference {self.id} has ended")

    def reschedule(
        self,
        month: str,
        title: str,
        start: datetime,
        duration_minutes: int,
        invitees: list[Invitee],
        participant_pin: UUID,
        host_pin: UUID,
    ) -> None:
        self._guard_open()
        if self.started_at is not None and start != self.start:
            raise Conflict(f"conference {self.id} has started: its start cannot move")
        self._changed(
            self.tenant_id,
            month,
            title,
            start,
            duration_minutes,
            invitees,
            participant_pin,
            host_pin,
        )

    @event("Changed")
    def _changed(
        self,
        tenant_id: UUID,
        month: str,
        title: Annotated[str, Personal("content", of="month")],
        start: datetime,
        duration_minutes: int,
        invitees: list[Invitee],
        participant_pin: UUID,
        host_pin: UUID,
    ) -> None:
        self.month = month
        self.title = title
        self.start = start
        self.duration_minutes = duration_minutes
        self.invitees = invitees
        self.participant_pin = participant_pin
        self.host_pin = host_pin

    def cancel(self, by: UUID | None) -> None:
        self._guard_open()
        if self.started_at is not None:
            raise Conflict(f"conference {self.id} has started: end it instead")
        self._cancelled(by)

    @event("Cancelled")
    def _cancelled(self, by: UUID | None) -> None:
        self.cancelled = True

    # ------------------------------------------------------------ on the call

    def took(self, provider_event: str) -> bool:
        return provider_event in self.provider_events

    def role_of_pin(self, pin_claim: UUID) -> CallRole | None:
        if pin_claim == self.host_pin:
            return CallRole.HOST
        if pin_claim == self.participant_pin:
            return CallRole.PARTICIPANT
        return None

    def leg_of(self, call: str) -> Leg | None:
        return self.legs.get(leg_id(self.id, call))

    def admit(
        self, month: str, provider_event: str, call: str, caller: str, role: CallRole
    ) -> UUID:
        self._guard_open()
        if self.locked and role is not CallRole.HOST:
            raise Conflict(f"conference {self.id} is locked")
        if self.leg_of(call) is not None:
            raise Conflict(f"call {call} was admitted already")
        self._admitted(
            self.tenant_id, month, provider_event, leg_id(self.id, call), call, caller, role
        )
        return leg_id(self.id, call)

    @event("CallerAdmitted")
    def _admitted(
        self,
        tenant_id: UUID,
        month: str,
        provider_event: str,
        leg: UUID,
        call: str,
        caller: Annotated[str, Personal("traffic", of="month")],
        role: CallRole,
    ) -> None:
        self.provider_events.append(provider_event)
        self.legs[leg] = Leg(id=leg, call=call, role=role, caller=caller)

    def join(self, month: str, provider_event: str, call: str, at: str, now: datetime) -> None:
        leg = self.leg_of(call)
        if leg is None:
            raise Conflict(f"call {call} was not admitted to conference {self.id}")
        if leg.joined is not None:
            raise Conflict(f"call {call} has joined already")
        self._joined(self.tenant_id, month, provider_event, leg.id, at, now)

    @event("Joined")
    def _joined(
        self,
        tenant_id: UUID,
        month: str,
        provider_event: str,
        leg: UUID,
        at: Annotated[str, Personal("traffic", of="month")],
        clock_time: datetime,
    ) -> None:
        self.provider_events.append(provider_event)
        self.legs[leg].joined_at = at
        self.legs[leg].joined = clock_time

    def leave(self, month: str, provider_event: str, call: str, at: str, now: datetime) -> None:
        leg = self.leg_of(call)
        if leg is None or leg.joined is None:
            raise Conflict(f"call {call} has not joined conference {self.id}")
        if leg.minutes is not None:
            raise Conflict(f"call {call} has left already")
        self._left(
            self.tenant_id, month, provider_event, leg.id, at, minutes_between(leg.joined, now)
        )

    @event("Left")
    def _left(
        self,
        tenant_id: UUID,
        month: str,
        provider_event: str,
        leg: UUID,
        at: Annotated[str, Personal("traffic", of="month")],
        minutes: int,  # this participant's minutes on the call: a count, kept for billing
    ) -> None:
        if provider_event:
            self.provider_events.append(provider_event)
        self.legs[leg].left_at = at
        self.legs[leg].minutes = minutes
        self.minutes += minutes

    def begin(self, month: str, provider_event: str, at: str, now: datetime) -> None:
        self._guard_open()
        if self.started_at is not None:
            raise Conflict(f"conference {self.id} has started already")
        self._started(self.tenant_id, month, provider_event, at, now)

    @event("Started")
    def _started(
        self,
        tenant_id: UUID,
        month: str,
        provider_event: str,
        at: Annotated[str, Personal("traffic", of="month")],
        clock_time: datetime,
    ) -> None:
        self.provider_events.append(provider_event)
        self.started_at = clock_time

    def end(self, month: str, provider_event: str, at: str, now: datetime) -> None:
        """The call is over: legs still on it leave now, and its minutes are counted."""
        self._guard_open()
        for leg in list(self.legs.values()):
            if leg.joined is not None and leg.minutes is None:
                self._left(self.tenant_id, month, "", leg.id, at, minutes_between(leg.joined, now))
        self._ended(
            self.tenant_id,
            month,
            provider_event,
            at,
            now,
            self.minutes,
            sum(1 for leg in self.legs.values() if leg.minutes is not None),
        )

    @event("Ended")
    def _ended(
        self,
        tenant_id: UUID,
        month: str,  # also the billing month of `minutes`
        provider_event: str,
        at: Annotated[str, Personal("traffic", of="month")],
        clock_time: datetime,
        minutes: int,  # participant minutes of the whole call (the sum of its legs')
        legs: int,  # how many callers were on it
    ) -> None:
        self.provider_events.append(provider_event)
        self.ended_at = clock_time

    def record_recording(self, month: str, provider_event: str, reference: str) -> None:
        self._recording_available(self.tenant_id, month, provider_event, reference)

    @event("RecordingAvailable")
    def _recording_available(
        self,
        tenant_id: UUID,
        month: str,
        provider_event: str,
        reference: Annotated[str, Personal("content", of="month")],
    ) -> None:
        self.provider_events.append(provider_event)
        self.recordings.append(Recording(month=month, reference=reference))

    @event("RecordingsDeletionRequested")
    def recordings_deletion_requested(
        self, tenant_id: UUID, recordings: list[int], confirmed: int, reason: str
    ) -> None:
        """We asked the provider to delete these recordings (by their place in the list),
        before the keys sealing their references went; it confirmed `confirmed` of them."""
        for index in recordings:
            self.recordings[index].deletion_requested = True

    def control(self, action: Control, leg: UUID | None, by: UUID | None) -> None:
        self._guard_open()
        if action.on_participant:
            found = self.legs.get(leg) if leg is not None else None
            if found is None or found.joined is None or found.minutes is not None:
                raise Conflict(f"participant {leg} is not on conference {self.id}")
        self._controlled(self.tenant_id, action, leg, by)

    @event("HostControlUsed")
    def _controlled(
        self, tenant_id: UUID, action: Control, leg: UUID | None, by: UUID | None
    ) -> None:
        if action is Control.LOCK:
            self.locked = True
        elif leg is not None and action in (Control.MUTE, Control.UNMUTE):
            self.legs[leg].muted = action is Control.MUTE


class PinClaim(Aggregate):
    """Which conferences hold one PIN on one number, and when they are active. Its id is
    the keyed HMAC of number and PIN, so nothing here tells the PIN."""

    @event("Opened")
    def __init__(self, id: UUID) -> None:
        self.holders: list[list[str]] = []  # [conference id, opens, closes] (ISO times)

    def holder_at(self, moment: datetime) -> UUID | None:
        for conference, opens, closes in self.holders:
            if datetime.fromisoformat(opens) <= moment < datetime.fromisoformat(closes):
                return UUID(conference)
        return None

    def claim(self, conference: UUID, opens: datetime, closes: datetime) -> None:
        """Holds the PIN for `conference` from `opens` to `closes` (again, if it did)."""
        for other, other_opens, other_closes in self.holders:
            if other == str(conference):
                continue
            if datetime.fromisoformat(other_opens) < closes and opens < datetime.fromisoformat(
                other_closes
            ):
                raise PinTaken("this PIN is held by another conference active at the same time")
        self._claimed(conference, opens.isoformat(), closes.isoformat())

    @event("Claimed")
    def _claimed(self, conference: UUID, opens: str, closes: str) -> None:
        self.holders = [h for h in self.holders if h[0] != str(conference)]
        self.holders.append([str(conference), opens, closes])

    def release(self, conference: UUID) -> None:
        if any(h[0] == str(conference) for h in self.holders):
            self._released(conference)

    @event("Released")
    def _released(self, conference: UUID) -> None:
        self.holders = [h for h in self.holders if h[0] != str(conference)]


class WrongPins(Aggregate):
    """The wrong PINs one caller entered on one number, for the limit. Its id is a keyed
    pseudonym of number and caller; it holds times only."""

    @event("Opened")
    def __init__(self, id: UUID) -> None:
        self.times: list[datetime] = []
        self.provider_events: list[str] = []

    def limited(self, now: datetime) -> bool:
        recent = [t for t in self.times if now - t < WRONG_PIN_PERIOD]
        return len(recent) >= WRONG_PIN_LIMIT

    @event("WrongPinEntered")
    def wrong_pin(self, at: datetime, provider_event: str) -> None:
        self.times = [t for t in self.times if at - t < WRONG_PIN_PERIOD] + [at]
        self.provider_events = [*self.provider_events[-50:], provider_event]


class DialInNumber(Aggregate):
    """A platform number given to one customer's pool; never to two at once."""

    @event("Assigned")
    def __init__(self, id: UUID, number: str, customer_id: UUID) -> None:
        self.number = number
        self.customer_id: UUID | None = customer_id

    @event("Reassigned")
    def reassign(self, customer_id: UUID) -> None:
        self.customer_id = customer_id

    @event("Released")
    def release(self) -> None:
        self.customer_id = None


class DialInPool(Aggregate):
    """A customer's dial-in numbers, in the order they were added."""

    @event("Opened")
    def __init__(self, id: UUID, tenant_id: UUID) -> None:
        self.tenant_id = tenant_id
        self.numbers: list[str] = []

    @event("NumberAdded")
    def add(self, number: str) -> None:
        self.numbers.append(number)

    @event("NumberRemoved")
    def remove(self, number: str) -> None:
        self.numbers.remove(number)
