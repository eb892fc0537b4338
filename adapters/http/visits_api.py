"""Visitor registration in the API (R13): a site's settings, and the public form's JSON twin.

| route                                   | Picasse staff | customer_admin | customer_user | anyone |
|-----------------------------------------|---------------|----------------|---------------|--------|
| GET /v1/sites/{id}/registration         | no            | own            | own           | no     |
| PUT /v1/sites/{id}/registration         | no            | own            | no            | no     |
| POST /v1/sites/{slug}/visits (+OPTIONS) | -             | -              | -             | yes    |

The JSON twin takes what the form takes and refuses what it refuses (the same domain
command, throttle and honeypot). Browsers may call it from the site's listed origins
only: CORS answers name the caller's origin when it is listed, and a request whose
`Origin` is not listed is refused (403) before anything is recorded.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import HttpMethod, Request, Response, get, put, route
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter

from picasse.adapters.http.api import S, _answers
from picasse.adapters.http.auth import PUBLIC, Caller, allowed, scoped
from picasse.adapters.http.clients import client_address
from picasse.adapters.http.problems import problem_response, problem_responses
from picasse.adapters.http.visits import RegistrationThrottled, VisitService
from picasse.domain.access import Viewer
from picasse.domain.api_keys import Scope
from picasse.domain.errors import DomainError, Forbidden
from picasse.domain.visitors import HostChoice, RegistrationDetails, RegistrationSettings, VisitForm

SCOPE = scoped(Scope.SITES)
SiteId = Annotated[UUID, PathParameter(description="the site's id")]
Slug = Annotated[str, PathParameter(description="the site's public registration slug")]
MAX_VISIT_BODY = 16 * 1024
CORS_MAX_AGE = "600"
_read = allowed(Viewer.sees_visitors_of, "a site's visitor registration is its customer's own")
_manage = allowed(Viewer.may_administer, "only a customer's admins set visitor registration")


class RegistrationOut(msgspec.Struct, frozen=True):
    site_id: Annotated[UUID, msgspec.Meta(description="the site")]
    site_name: Annotated[str | None, msgspec.Meta(description="its name; None once erased")]
    slug: Annotated[str, msgspec.Meta(description="the form is at /visit/{slug}")]
    hosts: Annotated[list[HostChoice], msgspec.Meta(description="who may be visited")]
    fields: Annotated[list[str], msgspec.Meta(description="optional fields the form asks for")]
    privacy_notice: Annotated[str, msgspec.Meta(description="shown beside the consent box")]
    origins: Annotated[list[str], msgspec.Meta(description="origins that may embed the form")]
    keep_days: Annotated[int, msgspec.Meta(description="days visitor data is kept after a visit")]


class VisitIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(description="the visitor's name")] = ""
    email: Annotated[str, msgspec.Meta(description="where the confirmation and pass go")] = ""
    phone: Annotated[
        str, msgspec.Meta(description="international form; when the site asks for it")
    ] = ""
    company: Annotated[str, msgspec.Meta(description="when the site asks for it")] = ""
    host: Annotated[str, msgspec.Meta(description="the user id of one of the site's hosts")] = ""
    arrival: Annotated[
        str, msgspec.Meta(description="expected arrival, ISO 8601 (no zone: UTC)")
    ] = ""
    consent: Annotated[
        bool, msgspec.Meta(description="the visitor agreed to the site's privacy notice")
    ] = False
    website: Annotated[
        str, msgspec.Meta(description="the honeypot: leave it out or empty; filled in, refused")
    ] = ""

    def __repr__(self) -> str:
        return "VisitIn(…)"


class VisitOut(msgspec.Struct, frozen=True):
    visitor_id: Annotated[UUID, msgspec.Meta(description="the new visit's id")]
    status: Annotated[
        str, msgspec.Meta(description="registered: the confirmation is on its way")
    ] = "registered"


def _out(r: RegistrationDetails) -> RegistrationOut:
    return RegistrationOut(
        site_id=r.site_id, site_name=r.site_name, slug=r.slug, hosts=r.hosts, fields=r.fields,
        privacy_notice=r.privacy_notice, origins=r.origins, keep_days=r.keep_days,
    )  # fmt: skip


def _own(caller: Caller) -> UUID:
    if caller.customer_id is None:
        raise Forbidden("a site's visitor registration is its customer's own")
    return caller.customer_id


@get(
    "/sites/{site_id:uuid}/registration",
    sync_to_thread=True,
    opt=SCOPE,
    guards=[_read],
    summary="A site's visitor registration settings",
    description="The slug of its public form, hosts, fields, privacy notice, origins, retention.",
    responses=_answers(S.NOT_FOUND),
    tags=["visitors"],
)
def show_registration(
    caller: NamedDependency[Caller], visits: NamedDependency[VisitService], site_id: SiteId
) -> RegistrationOut:
    return _out(visits.visitors.registration(_own(caller), site_id))


@put(
    "/sites/{site_id:uuid}/registration",
    sync_to_thread=True,
    opt=SCOPE,
    guards=[_manage],
    request_max_body_size=64 * 1024,
    summary="Set a site's visitor registration: its public form at /visit/{slug}",
    description=(
        "Hosts are users of the customer, each with the name the form shows (sealed under"
        " the user's key). `fields`: phone and/or company beside name, e-mail, host and"
        " arrival. `origins` may frame the form and call POST /v1/sites/{slug}/visits."
        " `keep_days`: how long visitor data is kept after the visit (default 28,"
        " PICASSE_VISITOR_RETENTION_DAYS). A slug another site holds: 409."
    ),
    responses=_answers(S.NOT_FOUND, S.CONFLICT, S.UNPROCESSABLE_ENTITY),
    tags=["visitors"],
)
def set_registration(
    caller: NamedDependency[Caller],
    visits: NamedDependency[VisitService],
    site_id: SiteId,
    data: JSONBody[RegistrationSettings],
) -> RegistrationOut:
    customer_id = _own(caller)
    visits.visitors.set_registration(customer_id, site_id, data)
    return _out(visits.visitors.registration(customer_id, site_id))


@route(
    "/sites/{slug:str}/visits",
    http_method=[HttpMethod.POST, HttpMethod.OPTIONS],
    opt=PUBLIC | {"cross_site": True},
    security=[],
    sync_to_thread=True,
    request_max_body_size=MAX_VISIT_BODY,
    summary="Register a visit (the public form's JSON twin); OPTIONS answers CORS preflights",
    description=(
        "No login. Browsers may call it from the site's listed origins (CORS); another"
        " origin gets 403. Bad fields: 422 naming the first field, every field's reason in"
        " `detail`; the honeypot `website` filled in: 422; too many from one address: 429"
        " with Retry-After. Nothing is recorded on any of them. On success the host is told"
        " and the visitor gets the confirmation with the pass and the cancel link."
    ),
    responses=problem_responses(
        S.BAD_REQUEST, S.FORBIDDEN, S.NOT_FOUND, S.UNPROCESSABLE_ENTITY, S.TOO_MANY_REQUESTS
    ),
    tags=["visitors"],
)
def register_visit(
    request: Request[Any, Any, Any],
    visits: NamedDependency[VisitService],
    slug: Slug,
    data: JSONBody[VisitIn | None] = None,
) -> Response[Any]:
    registration = visits.visitors.registration_by_slug(slug)
    origin = request.headers.get("origin")
    cors = _cors_headers(origin, registration.origins)
    if origin is not None and not cors and not _same_origin(request, origin):
        raise Forbidden("this origin is not listed for the site's registration")
    if request.method == HttpMethod.OPTIONS:
        return Response(None, status_code=HTTPStatus.NO_CONTENT, headers=cors)
    given = data or VisitIn()
    form = VisitForm(
        name=given.name, email=given.email, phone=given.phone, company=given.company,
        host=given.host, arrival=given.arrival, consent=given.consent,
    )  # fmt: skip
    try:
        registered = visits.register(slug, form, given.website, client_address(request))
    except DomainError as error:  # the listed origin's page must be able to read why
        refused = problem_response(request, error)
        refused.headers.update(cors)
        if isinstance(error, RegistrationThrottled):
            refused.headers["Retry-After"] = str(error.retry_after)
        return refused
    return Response(
        VisitOut(visitor_id=registered.visitor_id), status_code=HTTPStatus.CREATED, headers=cors
    )


def _cors_headers(origin: str | None, listed: list[str]) -> dict[str, str]:
    if origin is None or origin.lower() not in listed:
        return {}
    return {
        "Access-Control-Allow-Origin": origin.lower(),
        "Access-Control-Allow-Methods": "POST",
        "Access-Control-Allow-Headers": "content-type",
        "Access-Control-Max-Age": CORS_MAX_AGE,
        "Vary": "Origin",
    }


def _same_origin(request: Request[Any, Any, Any], origin: str) -> bool:
    return origin.lower().split("://", 1)[-1] == request.headers.get("host", "").lower()


ROUTES = (show_registration, set_registration, register_visit)
STRICT_BODIES = (RegistrationSettings, VisitIn)
