"""Conference calls under /v1/conferences, host controls, and staff's dial-in number pools.

| route                                              | Picasse staff        | customer_admin | customer_user |
|----------------------------------------------------|----------------------|----------------|---------------|
| POST, GET /v1/conferences[/{id}]                   | no                   | own            | own           |
| PATCH, DELETE /v1/conferences/{id}                 | no                   | own            | its host      |
| POST /v1/conferences/{id}/participants/{pid}/mute… | no                   | own            | its host      |
| POST /v1/conferences/{id}/lock, /end               | no                   | own            | its host      |
| GET /v1/conference-minutes                         | no                   | own            | own           |
| POST, GET, DELETE /v1/dial-in-numbers              | admins and support   | no             | no            |

Participants' addresses and callers' numbers are traffic data; titles are content (R7):
the domain (`Conferences`) shows each only to whom `Viewer` lets see it. PINs are never
stored readable: the host is shown them once, in the answer to scheduling, and
participants get theirs in the invitation.
"""

from __future__ import annotations

from datetime import datetime
from http import HTTPStatus
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter, QueryParameter

from picasse.adapters.http.api import S, _answers, _text, customer_of
from picasse.adapters.http.auth import Caller, allowed, scoped
from picasse.domain.access import Viewer
from picasse.domain.api_keys import Scope
from picasse.domain.conferences import CallRole, Control, InviteeKind
from picasse.domain.conferencing import (
    MAX_PARTICIPANTS,
    ConferenceChange,
    ConferenceDetails,
    Conferences,
    MonthMinutes,
    ParticipantIn,
    ScheduleRequest,
)
from picasse.domain.errors import DomainError

SCOPE = scoped(Scope.CONFERENCES)
MAX_BODY = 64 * 1024
ConferenceId = Annotated[UUID, PathParameter(description="the conference's id")]
ParticipantId = Annotated[
    UUID, PathParameter(description="the participant's id (a caller on the call, from `legs`)")
]
_use = allowed(Viewer.may_use_conferences_of, "a customer's conferences are for its own users")
_staff = allowed(
    lambda viewer, _: viewer.may_manage_dial_in_numbers(),
    "only Picasse's platform admins and support manage dial-in numbers",
)


