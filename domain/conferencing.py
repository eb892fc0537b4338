"""Conferencing: the commands and queries for scheduling conferences, admitting callers,
recording what the telephony provider reports, and the host's controls."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, Protocol
from uuid import UUID, uuid4

import msgspec
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from picasse.domain.access import PICASSE_SENDER, Viewer
from picasse.domain.application import PicasseApplication, Pseudonyms, projected
from picasse.domain.clock import Clock
from picasse.domain.conferences import (
    EARLY_ENTRY,
    LONGEST_CALL,
    CallRole,
    Conference,
    Control,
    DialInNumber,
    DialInPool,
    Invitee,
    InviteeKind,
    PinClaim,
    PinTaken,
    WrongPins,
    dial_in_number_id,
    dial_in_pool_id,
)
from picasse.domain.customers import Customer, Subscription
from picasse.domain.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound
from picasse.domain.messages import Catalogue, catalogue_id, traffic_month
from picasse.domain.messaging import Messages, SendRequest
from picasse.domain.personal import Erased
from picasse.domain.users import User
from picasse.domain.values import EmailAddress, PhoneNumber, single_line

MAX_TITLE = 200
MAX_PARTICIPANTS = 100
MAX_DURATION_MINUTES = 24 * 60
MAX_AHEAD = timedelta(days=366)
PIN_DRAWS = 20  # random PINs tried before giving up (two in a row taken is already rare)
SAVE_RETRIES = 3  # a concurrent save of the same PIN claim: draw and try again
CATALOGUE = "conferences"


class TelephonyUnavailable(DomainError):
    """The telephony provider could not be reached or refused the request; nothing recorded."""

    code = "telephony-unavailable"


class Replayed(Conflict):
    """The provider's report was taken already: a replay records nothing."""

    code = "replayed"


class Telephony(Protocol):
    """The telephony provider's API, as the domain needs it (adapters/providers/telephony.py)."""

    def control(self, conference_id: UUID, action: Control, call: str | None) -> None:
        """Mute, unmute or remove a call, or lock or end the conference; raises
        TelephonyUnavailable when the provider does not do it."""

    def delete_recording(self, reference: str) -> bool:
        """Asks the provider to delete a recording; True when it confirmed."""


def random_pin() -> str:
    """6 to 8 random digits."""
    length = 6 + secrets.randbelow(3)
    return "".join(str(secrets.randbelow(10)) for _ in range(length))


class ParticipantIn(msgspec.Struct, frozen=True, kw_only=True):
    """A participant as a caller gives one: exactly one of user_id, phone, email."""

    user_id: UUID | None = None
    phone: str | None = None
    email: str | None = None


class ScheduleRequest(msgspec.Struct, frozen=True, kw_only=True):
    title: str
    start: datetime
    duration_minutes: int
    participants: list[ParticipantIn] = []
    host_id: UUID | None = None  # default: the user who schedules


class ConferenceChange(msgspec.Struct, frozen=True, kw_only=True):
    title: str | None = None
    start: datetime | None = None
    duration_minutes: int | None = None
    participants: list[ParticipantIn] | None = None


class Scheduled(msgspec.Struct, frozen=True):
    """A scheduled conference and, for its host only, the PINs (shown this once)."""

    conference_id: UUID
    number: str
    participant_pin: str | None
    host_pin: str | None


class LegDetails(msgspec.Struct, frozen=True):
    id: UUID
    role: CallRole
    caller: str | Erased | None  # None: the viewer is not entitled to traffic data
    joined_at: str | Erased | None
    left_at: str | Erased | None
    minutes: int | None  # on the call until it left; None while still on it
    muted: bool


class InviteeDetails(msgspec.Struct, frozen=True):
    kind: InviteeKind
    user_id: UUID | None
    address: str | Erased | None


class ConferenceDetails(msgspec.Struct, frozen=True):
    id: UUID
    customer_id: UUID
    title: str | Erased | None  # None: not for this viewer (content, R7)
    start: datetime
    duration_minutes: int
    host_id: UUID
    number: str
    status: str  # scheduled, running, ended, cancelled
    locked: bool
    participants: list[InviteeDetails]
    legs: list[LegDetails]
    minutes: int
    recordings: int


