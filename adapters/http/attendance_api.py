"""Geofenced attendance (R8): the service switch, consent, geofences, pings and the attendance view.

| route                                   | staff | customer_admin | customer_user |
|-----------------------------------------|-------|----------------|---------------|
| GET, PUT /v1/attendance/service         | no    | own            | GET           |
| GET, POST, DELETE /v1/location/consent  | no    | self           | self          |
| POST /v1/location/pings                 | no    | own customer's | self          |
| GET /v1/geofences[/{id}]                | no    | own            | own           |
| POST, PUT, DELETE /v1/geofences…        | no    | own            | no            |
| GET /v1/attendance                      | no    | own            | no            |

Pings are sent with the user's own session (that user's pings only) or an API key with
the `location` scope (any of the customer's users). Geofences need the `sites` scope.
No ping's coordinates are ever logged or echoed: a refusal names indexes and fields.
"""

from __future__ import annotations

from datetime import date, datetime
from http import HTTPStatus
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from litestar import delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter, QueryParameter

from picasse.adapters.http.api import S, _answers, customer_of
from picasse.adapters.http.auth import Caller, allowed, scoped
from picasse.domain.access import Viewer
from picasse.domain.api_keys import Scope
from picasse.domain.attendance import MAX_PINGS, Attendance, PingIn
from picasse.domain.errors import InvalidInput
from picasse.domain.geofences import (
    Circle,
    Fence,
    Polygon,
    Shape,
)
from picasse.domain.sites import DEFAULT_DWELL, DEFAULT_HYSTERESIS_M

LOCATION = scoped(Scope.LOCATION)
SITES = scoped(Scope.SITES)
MAX_BODY = 256 * 1024
MAX_PINGS_BODY = 512 * 1024
FenceId = Annotated[UUID, PathParameter(description="the geofence's id")]
_use = allowed(Viewer.may_use_attendance, "attendance is for a customer's own users")
_admin = allowed(Viewer.may_administer, "only a customer's admins manage attendance")
_read_sites = allowed(Viewer.sees_sites_of, "a customer's geofences are for its own users")
_see = allowed(Viewer.sees_attendance_of, "attendance is for a customer's admins")


def _own(caller: Caller) -> UUID:
    return customer_of(caller, "attendance is for a customer's own users")


# ------------------------------------------------------------------ the switch


