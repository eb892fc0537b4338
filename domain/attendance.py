"""Attendance (R8): the service switch, users' consent, geofences, location pings, and who was
on which site when.

Location data is processed only while the customer has switched the service on and the
user's consent is current. A ping without it is refused before anything is written. Pings
are sealed under the user's location key of their day (`location/<user>/<YYYY-MM-DD>`),
one event per batch, user and day; retention destroys a day's key once it is older than
the period, and a withdrawal destroys all of the user's. Entries and exits (`Entered`,
`Exited`) hold no coordinates: they are the customer's working-time records and stay.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated
from uuid import UUID, uuid4, uuid5

import msgspec
from eventsourcing.domain import event

from picasse.domain.aggregates import Aggregate
from picasse.domain.application import PicasseApplication
from picasse.domain.clock import Clock
from picasse.domain.customers import Customer
from picasse.domain.errors import Conflict, InvalidInput, NotFound
from picasse.domain.geofences import (
    Crossing,
    Fence,
    FenceIndex,
    FenceState,
    Shape,
    check_shape,
    follow,
)
from picasse.domain.messages import catalogue_id
from picasse.domain.personal import Erased, Personal, Trigger
from picasse.domain.privacy import Privacy
from picasse.domain.sites import DEFAULT_DWELL, DEFAULT_HYSTERESIS_M, SITES, Sites
from picasse.domain.values import required_text

MAX_PINGS = 1000  # per batch
REORDER_WINDOW = timedelta(minutes=2)
CLOCK_SKEW = timedelta(seconds=30)  # a phone's clock a little ahead is not "the future"
MAX_USEFUL_ACCURACY_M = 1000.0  # a ping vaguer than this is kept but decides nothing
MAX_FENCES = 5000  # per customer
MAX_DWELL_SECONDS = 3600
MAX_HYSTERESIS_M = 500.0


class AttendanceOff(Conflict):
    code = "attendance-off"


class NoLocationConsent(Conflict):
    """A ping of a user whose consent is not current: refused, and stored nowhere (R8)."""

    code = "no-location-consent"


class BadPing(msgspec.Struct, frozen=True):
    index: int
    field: str
    reason: str


class PingsRefused(InvalidInput):
    """A batch is accepted or refused whole; this names every bad ping's index and field."""

    code = "invalid-pings"

    def __init__(self, problems: list[BadPing]) -> None:
        first = problems[0]
        super().__init__(
            f"{len(problems)} bad ping(s), the first pings[{first.index}].{first.field}:"
            f" {first.reason}; nothing was recorded",
            field=f"pings[{first.index}].{first.field}",
        )
        self.errors = problems


class Ping(msgspec.Struct, frozen=True, array_like=True):
    """One location fix of one user, as sealed (coordinates and time are personal data)."""

    at: datetime
    lat: float
    lon: float
    accuracy_m: float

    def __repr__(self) -> str:  # coordinates stay out of every log line
        return "Ping(…)"


class PingIn(msgspec.Struct, frozen=True):
    """A ping as the customer's app sends it."""

    user_id: UUID
    at: datetime
    lat: float
    lon: float
    accuracy_m: float

    def __repr__(self) -> str:
        return f"PingIn(user_id={self.user_id})"


def location_key(user_id: UUID, day: date) -> str:
    """What names a user's location key of one day (its subject is `location/` + this)."""
    return f"{user_id}/{day.isoformat()}"


def _day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


# ------------------------------------------------------------------ aggregates


class AttendanceService(Aggregate):
    """A customer's switch for the attendance service, and the users who consented."""

    @event("Started")
    def __init__(self, id: UUID, tenant_id: UUID) -> None:
        self.tenant_id = tenant_id
        self.on = False
        self.user_ids: list[UUID] = []  # everyone who ever consented (their records stay)

    @event("SwitchedOn")
    def switch_on(self, by: UUID | None) -> None:
        self.on = True

    @event("SwitchedOff")
    def switch_off(self, by: UUID | None) -> None:
        self.on = False

    def note_user(self, user_id: UUID) -> None:
        if user_id not in self.user_ids:
            self._user_noted(user_id)

    @event("UserNoted")
    def _user_noted(self, user_id: UUID) -> None:
        self.user_ids.append(user_id)


class TrackedFence(msgspec.Struct, frozen=True):
    fence_id: UUID
    state: FenceState


