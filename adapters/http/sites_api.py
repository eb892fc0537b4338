"""A customer's sites under /v1/sites: its premises, to which geofences belong.

| route                          | Picasse staff | customer_admin | customer_user |
|--------------------------------|---------------|----------------|---------------|
| GET /v1/sites[/{site_id}]      | no            | own            | own           |
| POST, PUT, DELETE /v1/sites…   | no            | own            | no            |

An API key needs the `sites` scope. Names and addresses are sealed under the customer's
organisation key.
"""

from __future__ import annotations

from datetime import datetime
from http import HTTPStatus
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter

from picasse.adapters.http.api import S, _answers, customer_of
from picasse.adapters.http.auth import Caller, allowed, scoped
from picasse.domain.access import Viewer
from picasse.domain.api_keys import Scope
from picasse.domain.sites import MAX_ADDRESS, MAX_SITE_NAME, SiteDetails, Sites

SCOPE = scoped(Scope.SITES)
MAX_BODY = 16 * 1024
SiteId = Annotated[UUID, PathParameter(description="the site's id")]
_read = allowed(Viewer.sees_sites_of, "a customer's sites are for its own users")
_manage = allowed(Viewer.may_administer, "only a customer's admins manage its sites")


class SiteIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A site as given: what POST creates and PUT replaces."""

    name: Annotated[
        str, msgspec.Meta(description=f"what the site is called; 1 to {MAX_SITE_NAME} characters")
    ]
    address: Annotated[
        str,
        msgspec.Meta(description=f"its postal address, one line; up to {MAX_ADDRESS} characters"),
    ]

    def __repr__(self) -> str:  # the address stays out of every log line
        return "SiteIn(…)"


class SiteOut(msgspec.Struct, frozen=True):
    """One of the customer's sites."""

    id: Annotated[UUID, msgspec.Meta(description="the site's id (geofences name it)")]
    customer_id: Annotated[UUID, msgspec.Meta(description="the customer whose site it is")]
    name: Annotated[str | None, msgspec.Meta(description="its name; null once erased")]
    address: Annotated[str | None, msgspec.Meta(description="its address; null once erased")]
    added_at: Annotated[datetime, msgspec.Meta(description="when it was added")]


def _out(details: SiteDetails) -> SiteOut:
    return SiteOut(
        id=details.id,
        customer_id=details.customer_id,
        name=details.name,
        address=details.address,
        added_at=details.added_at,
    )


def _own(caller: Caller) -> UUID:
    return customer_of(caller, "a customer's sites are for its own users")


@get(
    "/sites",
    sync_to_thread=True,
    opt=SCOPE,
    guards=[_read],
    summary="The caller's customer's sites, by name",
    description="Removed sites are not listed.",
    responses=_answers(),
    tags=["sites"],
)
def list_sites(caller: NamedDependency[Caller], sites: NamedDependency[Sites]) -> list[SiteOut]:
    return [_out(s) for s in sites.sites(_own(caller))]


@post(
    "/sites",
    sync_to_thread=True,
    opt=SCOPE,
    guards=[_manage],
    status_code=HTTPStatus.CREATED,
    request_max_body_size=MAX_BODY,
    summary="Add a site (a customer's premises)",
    description="A name and a one-line address; 422 names the field that is not acceptable.",
    responses=_answers(S.CONFLICT, S.GONE, S.UNPROCESSABLE_ENTITY),
    tags=["sites"],
)
def add_site(
    data: JSONBody[SiteIn], caller: NamedDependency[Caller], sites: NamedDependency[Sites]
) -> SiteOut:
    customer_id = _own(caller)
    ident = sites.add(customer_id, data.name, data.address, by=caller.user_id)
    return _out(sites.site(customer_id, ident))


@get(
    "/sites/{site_id:uuid}",
    sync_to_thread=True,
    opt=SCOPE,
    guards=[_read],
    summary="One site",
    description="Another customer's site, or a removed one, answers 404.",
    responses=_answers(S.NOT_FOUND),
    tags=["sites"],
)
def show_site(
    site_id: SiteId, caller: NamedDependency[Caller], sites: NamedDependency[Sites]
) -> SiteOut:
    return _out(sites.site(_own(caller), site_id))


@put(
    "/sites/{site_id:uuid}",
    sync_to_thread=True,
    opt=SCOPE,
    guards=[_manage],
    request_max_body_size=MAX_BODY,
    summary="Change a site's name and address",
    description="Both are given; the site keeps its id and what belongs to it.",
    responses=_answers(S.NOT_FOUND, S.GONE, S.UNPROCESSABLE_ENTITY),
    tags=["sites"],
)
def change_site(
    site_id: SiteId,
    data: JSONBody[SiteIn],
    caller: NamedDependency[Caller],
    sites: NamedDependency[Sites],
) -> SiteOut:
    customer_id = _own(caller)
    sites.change(customer_id, site_id, data.name, data.address)
    return _out(sites.site(customer_id, site_id))


@delete(
    "/sites/{site_id:uuid}",
    sync_to_thread=True,
    opt=SCOPE,
    guards=[_manage],
    status_code=HTTPStatus.NO_CONTENT,
    summary="Remove a site",
    description="It is no longer listed, and what belongs to it stops with it.",
    responses=_answers(S.NOT_FOUND),
    tags=["sites"],
)
def remove_site(
    site_id: SiteId, caller: NamedDependency[Caller], sites: NamedDependency[Sites]
) -> None:
    sites.remove(_own(caller), site_id)


ROUTES: tuple[Any, ...] = (list_sites, add_site, show_site, change_site, remove_site)
STRICT_BODIES = (SiteIn,)