class MonthMinutes(msgspec.Struct, frozen=True):
    month: str
    minutes: int
    conferences: int


class Admission(msgspec.Struct, frozen=True):
    """The answer to a caller dialling in with a PIN."""

    admit: bool
    role: CallRole | None = None
    conference_id: UUID | None = None
    participant_id: UUID | None = None
    reason: str | None = None  # why not: wrong-pin, rate-limited, locked


def _title(text: str) -> str:
    title = " ".join(single_line(text, "title").split())
    if not title or len(title) > MAX_TITLE:
        raise InvalidInput(f"title: 1 to {MAX_TITLE} characters", field="title")
    return title


def _duration(minutes: int) -> int:
    if not 1 <= minutes <= MAX_DURATION_MINUTES:
        raise InvalidInput(
            f"duration_minutes: 1 to {MAX_DURATION_MINUTES}", field="duration_minutes"
        )
    return minutes


def _aware(moment: datetime, field: str) -> datetime:
    if moment.tzinfo is None:
        raise InvalidInput(f"{field}: give a time zone (e.g. Z or +01:00)", field=field)
    return moment


class Conferences(PicasseApplication):
    """The whole surface of conferencing: the CLI, the API, the webhook and tests come here."""

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        clock: Clock,
        pseudonyms: Pseudonyms,
        messages: Messages | None,  # None: a process that only erases (no invitations)
        telephony: Telephony | None = None,
        pins: Callable[[], str] = random_pin,
        sharing: PicasseApplication | None = None,
    ) -> None:
        super().__init__(env, sharing=sharing, clock=clock)
        self.clock = clock
        self.pseudonyms = pseudonyms
        self.messages = messages
        self.telephony = telephony
        self.pins = pins

    # ------------------------------------------------------------ dial-in numbers (staff)

    def add_dial_in_number(self, customer_id: UUID, number: str, viewer: Viewer) -> str:
        if not viewer.may_manage_dial_in_numbers():
            raise Forbidden("only Picasse's platform admins and support manage dial-in numbers")
        e164 = PhoneNumber.parse(number, field="number").e164
        customer = self._get(customer_id, Customer, "customer")
        if customer.terminated:
            raise Conflict(f"customer {customer_id} is terminated")
        pool = self._pool(customer_id)
        try:
            claim = self._get(dial_in_number_id(e164), DialInNumber, "dial-in number")
        except NotFound:
            claim = DialInNumber(id=dial_in_number_id(e164), number=e164, customer_id=customer_id)
        else:
            if claim.customer_id == customer_id:
                return e164
            if claim.customer_id is not None:
                raise Conflict(f"number: {e164} is in another customer's pool", field="number")
            claim.reassign(customer_id)
        pool.add(e164)
        self.save(claim, pool)
        return e164

    def remove_dial_in_number(self, number: str, viewer: Viewer) -> None:
        if not viewer.may_manage_dial_in_numbers():
            raise Forbidden("only Picasse's platform admins and support manage dial-in numbers")
        e164 = PhoneNumber.parse(number, field="number").e164
        claim = self._get(dial_in_number_id(e164), DialInNumber, "dial-in number")
        if claim.customer_id is None:
            raise NotFound(f"dial-in number {e164} not found")
        pool = self._pool(claim.customer_id)
        pool.remove(e164)
        claim.release()
        self.save(claim, pool)

    def dial_in_numbers(self, customer_id: UUID) -> list[str]:
        try:
            return list(self._get(dial_in_pool_id(customer_id), DialInPool, "pool").numbers)
        except NotFound:
            return []

    def _pool(self, customer_id: UUID) -> DialInPool:
        try:
            return self._get(dial_in_pool_id(customer_id), DialInPool, "pool")
        except NotFound:
            return DialInPool(id=dial_in_pool_id(customer_id), tenant_id=customer_id)

    # ------------------------------------------------------------ scheduling

    def schedule(self, customer_id: UUID, request: ScheduleRequest, viewer: Viewer) -> Scheduled:
        """Schedules the conference on a number of the customer's pool with two new PINs,
        and invites its participants (and its host) through the messaging pipeline."""
        if not viewer.may_use_conferences_of(customer_id):
            raise Forbidden("a customer's conferences are for its own users")
        title = _title(request.title)
        start = _aware(request.start, "start")
        duration = _duration(request.duration_minutes)
        now = self.clock.now()
        if start + timedelta(minutes=duration) <= now:
            raise InvalidInput("start: the conference would be over already", field="start")
        if start > now + MAX_AHEAD:
            raise InvalidInput("start: at most a year ahead", field="start")
        self._customer(customer_id)
        host_id = request.host_id or viewer.user_id
        if host_id is None:
            raise InvalidInput(
                "host_id: name the host (one of the customer's users)", field="host_id"
            )
        self._user_of(customer_id, host_id, "host_id")
        invitees = self._invitees(customer_id, request.participants)
        if self.messages is None:
            raise Conflict("conferences cannot be scheduled here: nothing sends invitations")
        numbers = self.dial_in_numbers(customer_id)
        if not numbers:
            raise Conflict("this customer has no dial-in number: ask Picasse support for one")
        month = traffic_month(now)
        opens, closes = start - EARLY_ENTRY, start + LONGEST_CALL
        for _ in range(SAVE_RETRIES):
            number = numbers[0]
            ident = uuid4()
            (p_pin, p_claim), (h_pin, h_claim) = self._draw_pins(number, ident, opens, closes, 2)
            conference = Conference(
                id=ident, tenant_id=customer_id, month=month, title=title, start=start,
                duration_minutes=duration, host_id=host_id, invitees=invitees, number=number,
                participant_pin=p_claim.id, host_pin=h_claim.id, scheduled_by=viewer.user_id,
            )  # fmt: skip
            try:
                self.save(conference, p_claim, h_claim, self._listed(customer_id, conference.id))
            except IntegrityError:
                continue  # another conference took one of the PINs meanwhile: draw again
            self._invite(conference, "invitation", p_pin, h_pin)
            host_sees = viewer.user_id == host_id
            return Scheduled(
                conference_id=conference.id,
                number=number,
                participant_pin=p_pin if host_sees else None,
                host_pin=h_pin if host_sees else None,
            )
        raise Conflict("the PINs were taken by conferences scheduled at the same moment; try again")

    def _draw_pins(
        self,
        number: str,
        conference_id: UUID,
        opens: datetime,
        closes: datetime,
        count: int,
        avoid: frozenset[UUID] = frozenset(),
    ) -> list[tuple[str, PinClaim]]:
        """`count` PINs no other conference active in the window holds on the number, each
        with its claim (unsaved); distinct from each other and from the claims in `avoid`
        (the conference's own other PIN, on a change)."""
        drawn: list[tuple[str, PinClaim]] = []
        for _ in range(PIN_DRAWS * count):
            pin = self.pins()
            if not (pin.isdigit() and 6 <= len(pin) <= 8):
                raise ValueError("a PIN is 6 to 8 digits")
            ident = self._pin_claim_id(number, pin)
            if ident in avoid or any(claim.id == ident for _, claim in drawn):
                continue
            claim = self._pin_claim(ident)
            try:
                claim.claim(conference_id, opens, closes)
            except PinTaken:
                continue
            drawn.append((pin, claim))
            if len(drawn) == count:
                return drawn
        raise Conflict("no free PIN was found on the dial-in number; try again")

    def _pin_claim_id(self, number: str, pin: str) -> UUID:
        return self.pseudonyms.pseudonym("conference-pin", f"{number}/{pin}")

    def _pin_claim(self, ident: UUID) -> PinClaim:
        try:
            return self._get(ident, PinClaim, "PIN")
        except NotFound:
            return PinClaim(id=ident)

    def change(
        self, customer_id: UUID, conference_id: UUID, change: ConferenceChange, viewer: Viewer
    ) -> None:
        """Changes title, time or participants; everyone invited (before or now) hears of it.
        The PINs stay, unless another conference holds one at the new time, or participants
        were added (their PIN cannot be told again: only its HMAC is kept): then new ones go
        out with the notice."""
        conference = self._own(customer_id, conference_id, viewer)
        self._guard_host(conference, viewer)
        title = _title(change.title) if change.title is not None else conference.title
        if isinstance(title, Erased):
            raise Conflict("the conference's title was erased: give a new one", field="title")
        start = _aware(change.start, "start") if change.start is not None else conference.start
        duration = (
            _duration(change.duration_minutes)
            if change.duration_minutes is not None
            else conference.duration_minutes
        )
        if change.start is not None and start + timedelta(minutes=duration) <= self.clock.now():
            raise InvalidInput("start: the conference would be over already", field="start")
        invitees = (
            self._invitees(customer_id, change.participants)
            if change.participants is not None
            else [i for i in conference.invitees if not isinstance(i.address, Erased)]
        )
        before = list(conference.invitees)
        opens, closes = start - EARLY_ENTRY, start + LONGEST_CALL
        claims: list[PinClaim] = []
        kept: list[tuple[str | None, UUID]] = []  # per PIN: the new PIN (if drawn), its claim
        taken = {conference.participant_pin, conference.host_pin}  # never drawn again here
        # Nobody can tell a newcomer the participants' PIN (only its HMAC is kept): a new one.
        newcomers = any(i not in before for i in invitees)
        for current in (conference.participant_pin, conference.host_pin):
            claim = self._get(current, PinClaim, "PIN")
            claims.append(claim)
            renew = newcomers and current == conference.participant_pin
            if not renew:
                try:
                    claim.claim(conference.id, opens, closes)
                except PinTaken:  # another conference holds it at the new time
                    renew = True
            if not renew:
                kept.append((None, current))
                continue
            claim.release(conference.id)
            ((pin, fresh),) = self._draw_pins(
                conference.number, conference.id, opens, closes, 1, avoid=frozenset(taken)
            )
            taken.add(fresh.id)
            claims.append(fresh)
            kept.append((pin, fresh.id))
        (p_pin, p_claim), (h_pin, h_claim) = kept
        conference.reschedule(
            traffic_month(self.clock.now()), title, start, duration, invitees, p_claim, h_claim
        )
        self.save(conference, *claims)
        self._invite(conference, "change", p_pin, h_pin)
        removed = [i for i in before if i not in invitees]
        if removed:  # told, without the PIN
            self._invite(conference, "removal", None, None, to=removed)

    def cancel(self, customer_id: UUID, conference_id: UUID, viewer: Viewer) -> None:
        conference = self._own(customer_id, conference_id, viewer)
        self._guard_host(conference, viewer)
        conference.cancel(viewer.user_id)
        self.save(conference, *self._released(conference))
        self._invite(conference, "cancellation", None, None)

    def _released(self, conference: Conference) -> list[PinClaim]:
        claims = [
            self._get(ident, PinClaim, "PIN")
            for ident in (conference.participant_pin, conference.host_pin)
        ]
        for claim in claims:
            claim.release(conference.id)
        return claims

    def _invitees(self, customer_id: UUID, given: Iterable[ParticipantIn]) -> list[Invitee]:
        invitees: list[Invitee] = []
        seen: set[str] = set()
        for index, participant in enumerate(given):
            field = f"participants[{index}]"
            named = [v for v in (participant.user_id, participant.phone, participant.email) if v]
            if len(named) != 1:
                raise InvalidInput(f"{field}: give one of user_id, phone, email", field=field)
            if participant.user_id is not None:
                self._user_of(customer_id, participant.user_id, field)
                invitee = Invitee(kind=InviteeKind.USER, user_id=participant.user_id)
                key = str(participant.user_id)
            elif participant.phone is not None:
                e164 = PhoneNumber.parse(participant.phone, field=field).e164
                invitee, key = Invitee(kind=InviteeKind.PHONE, address=e164), e164
            else:
                address = EmailAddress.parse(participant.email or "", field=field).address
                invitee, key = Invitee(kind=InviteeKind.EMAIL, address=address), address.lower()
            if key not in seen:
                seen.add(key)
                invitees.append(invitee)
        if len(invitees) > MAX_PARTICIPANTS:
            raise InvalidInput(f"participants: at most {MAX_PARTICIPANTS}", field="participants")
        return invitees

    def _user_of(self, customer_id: UUID, user_id: UUID, field: str) -> User:
        try:
            user = self._get(user_id, User, "user")
        except NotFound:
            raise InvalidInput(f"{field}: no such user of this customer", field=field) from None
        if user.customer_id != customer_id or user.disabled:
            raise InvalidInput(f"{field}: no such user of this customer", field=field)
        return user

    def _customer(self, customer_id: UUID) -> Customer:
        customer = self._get(customer_id, Customer, "customer")
        if customer.subscription is not Subscription.ACTIVE:
            raise Conflict(f"customer {customer_id} has no active subscription")
        return customer

    def _listed(self, customer_id: UUID, ident: UUID) -> Catalogue:
        try:
            catalogue = self._get(catalogue_id(customer_id, CATALOGUE), Catalogue, CATALOGUE)
        except NotFound:
            catalogue = Catalogue(
                id=catalogue_id(customer_id, CATALOGUE), tenant_id=customer_id, of=CATALOGUE
            )
        catalogue.add(ident)
        return catalogue

    # ------------------------------------------------------------ invitations

    def _invite(
        self,
        conference: Conference,
        what: str,
        participant_pin: str | None,
        host_pin: str | None,
        to: list[Invitee] | None = None,
    ) -> None:
        """Mails (or texts) the participants (or `to`) through the messaging pipeline; the
        host gets the host PIN apart. Sent as Picasse (`PICASSE_SENDER`): nobody reads them
        back."""
        emails: list[str] = []
        phones: list[str] = []
        for invitee in conference.invitees if to is None else to:
            if invitee.kind is InviteeKind.USER and invitee.user_id is not None:
                address = self._user_email(invitee.user_id)
                if address:
                    emails.append(address)
            elif isinstance(invitee.address, str):
                (phones if invitee.kind is InviteeKind.PHONE else emails).append(invitee.address)
        if self.messages is None:
            return
        title = conference.title if isinstance(conference.title, str) else "conference"
        when = f"{conference.start:%Y-%m-%d %H:%M} UTC, {conference.duration_minutes} minutes"
        head = {
            "invitation": f"You are invited to the conference call {title!r}",
            "change": f"The conference call {title!r} has changed",
            "cancellation": f"The conference call {title!r} is cancelled",
            "removal": f"You are no longer invited to the conference call {title!r}",
        }[what]
        if what in ("cancellation", "removal"):
            body = f"{head} ({when})."
        else:
            pin = (
                f"PIN: {participant_pin}"
                if participant_pin
                else "PIN: unchanged (the one you were sent)"
            )
            body = f"{head}.\nWhen: {when}\nDial in: {conference.number}\n{pin}"
        subject = head[:200]
        customer_id = conference.tenant_id
        if emails:
            self.messages.send(
                customer_id,
                SendRequest(channel="email", to=emails, body=body, subject=subject),
                requested_by=PICASSE_SENDER,
            )
        if phones:
            self.messages.send(
                customer_id,
                SendRequest(channel="sms", to=phones, body=body),
                requested_by=PICASSE_SENDER,
            )
        host_mail = self._user_email(conference.host_id)
        if host_mail and to is None and what != "cancellation" and (host_pin or participant_pin):
            self.messages.send(
                customer_id,
                SendRequest(
                    channel="email",
                    to=[host_mail],
                    subject=f"Host PINs for {title!r}"[:200],
                    body=(
                        f"You host the conference call {title!r}.\nWhen: {when}\n"
                        f"Dial in: {conference.number}\n"
                        f"Host PIN: {host_pin or 'unchanged'}\n"
                        f"Participant PIN: {participant_pin or 'unchanged'}"
                    ),
                ),
                requested_by=PICASSE_SENDER,
            )

    def _user_email(self, user_id: UUID) -> str | None:
        try:
            user = self._get(user_id, User, "user")
        except NotFound:
            return None
        return user.email if isinstance(user.email, str) and not user.disabled else None

    # ------------------------------------------------------------ reading

    def conference(
        self, customer_id: UUID, conference_id: UUID, viewer: Viewer
    ) -> ConferenceDetails:
        return self._details(self._own(customer_id, conference_id, viewer), viewer)

    def conferences(self, customer_id: UUID, viewer: Viewer) -> list[ConferenceDetails]:
        """The customer's conferences, soonest start last (upcoming first, then past)."""
        if not viewer.may_use_conferences_of(customer_id):
            raise Forbidden("a customer's conferences are for its own users")
        found = [self._details(conference, viewer) for conference in self._all_of(customer_id)]
        return sorted(found, key=lambda c: c.start, reverse=True)

    def _all_of(self, customer_id: UUID) -> list[Conference]:
        try:
            ids = self._get(catalogue_id(customer_id, CATALOGUE), Catalogue, CATALOGUE).ids
        except NotFound:
            return []
        return [self._get(ident, Conference, "conference") for ident in ids]

    def minutes(self, customer_id: UUID) -> list[MonthMinutes]:
        """Conference minutes per month (the month each call ended), for billing."""
        per_month: dict[str, list[int]] = {}
        for conference in self._all_of(customer_id):
            if conference.ended_at is not None:
                totals = per_month.setdefault(traffic_month(conference.ended_at), [0, 0])
                totals[0] += conference.minutes
                totals[1] += 1
        return [
            MonthMinutes(month=m, minutes=t[0], conferences=t[1])
            for m, t in sorted(per_month.items())
        ]

    def _details(self, conference: Conference, viewer: Viewer) -> ConferenceDetails:
        now = self.clock.now()
        traffic = viewer.sees_traffic_of(conference.tenant_id)
        if conference.cancelled:
            status = "cancelled"
        elif conference.ended_at is not None:
            status = "ended"
        elif conference.started_at is not None:
            status = "running"
        elif now >= conference.closes:
            status = "ended"
        else:
            status = "scheduled"
        return ConferenceDetails(
            id=conference.id,
            customer_id=conference.tenant_id,
            title=conference.title if viewer.may_read_content_of(conference.tenant_id) else None,
            start=conference.start,
            duration_minutes=conference.duration_minutes,
            host_id=conference.host_id,
            number=conference.number,
            status=status,
            locked=conference.locked,
            participants=[
                InviteeDetails(
                    kind=i.kind, user_id=i.user_id, address=i.address if traffic else None
                )
                for i in conference.invitees
            ],
            legs=[
                LegDetails(
                    id=leg.id,
                    role=leg.role,
                    caller=leg.caller if traffic else None,
                    joined_at=leg.joined_at if traffic else None,
                    left_at=leg.left_at if traffic else None,
                    minutes=leg.minutes,
                    muted=leg.muted,
                )
                for leg in conference.legs.values()
            ],
            minutes=conference.minutes,
            recordings=len(conference.recordings),
        )

    def _own(self, customer_id: UUID, conference_id: UUID, viewer: Viewer) -> Conference:
        if not viewer.may_use_conferences_of(customer_id):
            raise Forbidden("a customer's conferences are for its own users")
        conference = self._get(conference_id, Conference, "conference")
        if conference.tenant_id != customer_id:
            raise NotFound(f"conference {conference_id} not found")
        return conference

    @staticmethod
    def _guard_host(conference: Conference, viewer: Viewer) -> None:
        if not viewer.may_host(conference.tenant_id, conference.host_id):
            raise Forbidden("only the conference's host and the customer's admins may do this")

    # ------------------------------------------------------------ the provider's reports

    def admit(
        self, number: str, caller: str, pin: str, call: str, provider_event: str
    ) -> Admission:
        """A caller dialled `number` and entered `pin`: whether to admit them, and as what.
        Wrong PINs count per caller and number; past the limit even a right one is refused
        until the period has passed."""
        now = self.clock.now()
        e164 = PhoneNumber.parse(number, field="number").e164
        limiter_id = self.pseudonyms.pseudonym("conference-wrong-pins", f"{e164}/{caller}")
        try:
            limiter: WrongPins | None = self._get(limiter_id, WrongPins, "limit")
        except NotFound:
            limiter = None
        if limiter is not None and provider_event in limiter.provider_events:
            raise Replayed("this report was taken already")
        if limiter is not None and limiter.limited(now):
            return Admission(admit=False, reason="rate-limited")
        held = None
        if pin.isdigit() and 6 <= len(pin) <= 8:
            try:
                claim = self._get(self._pin_claim_id(e164, pin), PinClaim, "PIN")
            except NotFound:
                claim = None
            held = claim.holder_at(now) if claim is not None else None
        conference = self._get(held, Conference, "conference") if held else None
        role = conference.role_of_pin(self._pin_claim_id(e164, pin)) if conference else None
        if conference is None or role is None or not conference.active_at(now):
            limiter = limiter or WrongPins(id=limiter_id)
            limiter.wrong_pin(now, provider_event)
            self.save(limiter)
            return Admission(admit=False, reason="wrong-pin")
        if conference.took(provider_event):
            raise Replayed("this report was taken already")
        if conference.locked and role is not CallRole.HOST:
            return Admission(admit=False, reason="locked", conference_id=conference.id)
        leg = conference.admit(traffic_month(now), provider_event, call, caller, role)
        self.save(conference)
        return Admission(admit=True, role=role, conference_id=conference.id, participant_id=leg)

    def record_call_event(
        self, conference_id: UUID, kind: str, *, provider_event: str, call: str = "",
        at: str = "", recording: str = "",
    ) -> bool:  # fmt: skip
        """Records joined, left, started, ended or recording; False if the report was
        taken already (a replay: nothing recorded)."""
        conference = self._get(conference_id, Conference, "conference")
        if conference.took(provider_event):
            return False
        now = self.clock.now()
        month = traffic_month(now)
        if kind == "joined":
            conference.join(month, provider_event, call, at, now)
        elif kind == "left":
            conference.leave(month, provider_event, call, at, now)
        elif kind == "started":
            conference.begin(month, provider_event, at, now)
        elif kind == "ended":
            conference.end(month, provider_event, at, now)
        elif kind == "recording":
            conference.record_recording(month, provider_event, recording)
        else:
            raise InvalidInput(f"type: unknown report {kind!r}", field="type")
        if kind == "ended":
            self.save(conference, *self._released(conference))
        else:
            self.save(conference)
        return True

    # ------------------------------------------------------------ host controls

    def control(
        self,
        customer_id: UUID,
        conference_id: UUID,
        action: Control,
        viewer: Viewer,
        participant_id: UUID | None = None,
    ) -> None:
        """Asks the provider to do it, then records that it was done."""
        conference = self._own(customer_id, conference_id, viewer)
        self._guard_host(conference, viewer)
        conference.control(action, participant_id, viewer.user_id)  # checks before the call
        if self.telephony is None:
            raise TelephonyUnavailable("no telephony provider is configured")
        call = conference.legs[participant_id].call if participant_id is not None else None
        self.telephony.control(conference.id, action, call)
        self.save(conference)

    # ------------------------------------------------------------ erasure

    def delete_recordings(self, customer_id: UUID, reason: str, month: str | None = None) -> int:
        """Before the keys that seal them go: asks the provider to delete the customer's
        recordings (of conferences recorded in `month`, or all), and records the request."""
        asked = 0
        for conference in self._all_of(customer_id):
            pending = [
                (index, recording.reference)
                for index, recording in enumerate(conference.recordings)
                if not recording.deletion_requested
                and isinstance(recording.reference, str)
                and (month is None or recording.month <= month)
            ]
            if not pending:
                continue
            confirmed = 0
            if self.telephony is not None:
                confirmed = sum(self.telephony.delete_recording(ref) for _, ref in pending)
            conference.recordings_deletion_requested(
                conference.tenant_id, [index for index, _ in pending], confirmed, reason
            )
            self.save(conference)
            asked += len(pending)
        return asked


def conferences_in(repository: Any, customer_id: UUID) -> list[Conference]:
    """A customer's conferences, read through an application's repository (the export's)."""
    try:
        catalogue = repository.get(catalogue_id(customer_id, CATALOGUE), projector_func=projected)
    except AggregateNotFoundError:
        return []
    return [repository.get(ident, projector_func=projected) for ident in catalogue.ids]