class Visit(msgspec.Struct, frozen=True):
    fence_id: UUID
    site_id: UUID
    entered_at: datetime
    exited_at: datetime | None = None


Kept = Annotated[datetime, Personal("attendance", of="user_id")]


class Presence(Aggregate):
    """One user's consent history and presence in the customer's fences. No coordinates:
    the times are the customer's working-time records, sealed under the user's attendance
    key (the registry's `attendance` kind), so they stay when pings go."""

    @event("Started")
    def __init__(self, id: UUID, tenant_id: UUID, user_id: UUID) -> None:
        self.tenant_id = tenant_id
        self.user_id = user_id
        self.consent = False
        self.consent_history: list[tuple[str, datetime | None]] = []
        self.evaluated_until: datetime | None = None
        self.states: dict[UUID, FenceState] = {}
        self.visits: list[Visit] = []

    def give_consent(self, at: datetime) -> None:
        self._consent_given(self.tenant_id, self.user_id, at)

    @event("ConsentGiven")
    def _consent_given(self, tenant_id: UUID, user_id: UUID, at: Kept) -> None:
        self.consent = True
        self.consent_history.append(("given", _time(at)))

    def withdraw_consent(self, at: datetime) -> None:
        self._consent_withdrawn(self.tenant_id, self.user_id, at)

    @event("ConsentWithdrawn")
    def _consent_withdrawn(self, tenant_id: UUID, user_id: UUID, at: Kept) -> None:
        self.consent = False
        self.consent_history.append(("withdrawn", _time(at)))
        self.states = {}  # processing stops: nobody is "on site" from pings no longer held
        self.visits = [
            v if v.exited_at or _time(at) is None else msgspec.structs.replace(v, exited_at=at)
            for v in self.visits
        ]

    def enter(self, fence_id: UUID, site_id: UUID, at: datetime) -> None:
        self._entered(self.tenant_id, self.user_id, fence_id, site_id, at)

    @event("Entered")
    def _entered(
        self, tenant_id: UUID, user_id: UUID, fence_id: UUID, site_id: UUID, at: Kept
    ) -> None:
        if _time(at) is not None:
            self.visits.append(Visit(fence_id, site_id, at))

    def exit(self, fence_id: UUID, site_id: UUID, at: datetime) -> None:
        self._exited(self.tenant_id, self.user_id, fence_id, site_id, at)

    @event("Exited")
    def _exited(
        self, tenant_id: UUID, user_id: UUID, fence_id: UUID, site_id: UUID, at: Kept
    ) -> None:
        if _time(at) is None:
            return
        for i in range(len(self.visits) - 1, -1, -1):
            if self.visits[i].fence_id == fence_id and self.visits[i].exited_at is None:
                self.visits[i] = msgspec.structs.replace(self.visits[i], exited_at=at)
                break

    def evaluate(self, until: datetime, states: list[TrackedFence]) -> None:
        self._evaluated(self.tenant_id, self.user_id, until, states)

    @event("Evaluated")
    def _evaluated(
        self,
        tenant_id: UUID,
        user_id: UUID,
        until: Kept,
        states: Annotated[list[TrackedFence], Personal("attendance", of="user_id")],
    ) -> None:
        self.evaluated_until = _time(until)
        self.states = {} if isinstance(states, Erased) else {t.fence_id: t.state for t in states}


def _time(value: datetime | Erased) -> datetime | None:
    return None if isinstance(value, Erased) else value


def presence_id(user_id: UUID) -> UUID:
    return uuid5(user_id, "presence")


def service_id(customer_id: UUID) -> UUID:
    return uuid5(customer_id, "attendance")


class LocationDay(Aggregate):
    """One user's pings of one day, sealed under that day's location key."""

    @event("Started")
    def __init__(self, id: UUID, tenant_id: UUID, user_id: UUID, day: date) -> None:
        self.tenant_id = tenant_id
        self.user_id = user_id
        self.day = day
        self.pings: list[Ping] = []
        self.erased = False

    @event("PingsReceived")
    def receive(
        self,
        tenant_id: UUID,
        key: str,
        pings: Annotated[list[Ping], Personal("location", of="key")],
    ) -> None:
        if isinstance(pings, Erased):
            self.erased = True
        else:
            self.pings.extend(pings)


def location_day_id(user_id: UUID, day: date) -> UUID:
    return uuid5(user_id, f"location/{day.isoformat()}")