class Participant(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    user_id: Annotated[
        UUID | None, msgspec.Meta(description="one of the customer's users (invited by e-mail)")
    ] = None
    phone: Annotated[
        str | None, msgspec.Meta(description="an external number, +31 6 … (invited by SMS)")
    ] = None
    email: Annotated[
        str | None, msgspec.Meta(description="an external e-mail address (invited by e-mail)")
    ] = None

    def __repr__(self) -> str:  # numbers and addresses stay out of every log line
        return "Participant(…)"


Participants = Annotated[
    list[Participant],
    msgspec.Meta(
        max_length=MAX_PARTICIPANTS,
        description="who is invited: each names exactly one of user_id, phone, email",
    ),
]


class NewConference(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    title: Annotated[str, msgspec.Meta(description="1 to 200 characters (content: sealed)")]
    start: Annotated[datetime, msgspec.Meta(description="when it starts, with a time zone")]
    duration_minutes: Annotated[int, msgspec.Meta(description="1 to 1440")]
    participants: Participants = []
    host_id: Annotated[
        UUID | None,
        msgspec.Meta(description="the host, one of the customer's users; default: the caller"),
    ] = None

    def __repr__(self) -> str:
        return f"NewConference({len(self.participants)} participants)"


class ConferencePatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    title: Annotated[str | None, msgspec.Meta(description="a new title")] = None
    start: Annotated[datetime | None, msgspec.Meta(description="a new start")] = None
    duration_minutes: Annotated[int | None, msgspec.Meta(description="a new duration")] = None
    participants: (
        Annotated[
            list[Participant],
            msgspec.Meta(max_length=MAX_PARTICIPANTS, description="the new list of participants"),
        ]
        | None
    ) = None

    def __repr__(self) -> str:
        return "ConferencePatch(…)"


class ScheduledOut(msgspec.Struct, frozen=True):
    conference_id: Annotated[UUID, msgspec.Meta(description="the new conference's id")]
    number: Annotated[str, msgspec.Meta(description="the dial-in number callers call")]
    participant_pin: Annotated[
        str | None,
        msgspec.Meta(description="the participants' PIN, shown to the host only, this once"),
    ]
    host_pin: Annotated[
        str | None, msgspec.Meta(description="the host's PIN, shown to the host only, this once")
    ]


class InviteeOut(msgspec.Struct, frozen=True):
    kind: Annotated[InviteeKind, msgspec.Meta(description="user, phone or email")]
    user_id: Annotated[UUID | None, msgspec.Meta(description="the user, for kind user")]
    address: Annotated[
        str | None,
        msgspec.Meta(description="the number or address; None for users and once erased"),
    ]


class LegOut(msgspec.Struct, frozen=True):
    id: Annotated[UUID, msgspec.Meta(description="the participant id host controls take")]
    role: Annotated[CallRole, msgspec.Meta(description="host or participant")]
    caller: Annotated[str | None, msgspec.Meta(description="the caller's number; None once erased")]
    joined_at: Annotated[str | None, msgspec.Meta(description="when they joined (provider's time)")]
    left_at: Annotated[
        str | None, msgspec.Meta(description="when they left; None while on the call")
    ]
    minutes: Annotated[int | None, msgspec.Meta(description="their minutes on the call, once left")]
    muted: Annotated[bool, msgspec.Meta(description="whether the host muted them")]


class ConferenceOut(msgspec.Struct, frozen=True):
    id: Annotated[UUID, msgspec.Meta(description="the conference's id")]
    title: Annotated[str | None, msgspec.Meta(description="its title; None once erased")]
    start: Annotated[datetime, msgspec.Meta(description="when it starts")]
    duration_minutes: Annotated[int, msgspec.Meta(description="how long it is planned for")]
    host_id: Annotated[UUID, msgspec.Meta(description="the host, one of the customer's users")]
    number: Annotated[str, msgspec.Meta(description="the dial-in number")]
    status: Annotated[str, msgspec.Meta(description="scheduled, running, ended or cancelled")]
    locked: Annotated[bool, msgspec.Meta(description="locked: nobody else is admitted")]
    participants: Annotated[list[InviteeOut], msgspec.Meta(description="who is invited")]
    legs: Annotated[list[LegOut], msgspec.Meta(description="who called in, joined and left")]
    minutes: Annotated[int, msgspec.Meta(description="participant minutes of the call so far")]
    recordings: Annotated[int, msgspec.Meta(description="recordings the provider holds of it")]


class MinutesOut(msgspec.Struct, frozen=True):
    month: Annotated[str, msgspec.Meta(description="YYYY-MM, the month the calls ended in")]
    minutes: Annotated[int, msgspec.Meta(description="participant minutes of those calls")]
    conferences: Annotated[int, msgspec.Meta(description="how many calls ended that month")]


class NewDialInNumber(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    customer_id: Annotated[UUID, msgspec.Meta(description="whose pool the number joins")]
    number: Annotated[str, msgspec.Meta(description="the platform's number, +31 20 …")]


class DialInNumberOut(msgspec.Struct, frozen=True):
    customer_id: Annotated[UUID, msgspec.Meta(description="whose pool it is in")]
    number: Annotated[str, msgspec.Meta(description="the number, E.164")]


def _participants(given: list[Participant]) -> list[ParticipantIn]:
    return [ParticipantIn(user_id=p.user_id, phone=p.phone, email=p.email) for p in given]


def _out(c: ConferenceDetails) -> ConferenceOut:
    return ConferenceOut(
        id=c.id, title=_text(c.title), start=c.start, duration_minutes=c.duration_minutes,
        host_id=c.host_id, number=c.number, status=c.status, locked=c.locked,
        participants=[
            InviteeOut(kind=i.kind, user_id=i.user_id, address=_text(i.address))
            for i in c.participants
        ],
        legs=[
            LegOut(id=leg.id, role=leg.role, caller=_text(leg.caller),
                   joined_at=_text(leg.joined_at), left_at=_text(leg.left_at),
                   minutes=leg.minutes, muted=leg.muted)
            for leg in c.legs
        ],
        minutes=c.minutes, recordings=c.recordings,
    )  # fmt: skip


def _own(caller: Caller) -> UUID:
    return customer_of(caller, "a customer's conferences are for its own users")


def _conferences(conferences: Conferences | None) -> Conferences:
    if conferences is None:
        raise DomainError("conferences are not served here")
    return conferences


@post(
    "/conferences",
    sync_to_thread=True,
    opt=SCOPE,
    guards=[_use],
    request_max_body_size=MAX_BODY,
    summary="Schedule a conference call",
    description=(
        "Gives it a number of the customer's dial-in pool and two random PINs of 6 to 8"
        " digits (participants' and host's) that no other conference active on that number"
        " at the time holds. Participants and host are invited through the messaging"
        " pipeline (e-mail for users and addresses, SMS for numbers). The PINs are shown"
        " here to the host only; they are stored as keyed HMACs and never again readable."
    ),
    responses=_answers(S.CONFLICT, S.UNPROCESSABLE_ENTITY),
    tags=["conferences"],
)
def schedule_conference(
    data: JSONBody[NewConference],
    caller: NamedDependency[Caller],
    conferences: NamedDependency[Conferences | None],
) -> ScheduledOut:
    scheduled = _conferences(conferences).schedule(
        _own(caller),
        ScheduleRequest(
            title=data.title,
            start=data.start,
            duration_minutes=data.duration_minutes,
            participants=_participants(data.participants),
            host_id=data.host_id,
        ),
        caller.viewer(),
    )
    return ScheduledOut(
        conference_id=scheduled.conference_id,
        number=scheduled.number,
        participant_pin=scheduled.participant_pin,
        host_pin=scheduled.host_pin,
    )


@get(
    "/conferences",
    sync_to_thread=True,
    opt=SCOPE,
    guards=[_use],
    summary="The caller's customer's conferences, past and upcoming",
    description="Latest start first, each with its participants, joins, leaves and minutes.",
    responses=_answers(),
    tags=["conferences"],
)
def list_conferences(
    caller: NamedDependency[Caller], conferences: NamedDependency[Conferences | None]
) -> list[ConferenceOut]:
    found = _conferences(conferences).conferences(_own(caller), caller.viewer())
    return [_out(c) for c in found]


@get(
    "/conferences/{conference_id:uuid}",
    sync_to_thread=True,
    opt=SCOPE,
    guards=[_use],
    summary="One conference with its participants and calls",
    description="Another customer's answers 404.",
    responses=_answers(S.NOT_FOUND),
    tags=["conferences"],
)
def show_conference(
    conference_id: ConferenceId,
    caller: NamedDependency[Caller],
    conferences: NamedDependency[Conferences | None],
) -> ConferenceOut:
    c = _conferences(conferences).conference(_own(caller), conference_id, caller.viewer())
    return _out(c)


@patch(
    "/conferences/{conference_id:uuid}",
    sync_to_thread=True,
    opt=SCOPE,
    guards=[_use],
    request_max_body_size=MAX_BODY,
    summary="Change a conference's title, time or participants",
    description=(
        "Its host or the customer's admins. Everyone invited before or now is told. The"
        " PINs stay unless another conference holds one at the new time (then new ones go"
        " out with the notice)."
    ),
    responses=_answers(S.NOT_FOUND, S.CONFLICT, S.UNPROCESSABLE_ENTITY),
    tags=["conferences"],
)
def change_conference(
    conference_id: ConferenceId,
    data: JSONBody[ConferencePatch],
    caller: NamedDependency[Caller],
    conferences: NamedDependency[Conferences | None],
) -> ConferenceOut:
    app = _conferences(conferences)
    customer_id = _own(caller)
    app.change(
        customer_id,
        conference_id,
        ConferenceChange(
            title=data.title,
            start=data.start,
            duration_minutes=data.duration_minutes,
            participants=_participants(data.participants)
            if data.participants is not None
            else None,
        ),
        caller.viewer(),
    )
    return _out(app.conference(customer_id, conference_id, caller.viewer()))


@delete(
    "/conferences/{conference_id:uuid}",
    sync_to_thread=True,
    opt=SCOPE,
    guards=[_use],
    status_code=HTTPStatus.NO_CONTENT,
    summary="Cancel a conference",
    description=(
        "Its host or the customer's admins, before it starts. Its PINs are freed and the"
        " participants are told."
    ),
    responses=_answers(S.NOT_FOUND, S.CONFLICT),
    tags=["conferences"],
)
def cancel_conference(
    conference_id: ConferenceId,
    caller: NamedDependency[Caller],
    conferences: NamedDependency[Conferences | None],
) -> None:
    _conferences(conferences).cancel(_own(caller), conference_id, caller.viewer())


def _control_route(action: Control) -> Any:
    on_participant = action.on_participant
    path = (
        f"/conferences/{{conference_id:uuid}}/participants/{{participant_id:uuid}}/{action.value}"
        if on_participant
        else f"/conferences/{{conference_id:uuid}}/{action.value}"
    )
    what = {
        Control.MUTE: "Mute a participant",
        Control.UNMUTE: "Unmute a participant",
        Control.REMOVE: "Remove a participant from the call",
        Control.LOCK: "Lock the conference: nobody but the host is admitted any more",
        Control.END: "End the conference for everyone",
    }[action]
    decorate = post(
        path,
        sync_to_thread=True,
        opt=SCOPE,
        guards=[_use],
        status_code=HTTPStatus.NO_CONTENT,
        request_max_body_size=1024,
        summary=what,
        description=(
            "The conference's host or the customer's admins. Goes to the telephony"
            " provider's API, then is recorded as an event; 502 when the provider does not"
            " do it (nothing recorded)."
        ),
        responses=_answers(S.NOT_FOUND, S.CONFLICT, S.BAD_GATEWAY),
        tags=["conferences"],
        name=f"conference-{action.value}",
    )
    if on_participant:

        def on_leg(
            conference_id: ConferenceId,
            participant_id: ParticipantId,
            caller: NamedDependency[Caller],
            conferences: NamedDependency[Conferences | None],
        ) -> None:
            _conferences(conferences).control(
                _own(caller), conference_id, action, caller.viewer(), participant_id
            )

        on_leg.__name__ = f"conference_participant_{action.value}"
        return decorate(on_leg)

    def on_conference(
        conference_id: ConferenceId,
        caller: NamedDependency[Caller],
        conferences: NamedDependency[Conferences | None],
    ) -> None:
        _conferences(conferences).control(_own(caller), conference_id, action, caller.viewer())

    on_conference.__name__ = f"conference_{action.value}"
    return decorate(on_conference)


@get(
    "/conference-minutes",
    sync_to_thread=True,
    opt=SCOPE,
    guards=[_use],
    summary="Conference minutes per month, for billing",
    description=(
        "Participant minutes of the customer's calls per month they ended in. Counts only:"
        " they stay when retention has erased the call records' numbers and times."
    ),
    responses=_answers(),
    tags=["conferences"],
)
def conference_minutes(
    caller: NamedDependency[Caller], conferences: NamedDependency[Conferences | None]
) -> list[MinutesOut]:
    found: list[MonthMinutes] = _conferences(conferences).minutes(_own(caller))
    return [MinutesOut(month=m.month, minutes=m.minutes, conferences=m.conferences) for m in found]


@post(
    "/dial-in-numbers",
    sync_to_thread=True,
    opt=SCOPE,
    guards=[_staff],
    request_max_body_size=1024,
    status_code=HTTPStatus.CREATED,
    summary="Add a number to a customer's dial-in pool (staff)",
    description="A number is in one customer's pool at most (409 otherwise).",
    responses=_answers(S.NOT_FOUND, S.CONFLICT, S.UNPROCESSABLE_ENTITY),
    tags=["conferences"],
)
def add_dial_in_number(
    data: JSONBody[NewDialInNumber],
    caller: NamedDependency[Caller],
    conferences: NamedDependency[Conferences | None],
) -> DialInNumberOut:
    number = _conferences(conferences).add_dial_in_number(
        data.customer_id, data.number, caller.viewer()
    )
    return DialInNumberOut(customer_id=data.customer_id, number=number)


@get(
    "/dial-in-numbers",
    sync_to_thread=True,
    opt=SCOPE,
    guards=[_staff],
    summary="A customer's dial-in pool (staff)",
    description="Its numbers in the order they were added; conferences use the first.",
    responses=_answers(),
    tags=["conferences"],
)
def list_dial_in_numbers(
    customer_id: Annotated[UUID, QueryParameter(description="whose pool")],
    conferences: NamedDependency[Conferences | None],
) -> list[DialInNumberOut]:
    numbers = _conferences(conferences).dial_in_numbers(customer_id)
    return [DialInNumberOut(customer_id=customer_id, number=n) for n in numbers]


@delete(
    "/dial-in-numbers/{number:str}",
    sync_to_thread=True,
    opt=SCOPE,
    guards=[_staff],
    status_code=HTTPStatus.NO_CONTENT,
    summary="Take a number out of its customer's pool (staff)",
    description="Conferences scheduled on it keep it; new ones get another of the pool.",
    responses=_answers(S.NOT_FOUND, S.UNPROCESSABLE_ENTITY),
    tags=["conferences"],
)
def remove_dial_in_number(
    number: Annotated[str, PathParameter(description="the number, E.164 (+3120…)")],
    caller: NamedDependency[Caller],
    conferences: NamedDependency[Conferences | None],
) -> None:
    _conferences(conferences).remove_dial_in_number(number, caller.viewer())


ROUTES: tuple[Any, ...] = (
    schedule_conference,
    list_conferences,
    show_conference,
    change_conference,
    cancel_conference,
    *(_control_route(action) for action in Control),
    conference_minutes,
    add_dial_in_number,
    list_dial_in_numbers,
    remove_dial_in_number,
)
STRICT_BODIES = (NewConference, ConferencePatch, Participant, NewDialInNumber)