class ServiceState(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    on: Annotated[bool, msgspec.Meta(description="whether the attendance service is on")]


@get(
    "/attendance/service",
    sync_to_thread=True,
    opt=LOCATION,
    guards=[_use],
    summary="Whether the caller's customer has the attendance service on",
    description="Off until a customer admin switches it on; pings are refused while off.",
    responses=_answers(),
    tags=["attendance"],
)
def show_service(
    caller: NamedDependency[Caller], attendance: NamedDependency[Attendance]
) -> ServiceState:
    return ServiceState(on=attendance.is_on(_own(caller)))


@put(
    "/attendance/service",
    sync_to_thread=True,
    opt=LOCATION,
    guards=[_admin],
    request_max_body_size=1024,
    summary="Switch the attendance service on or off",
    description=(
        "Location data is processed only while it is on and a user consents (R8). Switching"
        " it off refuses pings from then on; consents and records stay."
    ),
    responses=_answers(S.GONE),
    tags=["attendance"],
)
def switch_service(
    data: JSONBody[ServiceState],
    caller: NamedDependency[Caller],
    attendance: NamedDependency[Attendance],
) -> ServiceState:
    customer_id = _own(caller)
    attendance.switch(customer_id, data.on, by=caller.user_id)
    return ServiceState(on=attendance.is_on(customer_id))


# ------------------------------------------------------------------ consent


class ConsentChange(msgspec.Struct, frozen=True):
    at: Annotated[datetime | None, msgspec.Meta(description="when; null once erased")]
    change: Annotated[str, msgspec.Meta(description="given or withdrawn")]


class ConsentOut(msgspec.Struct, frozen=True):
    user_id: Annotated[UUID, msgspec.Meta(description="the user it is about (the caller)")]
    consent: Annotated[bool, msgspec.Meta(description="whether consent is current")]
    history: Annotated[
        list[ConsentChange], msgspec.Meta(description="every giving and withdrawal, oldest first")
    ]


def _consent(attendance: Attendance, caller: Caller) -> ConsentOut:
    record = attendance.consent(_own(caller), caller.user_id)
    return ConsentOut(
        user_id=record.user_id,
        consent=record.consent,
        history=[ConsentChange(at=at, change=what) for what, at in record.history],
    )


@get(
    "/location/consent",
    sync_to_thread=True,
    opt=LOCATION,
    guards=[_use],
    summary="The caller's own consent to location processing, and its history",
    description="Each giving and withdrawal is an event of its own.",
    responses=_answers(),
    tags=["attendance"],
)
def show_consent(
    caller: NamedDependency[Caller], attendance: NamedDependency[Attendance]
) -> ConsentOut:
    return _consent(attendance, caller)


@post(
    "/location/consent",
    sync_to_thread=True,
    opt=LOCATION,
    guards=[_use],
    status_code=HTTPStatus.OK,
    summary="Give consent to location processing for attendance (the caller's own)",
    description="409 attendance-off while the customer has the service off.",
    responses=_answers(S.CONFLICT),
    tags=["attendance"],
)
def give_consent(
    caller: NamedDependency[Caller], attendance: NamedDependency[Attendance]
) -> ConsentOut:
    attendance.give_consent(_own(caller), caller.user_id)
    return _consent(attendance, caller)


@delete(
    "/location/consent",
    sync_to_thread=True,
    opt=LOCATION,
    guards=[_use],
    status_code=HTTPStatus.OK,
    summary="Withdraw consent: processing stops at once and raw pings are erased",
    description=(
        "Pings are refused from now on, and every day key sealing the caller's pings is"
        " destroyed. Entries and exits (no coordinates) stay as working-time records."
    ),
    responses=_answers(),
    tags=["attendance"],
)
def withdraw_consent(
    caller: NamedDependency[Caller], attendance: NamedDependency[Attendance]
) -> ConsentOut:
    attendance.withdraw_consent(_own(caller), caller.user_id)
    return _consent(attendance, caller)


# ------------------------------------------------------------------ pings


class PingBody(msgspec.Struct, frozen=True):
    user_id: Annotated[UUID, msgspec.Meta(description="whose location it is")]
    at: Annotated[datetime, msgspec.Meta(description="when the fix was taken, with its offset")]
    lat: Annotated[float, msgspec.Meta(description="latitude, -90 to 90")]
    lon: Annotated[float, msgspec.Meta(description="longitude, -180 to 180")]
    accuracy_m: Annotated[float, msgspec.Meta(description="the fix's accuracy radius, metres")]

    def __repr__(self) -> str:  # coordinates stay out of every log line
        return "PingBody(…)"


class PingBatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pings: Annotated[
        list[PingBody],
        msgspec.Meta(max_length=MAX_PINGS, description=f"1 to {MAX_PINGS} pings"),
    ]

    def __repr__(self) -> str:
        return f"PingBatch({len(self.pings)} pings)"


class PingsAccepted(msgspec.Struct, frozen=True):
    accepted: Annotated[int, msgspec.Meta(description="new pings stored")]
    duplicates: Annotated[int, msgspec.Meta(description="pings already held, ignored")]
    crossings: Annotated[int, msgspec.Meta(description="entries and exits this batch decided")]


@post(
    "/location/pings",
    sync_to_thread=True,
    opt=LOCATION,
    guards=[_use],
    status_code=HTTPStatus.ACCEPTED,
    request_max_body_size=MAX_PINGS_BODY,
    summary="Send a batch of location pings (at most 1,000) from the customer's app",
    description=(
        "Accepted or refused whole. 422 invalid-pings lists `errors`: the index and field"
        " of every bad ping (latitude or longitude out of range, a time in the future, a"
        " negative accuracy). 409 no-location-consent when a user's consent is not current:"
        " nothing of the batch is stored anywhere. Duplicates (same user and time) are"
        " ignored; pings up to 2 minutes out of order are evaluated in time order. With a"
        " session, only the caller's own pings."
    ),
    responses=_answers(S.CONFLICT, S.UNPROCESSABLE_ENTITY),
    tags=["attendance"],
)
def send_pings(
    data: JSONBody[PingBatch],
    caller: NamedDependency[Caller],
    attendance: NamedDependency[Attendance],
) -> PingsAccepted:
    pings = [PingIn(p.user_id, p.at, p.lat, p.lon, p.accuracy_m) for p in data.pings]
    only = caller.user_id if caller.via == "session" else None
    done = attendance.record_pings(_own(caller), pings, only_user=only)
    return PingsAccepted(done.accepted, done.duplicates, done.crossings)


# ------------------------------------------------------------------ geofences


class ShapeIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A circle (`type` circle: lat, lon, radius_m) or a GeoJSON Polygon (`type` Polygon:
    coordinates)."""

    type: Annotated[
        Literal["circle", "Polygon"], msgspec.Meta(description="circle or Polygon (GeoJSON)")
    ]
    lat: Annotated[float | None, msgspec.Meta(description="a circle's centre: latitude")] = None
    lon: Annotated[float | None, msgspec.Meta(description="a circle's centre: longitude")] = None
    radius_m: Annotated[float | None, msgspec.Meta(description="a circle's radius, metres")] = None
    coordinates: Annotated[
        list[list[list[float]]] | None,
        msgspec.Meta(description="a Polygon's rings of [longitude, latitude], GeoJSON"),
    ] = None

    def shape(self) -> Shape:
        if self.type == "circle":
            if self.lat is None or self.lon is None or self.radius_m is None:
                raise InvalidInput("shape: a circle needs lat, lon and radius_m", field="shape")
            return Circle(lat=self.lat, lon=self.lon, radius_m=self.radius_m)
        if self.coordinates is None:
            raise InvalidInput("shape: a Polygon needs its coordinates", field="shape")
        return Polygon(coordinates=self.coordinates)

    @classmethod
    def of(cls, shape: Shape) -> ShapeIn:
        if isinstance(shape, Circle):
            return cls(type="circle", lat=shape.lat, lon=shape.lon, radius_m=shape.radius_m)
        return cls(type="Polygon", coordinates=shape.coordinates)


class FenceIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    site_id: Annotated[UUID, msgspec.Meta(description="the site it belongs to")]
    name: Annotated[str, msgspec.Meta(description="what it is called; 1 to 100 characters")]
    shape: Annotated[ShapeIn, msgspec.Meta(description="a circle or a GeoJSON Polygon")]
    hysteresis_m: Annotated[
        float,
        msgspec.Meta(description="half the width of the band between inner and outer boundary"),
    ] = DEFAULT_HYSTERESIS_M
    dwell_seconds: Annotated[
        int, msgspec.Meta(description="how long a change must hold before it is recorded")
    ] = int(DEFAULT_DWELL.total_seconds())


class FenceOut(msgspec.Struct, frozen=True):
    id: Annotated[UUID, msgspec.Meta(description="the geofence's id")]
    site_id: Annotated[UUID, msgspec.Meta(description="its site")]
    name: Annotated[str, msgspec.Meta(description="its name")]
    shape: Annotated[ShapeIn, msgspec.Meta(description="a circle or a GeoJSON Polygon")]
    hysteresis_m: Annotated[float, msgspec.Meta(description="its hysteresis margin, metres")]
    dwell_seconds: Annotated[int, msgspec.Meta(description="its dwell time, seconds")]


def _fence_out(f: Fence) -> FenceOut:
    return FenceOut(f.id, f.site_id, f.name, ShapeIn.of(f.shape), f.hysteresis_m, f.dwell_seconds)


@get(
    "/geofences",
    sync_to_thread=True,
    opt=SITES,
    guards=[_read_sites],
    summary="The caller's customer's geofences, of one site or all",
    description="By name.",
    responses=_answers(),
    tags=["geofences"],
)
def list_fences(
    caller: NamedDependency[Caller],
    attendance: NamedDependency[Attendance],
    site_id: Annotated[
        UUID | None, QueryParameter(description="only this site's geofences")
    ] = None,
) -> list[FenceOut]:
    return [_fence_out(f) for f in attendance.fences(_own(caller), site_id)]


@post(
    "/geofences",
    sync_to_thread=True,
    opt=SITES,
    guards=[_admin],
    status_code=HTTPStatus.CREATED,
    request_max_body_size=MAX_BODY,
    summary="Add a geofence to a site: a circle or a GeoJSON polygon",
    description="422 names the field that is not acceptable (`shape`, `site_id`, …).",
    responses=_answers(S.NOT_FOUND, S.CONFLICT, S.UNPROCESSABLE_ENTITY),
    tags=["geofences"],
)
def add_fence(
    data: JSONBody[FenceIn],
    caller: NamedDependency[Caller],
    attendance: NamedDependency[Attendance],
) -> FenceOut:
    customer_id = _own(caller)
    ident = attendance.add_fence(
        customer_id, data.site_id, data.name, data.shape.shape(),
        hysteresis_m=data.hysteresis_m, dwell_seconds=data.dwell_seconds,
    )  # fmt: skip
    return _fence_out(attendance.fence(customer_id, ident))


@get(
    "/geofences/{fence_id:uuid}",
    sync_to_thread=True,
    opt=SITES,
    guards=[_read_sites],
    summary="One geofence",
    description="Another customer's answers 404.",
    responses=_answers(S.NOT_FOUND),
    tags=["geofences"],
)
def show_fence(
    fence_id: FenceId, caller: NamedDependency[Caller], attendance: NamedDependency[Attendance]
) -> FenceOut:
    return _fence_out(attendance.fence(_own(caller), fence_id))


@put(
    "/geofences/{fence_id:uuid}",
    sync_to_thread=True,
    opt=SITES,
    guards=[_admin],
    request_max_body_size=MAX_BODY,
    summary="Replace a geofence",
    description="Its id stays; presence in it is decided by the new shape from now on.",
    responses=_answers(S.NOT_FOUND, S.UNPROCESSABLE_ENTITY),
    tags=["geofences"],
)
def change_fence(
    fence_id: FenceId,
    data: JSONBody[FenceIn],
    caller: NamedDependency[Caller],
    attendance: NamedDependency[Attendance],
) -> FenceOut:
    customer_id = _own(caller)
    attendance.change_fence(
        customer_id, fence_id, data.site_id, data.name, data.shape.shape(),
        hysteresis_m=data.hysteresis_m, dwell_seconds=data.dwell_seconds,
    )  # fmt: skip
    return _fence_out(attendance.fence(customer_id, fence_id))


@delete(
    "/geofences/{fence_id:uuid}",
    sync_to_thread=True,
    opt=SITES,
    guards=[_admin],
    status_code=HTTPStatus.NO_CONTENT,
    summary="Remove a geofence",
    description="Nobody enters or leaves it from now on; the records made with it stay.",
    responses=_answers(S.NOT_FOUND),
    tags=["geofences"],
)
def remove_fence(
    fence_id: FenceId, caller: NamedDependency[Caller], attendance: NamedDependency[Attendance]
) -> None:
    attendance.remove_fence(_own(caller), fence_id)


# ------------------------------------------------------------------ the attendance view


class OnSiteOut(msgspec.Struct, frozen=True):
    user_id: Annotated[UUID, msgspec.Meta(description="who")]
    since: Annotated[datetime, msgspec.Meta(description="when they entered")]


class HoursOut(msgspec.Struct, frozen=True):
    user_id: Annotated[UUID, msgspec.Meta(description="who")]
    date: Annotated[date, msgspec.Meta(description="the day (UTC)")]
    hours: Annotated[float, msgspec.Meta(description="hours on the site that day")]


class AttendanceOut(msgspec.Struct, frozen=True):
    site_id: Annotated[UUID, msgspec.Meta(description="the site")]
    date: Annotated[date, msgspec.Meta(description="the day the hours are of (UTC)")]
    on_site: Annotated[list[OnSiteOut], msgspec.Meta(description="who is on the site now")]
    hours: Annotated[list[HoursOut], msgspec.Meta(description="hours per user that day")]


@get(
    "/attendance",
    sync_to_thread=True,
    opt=LOCATION,
    guards=[_see],
    summary="Who is on a site now, and hours per user on a day",
    description="From entries and exits only: no coordinates.",
    responses=_answers(S.NOT_FOUND),
    tags=["attendance"],
)
def show_attendance(
    caller: NamedDependency[Caller],
    attendance: NamedDependency[Attendance],
    site_id: Annotated[UUID, QueryParameter(description="the site")],
    day: Annotated[date, QueryParameter(name="date", description="the day, YYYY-MM-DD (UTC)")],
) -> AttendanceOut:
    found = attendance.attendance(_own(caller), site_id, day)
    return AttendanceOut(
        site_id=found.site_id,
        date=found.day,
        on_site=[OnSiteOut(o.user_id, o.since) for o in found.on_site],
        hours=[HoursOut(h.user_id, h.day, h.hours) for h in found.hours],
    )


ROUTES: tuple[Any, ...] = (
    show_service, switch_service, show_consent, give_consent, withdraw_consent, send_pings,
    list_fences, add_fence, show_fence, change_fence, remove_fence, show_attendance,
)  # fmt: skip
STRICT_BODIES = (ServiceState, PingBatch, FenceIn, ShapeIn)