class FenceSet(Aggregate):
    """A customer's geofences (their geometry is the customer's premises, not personal data)."""

    @event("Started")
    def __init__(self, id: UUID, tenant_id: UUID) -> None:
        self.tenant_id = tenant_id
        self.fences: dict[UUID, Fence] = {}

    @event("FenceAdded")
    def add(self, fence: Fence) -> None:
        self.fences[fence.id] = fence

    @event("FenceChanged")
    def change(self, fence: Fence) -> None:
        self.fences[fence.id] = fence

    @event("FenceRemoved")
    def remove(self, fence_id: UUID) -> None:
        self.fences.pop(fence_id, None)


def fence_set_id(customer_id: UUID) -> UUID:
    return uuid5(customer_id, "geofences")


# ------------------------------------------------------------------ answers


class Accepted(msgspec.Struct, frozen=True):
    accepted: int  # new pings stored
    duplicates: int  # pings already held (same user and time), ignored
    crossings: int  # entries and exits this batch decided


class OnSite(msgspec.Struct, frozen=True):
    user_id: UUID
    since: datetime


class Hours(msgspec.Struct, frozen=True):
    user_id: UUID
    day: date
    hours: float


class SiteAttendance(msgspec.Struct, frozen=True):
    site_id: UUID
    day: date
    on_site: list[OnSite]
    hours: list[Hours]


class ConsentRecord(msgspec.Struct, frozen=True):
    user_id: UUID
    consent: bool
    history: list[tuple[str, datetime | None]]


# ------------------------------------------------------------------ the application


def check_pings(pings: Sequence[PingIn], now: datetime) -> list[BadPing]:
    """Every bad ping's index and field (values are never named: they are location data)."""
    bad: list[BadPing] = []
    for i, p in enumerate(pings):
        if not (math.isfinite(p.lat) and -90 <= p.lat <= 90):
            bad.append(BadPing(i, "lat", "latitude out of range (-90 to 90)"))
        if not (math.isfinite(p.lon) and -180 <= p.lon <= 180):
            bad.append(BadPing(i, "lon", "longitude out of range (-180 to 180)"))
        if p.at.tzinfo is None:
            bad.append(BadPing(i, "at", "a time needs its UTC offset"))
        elif p.at > now + CLOCK_SKEW:
            bad.append(BadPing(i, "at", "a time in the future"))
        if not (math.isfinite(p.accuracy_m) and p.accuracy_m >= 0):
            bad.append(BadPing(i, "accuracy_m", "accuracy must be a number of metres, 0 or more"))
    return bad


