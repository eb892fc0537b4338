"""Recipient groups under /v1/groups: a customer's named lists of numbers and addresses.

| route                          | Picasse staff | customer_admin | customer_user |
|--------------------------------|---------------|----------------|---------------|
| GET /v1/groups[/{group_id}]    | no            | own            | own           |
| POST, PUT, DELETE /v1/groups…  | no            | own            | no            |

Members are personal data of the people in them, sealed under the group's key; the
group's name is the customer's and sealed with them (its id is a keyed pseudonym of it).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter

from picasse.adapters.http.api import S, _answers, _text, customer_of
from picasse.adapters.http.auth import Caller, allowed, scoped
from picasse.domain.access import Viewer
from picasse.domain.api_keys import Scope
from picasse.domain.messaging import MAX_GROUP_MEMBERS, GroupDetails, Messages

SCOPE = scoped(Scope.GROUPS)
GroupId = Annotated[UUID, PathParameter(description="the group's id")]
MAX_GROUP_BODY = 512 * 1024
_read = allowed(Viewer.may_send_messages_for, "a customer's groups are for its own users")
_manage = allowed(Viewer.may_administer, "only a customer's admins manage groups")

Members = Annotated[
    list[str],
    msgspec.Meta(
        max_length=MAX_GROUP_MEMBERS,
        description="phone numbers (+31 6 …) and e-mail addresses; SMS and voice go to the"
        " numbers, e-mail to the addresses",
    ),
]


class NewGroup(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(description="unique per customer; 1 to 100 characters")]
    members: Members

    def __repr__(self) -> str:  # names and members stay out of every log line
        return f"NewGroup({len(self.members)} members)"


class GroupChange(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    members: Members

    def __repr__(self) -> str:
        return f"GroupChange({len(self.members)} members)"


class GroupOut(msgspec.Struct, frozen=True):
    id: Annotated[UUID, msgspec.Meta(description="give it (or the name) as a message's group")]
    name: Annotated[str | None, msgspec.Meta(description="its name; None once erased")]
    member_count: Annotated[int, msgspec.Meta(description="how many members it has")]
    members: Annotated[
        list[str | None] | None,
        msgspec.Meta(description="its members (None in lists; each None once erased)"),
    ] = None


def _out(details: GroupDetails, *, members: bool) -> GroupOut:
    return GroupOut(
        id=details.id,
        name=_text(details.name),
        member_count=len(details.members),
        members=[_text(m) for m in details.members] if members else None,
    )


def _own(caller: Caller) -> UUID:
    return customer_of(caller, "a customer's groups are for its own users")


@get(
    "/groups",
    sync_to_thread=True,
    opt=SCOPE,
    guards=[_read],
    summary="The caller's customer's recipient groups, by name",
    description="Names and member counts; a group's members are on its own page.",
    responses=_answers(),
    tags=["groups"],
)
def list_groups(
    caller: NamedDependency[Caller], messages: NamedDependency[Messages]
) -> list[GroupOut]:
    return [_out(g, members=False) for g in messages.groups(_own(caller))]


@post(
    "/groups",
    sync_to_thread=True,
    opt=SCOPE,
    guards=[_manage],
    request_max_body_size=MAX_GROUP_BODY,
    summary="Create a recipient group",
    description=(
        "Each member is checked as a recipient is (422 naming `members`). A name the"
        " customer uses already answers 409 name-taken (replace its members with PUT)."
    ),
    responses=_answers(S.CONFLICT, S.GONE, S.UNPROCESSABLE_ENTITY),
    tags=["groups"],
)
def create_group(
    data: JSONBody[NewGroup], caller: NamedDependency[Caller], messages: NamedDependency[Messages]
) -> GroupOut:
    customer_id = _own(caller)
    ident = messages.create_group(customer_id, data.name, data.members, replace=False)
    return _out(messages.group(customer_id, ident), members=True)


@get(
    "/groups/{group_id:uuid}",
    sync_to_thread=True,
    opt=SCOPE,
    guards=[_read],
    summary="One recipient group with its members",
    description="Its name and members; another customer's (or a deleted one) answers 404.",
    responses=_answers(S.NOT_FOUND),
    tags=["groups"],
)
def show_group(
    group_id: GroupId, caller: NamedDependency[Caller], messages: NamedDependency[Messages]
) -> GroupOut:
    return _out(messages.group(_own(caller), group_id), members=True)


@put(
    "/groups/{group_id:uuid}",
    sync_to_thread=True,
    opt=SCOPE,
    guards=[_manage],
    request_max_body_size=MAX_GROUP_BODY,
    summary="Replace a recipient group's members",
    description="The name stays: it is what the group's id is made from.",
    responses=_answers(S.NOT_FOUND, S.CONFLICT, S.GONE, S.UNPROCESSABLE_ENTITY),
    tags=["groups"],
)
def change_group(
    group_id: GroupId,
    data: JSONBody[GroupChange],
    caller: NamedDependency[Caller],
    messages: NamedDependency[Messages],
) -> GroupOut:
    customer_id = _own(caller)
    messages.replace_group_members(customer_id, group_id, data.members)
    return _out(messages.group(customer_id, group_id), members=True)


@delete(
    "/groups/{group_id:uuid}",
    sync_to_thread=True,
    opt=SCOPE,
    guards=[_manage],
    status_code=HTTPStatus.NO_CONTENT,
    summary="Delete a recipient group",
    description="Nobody is sent to it again, nor escalated to; its name is free again.",
    responses=_answers(S.NOT_FOUND),
    tags=["groups"],
)
def delete_group(
    group_id: GroupId, caller: NamedDependency[Caller], messages: NamedDependency[Messages]
) -> None:
    messages.delete_group(_own(caller), group_id)


ROUTES: tuple[Any, ...] = (list_groups, create_group, show_group, change_group, delete_group)
STRICT_BODIES = (NewGroup, GroupChange)