class Attendance(PicasseApplication):
    """The whole surface of attendance: the API, the CLI, the pages and tests come here."""

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        clock: Clock,
        privacy: Privacy,
        sharing: PicasseApplication | None = None,
    ) -> None:
        super().__init__(env, sharing=sharing, clock=clock)
        self.clock = clock
        self.privacy = privacy  # withdrawal erases through the one erasure mechanism
        self.sites = Sites(clock=clock, sharing=self)
        self._indexes: dict[UUID, tuple[tuple[int, int], FenceIndex]] = {}

    # -------------------------------------------------------------- the switch

    def switch(self, customer_id: UUID, on: bool, *, by: UUID | None = None) -> None:
        customer = self._get(customer_id, Customer, "customer")
        customer._guard_not_terminated()
        service = self._service(customer_id)
        if service.on != on:
            service.switch_on(by) if on else service.switch_off(by)
            self.save(service)

    def is_on(self, customer_id: UUID) -> bool:
        return self._service(customer_id).on

    # -------------------------------------------------------------- consent

    def give_consent(self, customer_id: UUID, user_id: UUID) -> None:
        service = self._service(customer_id)
        if not service.on:
            raise AttendanceOff("the customer has not switched the attendance service on")
        presence = self._presence(customer_id, user_id)
        if not presence.consent:
            presence.give_consent(self.clock.now())
        service.note_user(user_id)
        self._save_changed(presence, service)

    def withdraw_consent(self, customer_id: UUID, user_id: UUID) -> int:
        """Processing stops at once and the user's raw pings are erased (their keys
        destroyed); returns how many day keys went."""
        presence = self._presence(customer_id, user_id)
        if presence.consent:
            presence.withdraw_consent(self.clock.now())
            self.save(presence)
        return self._erase_pings(customer_id, user_id, "consent withdrawn (R8)")

    def consent(self, customer_id: UUID, user_id: UUID) -> ConsentRecord:
        p = self._presence(customer_id, user_id)
        return ConsentRecord(user_id, p.consent, list(p.consent_history))

    def _erase_pings(self, customer_id: UUID, user_id: UUID, reason: str) -> int:
        subjects = self.privacy.shredder.live_subjects(customer_id, f"location/{user_id}/")
        for subject in subjects:
            self.privacy.erase_subject(customer_id, subject, reason, trigger=Trigger.REQUEST)
        return len(subjects)

    # -------------------------------------------------------------- geofences

    def add_fence(
        self,
        customer_id: UUID,
        site_id: UUID,
        name: str,
        shape: Shape,
        *,
        hysteresis_m: float = DEFAULT_HYSTERESIS_M,
        dwell_seconds: int = int(DEFAULT_DWELL.total_seconds()),
    ) -> UUID:
        fence = self._fence(customer_id, uuid4(), site_id, name, shape, hysteresis_m, dwell_seconds)
        fences = self._fence_set(customer_id)
        if len(fences.fences) >= MAX_FENCES:
            raise Conflict(f"a customer has at most {MAX_FENCES} geofences: remove some first")
        fences.add(fence)
        self.save(fences)
        return fence.id

    def change_fence(
        self,
        customer_id: UUID,
        fence_id: UUID,
        site_id: UUID,
        name: str,
        shape: Shape,
        *,
        hysteresis_m: float = DEFAULT_HYSTERESIS_M,
        dwell_seconds: int = int(DEFAULT_DWELL.total_seconds()),
    ) -> None:
        fences = self._fence_set(customer_id)
        if fence_id not in fences.fences:
            raise NotFound(f"geofence {fence_id} not found")
        fences.change(
            self._fence(customer_id, fence_id, site_id, name, shape, hysteresis_m, dwell_seconds)
        )
        self.save(fences)

    def remove_fence(self, customer_id: UUID, fence_id: UUID) -> None:
        fences = self._fence_set(customer_id)
        if fence_id not in fences.fences:
            raise NotFound(f"geofence {fence_id} not found")
        fences.remove(fence_id)
        self.save(fences)

    def fences(self, customer_id: UUID, site_id: UUID | None = None) -> list[Fence]:
        """The customer's geofences (of one site): those of removed sites are gone with them."""
        found = self._fence_set(customer_id).fences.values()
        live = self.sites.site_ids(customer_id)
        return sorted(
            (f for f in found if f.site_id in live and (site_id is None or f.site_id == site_id)),
            key=lambda f: (f.name.casefold(), str(f.id)),
        )

    def fence(self, customer_id: UUID, fence_id: UUID) -> Fence:
        found = self._fence_set(customer_id).fences.get(fence_id)
        if found is None or found.site_id not in self.sites.site_ids(customer_id):
            raise NotFound(f"geofence {fence_id} not found")
        return found

    def _fence(
        self,
        customer_id: UUID,
        fence_id: UUID,
        site_id: UUID,
        name: str,
        shape: Shape,
        hysteresis_m: float,
        dwell_seconds: int,
    ) -> Fence:
        self.sites.own_site(customer_id, site_id)  # another customer's: not found
        if not (math.isfinite(hysteresis_m) and 0 <= hysteresis_m <= MAX_HYSTERESIS_M):
            raise InvalidInput(
                f"hysteresis_m: 0 to {MAX_HYSTERESIS_M:.0f} metres", field="hysteresis_m"
            )
        if not 0 <= dwell_seconds <= MAX_DWELL_SECONDS:
            raise InvalidInput(f"dwell_seconds: 0 to {MAX_DWELL_SECONDS}", field="dwell_seconds")
        return Fence(
            id=fence_id,
            site_id=site_id,
            name=required_text(name, "name", max_length=100),
            shape=check_shape(shape),
            hysteresis_m=float(hysteresis_m),
            dwell_seconds=dwell_seconds,
        )

    def _index(self, customer_id: UUID) -> FenceIndex:
        """The customer's fences behind their index, built again only when they changed:
        one look at the newest version instead of replaying every fence's event per batch."""
        version = (
            self._newest_version(fence_set_id(customer_id)),
            self._newest_version(catalogue_id(customer_id, SITES)),  # a site removed
        )
        cached = self._indexes.get(customer_id)
        if cached is not None and cached[0] == version:
            return cached[1]
        index = FenceIndex(self.fences(customer_id))
        self._indexes[customer_id] = (version, index)
        return index

    # -------------------------------------------------------------- pings

    def record_pings(
        self, customer_id: UUID, pings: Sequence[PingIn], *, only_user: UUID | None = None
    ) -> Accepted:
        """A batch, accepted or refused whole: stored under each user's daily keys and
        evaluated in time order within the reorder window."""
        if len(pings) > MAX_PINGS:
            raise InvalidInput(f"pings: at most {MAX_PINGS} in a batch", field="pings")
        now = self.clock.now()
        bad = check_pings(pings, now)
        if only_user is not None:
            bad += [
                BadPing(i, "user_id", "a user's session sends that user's own pings only")
                for i, p in enumerate(pings)
                if p.user_id != only_user
            ]
        if bad:
            raise PingsRefused(sorted(bad, key=lambda b: (b.index, b.field)))
        service = self._service(customer_id)
        if not service.on:
            raise AttendanceOff("the customer has not switched the attendance service on")
        by_user: dict[UUID, list[PingIn]] = {}
        for p in pings:
            by_user.setdefault(p.user_id, []).append(p)
        presences = {}
        for user_id in by_user:
            presence = self._existing_presence(customer_id, user_id)
            if presence is None or not presence.consent:
                raise NoLocationConsent(
                    f"user {user_id} has no current consent to location processing;"
                    " nothing was recorded"
                )
            presences[user_id] = presence
        index = self._index(customer_id)
        changed: list[Aggregate] = []
        accepted = duplicates = crossings = 0
        for user_id, given in by_user.items():
            a, d, c, aggregates = self._take(customer_id, presences[user_id], given, index)
            accepted, duplicates, crossings = accepted + a, duplicates + d, crossings + c
            changed += aggregates
        if changed:
            self.save(*changed)
        return Accepted(accepted, duplicates, crossings)

    def _take(
        self, customer_id: UUID, presence: Presence, given: list[PingIn], index: FenceIndex
    ) -> tuple[int, int, int, list[Aggregate]]:
        user_id = presence.user_id
        new = [Ping(p.at.astimezone(UTC), p.lat, p.lon, p.accuracy_m) for p in given]
        days_needed = {_day(p.at) for p in new}
        if presence.evaluated_until is not None:
            days_needed.add(_day(presence.evaluated_until))
        days = {d: self._location_day(customer_id, user_id, d) for d in sorted(days_needed)}
        held = {p.at for day in days.values() for p in day.pings}
        fresh: dict[datetime, Ping] = {}
        for p in new:
            if p.at not in held and p.at not in fresh:
                fresh[p.at] = p
        duplicates = len(new) - len(fresh)
        per_day: dict[date, list[Ping]] = {}
        for p in sorted(fresh.values(), key=lambda p: p.at):
            per_day.setdefault(_day(p.at), []).append(p)
        for d, part in per_day.items():
            days[d].receive(customer_id, location_key(user_id, d), part)

        every = [p for day in days.values() for p in day.pings]
        if not every:
            return 0, duplicates, 0, [a for a in days.values() if a.pending_events]
        watermark = max(p.at for p in every) - REORDER_WINDOW
        after = presence.evaluated_until
        due = sorted(
            (p for p in every if (after is None or p.at > after) and p.at <= watermark),
            key=lambda p: p.at,
        )
        found: list[Crossing] = []
        if due:
            useful = [p for p in due if p.accuracy_m <= MAX_USEFUL_ACCURACY_M]
            states = presence.states
            if useful:
                import numpy as np  # with the geometry (domain/geofences.py)

                states, found = follow(
                    index,
                    presence.states,
                    [p.at for p in useful],
                    np.array([p.lat for p in useful]),
                    np.array([p.lon for p in useful]),
                    np.array([p.accuracy_m for p in useful]),
                )
            for c in found:
                site = index.by_id[c.fence_id].fence.site_id
                if c.entered:
                    presence.enter(c.fence_id, site, c.at)
                else:
                    presence.exit(c.fence_id, site, c.at)
            presence.evaluate(due[-1].at, [TrackedFence(f, s) for f, s in sorted(states.items())])
        aggregates: list[Aggregate] = [a for a in days.values() if a.pending_events]
        if presence.pending_events:
            aggregates.append(presence)
        return len(fresh), duplicates, len(found), aggregates

    def pings(self, customer_id: UUID, user_id: UUID) -> list[Ping | Erased]:
        """The user's pings still held (each day's, Erased for a day whose key is gone)."""
        presence = self._existing_presence(customer_id, user_id)
        if presence is None:
            return []
        out: list[Ping | Erased] = []
        for subject in self.privacy.shredder.live_subjects(customer_id, f"location/{user_id}/"):
            day = date.fromisoformat(subject.rpartition("/")[2])
            out += self._location_day(customer_id, user_id, day).pings
        return out

    def pings_of_day(self, customer_id: UUID, user_id: UUID, day: date) -> list[Ping] | Erased:
        found = self._location_day(customer_id, user_id, day)
        return Erased() if found.erased else list(found.pings)

    # -------------------------------------------------------------- attendance

    def attendance(self, customer_id: UUID, site_id: UUID, day: date) -> SiteAttendance:
        """Who is on the site now, and each user's hours on it that day (UTC)."""
        self.sites.own_site(customer_id, site_id)
        now = self.clock.now()
        start = datetime.combine(day, time(), tzinfo=UTC)
        end = start + timedelta(days=1)
        on_site, hours = [], []
        for user_id in self._service(customer_id).user_ids:
            presence = self._existing_presence(customer_id, user_id)
            if presence is None:
                continue
            visits = [v for v in presence.visits if v.site_id == site_id]
            open_ = [v.entered_at for v in visits if v.exited_at is None]
            if open_:
                on_site.append(OnSite(user_id, min(open_)))
            spans = _merged(
                (max(v.entered_at, start), min(v.exited_at or now, end)) for v in visits
            )
            seconds = sum((b - a).total_seconds() for a, b in spans)
            if seconds > 0:
                hours.append(Hours(user_id, day, round(seconds / 3600, 2)))
        return SiteAttendance(site_id, day, on_site, hours)

    def attendance_records(self, customer_id: UUID) -> list[tuple[UUID, Visit]]:
        """Every user's visits (the customer's working-time records), for the export."""
        out = []
        for user_id in self._service(customer_id).user_ids:
            presence = self._existing_presence(customer_id, user_id)
            if presence is not None:
                out += [(user_id, v) for v in presence.visits]
        return out

    def consent_records(self, customer_id: UUID) -> list[ConsentRecord]:
        return [self.consent(customer_id, u) for u in self._service(customer_id).user_ids]

    # -------------------------------------------------------------- helpers

    def _service(self, customer_id: UUID) -> AttendanceService:
        try:
            return self._get(service_id(customer_id), AttendanceService, "attendance")
        except NotFound:
            return AttendanceService(id=service_id(customer_id), tenant_id=customer_id)

    def _existing_presence(self, customer_id: UUID, user_id: UUID) -> Presence | None:
        try:
            presence = self._get(presence_id(user_id), Presence, "presence")
        except NotFound:
            return None
        return presence if presence.tenant_id == customer_id else None

    def _presence(self, customer_id: UUID, user_id: UUID) -> Presence:
        presence = self._existing_presence(customer_id, user_id)
        if presence is None:
            return Presence(id=presence_id(user_id), tenant_id=customer_id, user_id=user_id)
        return presence

    def _location_day(self, customer_id: UUID, user_id: UUID, day: date) -> LocationDay:
        try:
            return self._get(location_day_id(user_id, day), LocationDay, "location day")
        except NotFound:
            return LocationDay(
                id=location_day_id(user_id, day), tenant_id=customer_id, user_id=user_id, day=day
            )

    def _fence_set(self, customer_id: UUID) -> FenceSet:
        try:
            return self._get(fence_set_id(customer_id), FenceSet, "geofences")
        except NotFound:
            return FenceSet(id=fence_set_id(customer_id), tenant_id=customer_id)

    def _newest_version(self, aggregate_id: UUID) -> int:
        newest = self.recorder.select_events(aggregate_id, desc=True, limit=1)
        return newest[0].originator_version if newest else 0

    def _save_changed(self, *aggregates: Aggregate) -> None:
        changed = [a for a in aggregates if a.pending_events]
        if changed:
            self.save(*changed)


def _merged(spans: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    out: list[tuple[datetime, datetime]] = []
    for a, b in sorted(s for s in spans if s[1] > s[0]):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out
