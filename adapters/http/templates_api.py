"""Stored message templates under /v1/templates: a customer's named texts per channel.

| route                              | Picasse staff | customer_admin | customer_user |
|------------------------------------|---------------|----------------|---------------|
| GET /v1/templates[/{template_id}]  | no (R7)       | own            | own           |
| POST, PUT, DELETE /v1/templates…   | no            | own            | no            |

A template's text is the customer's content: nobody at Picasse reads it (R7), so staff
get 403 like for a message's body. Messages are sent from one with `template_id` and
`variables` (POST /v1/messages).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter, QueryParameter

from picasse.adapters.http.api import CHANNEL, S, _answers, _text, customer_of
from picasse.adapters.http.auth import Caller, allowed, scoped
from picasse.domain.access import Viewer
from picasse.domain.api_keys import Scope
from picasse.domain.messages import Channel
from picasse.domain.messaging import Messages, TemplateDetails

SCOPE = scoped(Scope.TEMPLATES)
TemplateId = Annotated[UUID, PathParameter(description="the template's id")]
MAX_TEMPLATE_BODY = 256 * 1024
_read = allowed(Viewer.may_read_content_of, "templates are the customer's own content (R7)")
_manage = allowed(Viewer.may_administer, "only a customer's admins manage templates")


class NewTemplate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(description="unique per customer and channel")]
    channel: Annotated[Channel, msgspec.Meta(description=CHANNEL)]
    text: Annotated[
        str,
        msgspec.Meta(description="the message text, with {name} placeholders (plain names only)"),
    ]

    def __repr__(self) -> str:  # content stays out of every log line
        return f"NewTemplate(channel={self.channel.value})"


class TemplateChange(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    text: Annotated[str, msgspec.Meta(description="the new text, with {name} placeholders")]

    def __repr__(self) -> str:
        return "TemplateChange(…)"


class TemplateOut(msgspec.Struct, frozen=True):
    id: Annotated[UUID, msgspec.Meta(description="give as template_id when sending")]
    channel: Annotated[Channel, msgspec.Meta(description=CHANNEL)]
    name: Annotated[str | None, msgspec.Meta(description="its name; None once erased")]
    text: Annotated[str | None, msgspec.Meta(description="its text; None once erased")]
    placeholders: Annotated[
        list[str], msgspec.Meta(description="the names a message's `variables` must give")
    ]


def _out(details: TemplateDetails) -> TemplateOut:
    return TemplateOut(
        id=details.id,
        channel=details.channel,
        name=_text(details.name),
        text=_text(details.text),
        placeholders=details.placeholders,
    )


def _own(caller: Caller) -> UUID:
    return customer_of(caller, "templates are the customer's own content (R7)")


@get(
    "/templates",
    sync_to_thread=True,
    opt=SCOPE,
    guards=[_read],
    summary="The caller's customer's stored templates, by channel and name",
    description="For the customer's own users; Picasse staff never read them (R7).",
    responses=_answers(S.UNPROCESSABLE_ENTITY),
    tags=["templates"],
)
def list_templates(
    caller: NamedDependency[Caller],
    messages: NamedDependency[Messages],
    channel: Annotated[Channel | None, QueryParameter(description="only this channel's")] = None,
) -> list[TemplateOut]:
    found = messages.templates(_own(caller), channel.value if channel else None)
    return [_out(t) for t in found]


@post(
    "/templates",
    sync_to_thread=True,
    opt=SCOPE,
    guards=[_manage],
    request_max_body_size=MAX_TEMPLATE_BODY,
    summary="Store a named template for a channel",
    description=(
        "Its placeholders are checked now: plain {name}s only (422 otherwise). A name the"
        " customer uses for the channel already answers 409 name-taken."
    ),
    responses=_answers(S.CONFLICT, S.GONE, S.UNPROCESSABLE_ENTITY),
    tags=["templates"],
)
def create_template(
    data: JSONBody[NewTemplate],
    caller: NamedDependency[Caller],
    messages: NamedDependency[Messages],
) -> TemplateOut:
    customer_id = _own(caller)
    ident = messages.save_template(customer_id, data.channel.value, data.name, data.text)
    return _out(messages.template(customer_id, ident))


@get(
    "/templates/{template_id:uuid}",
    sync_to_thread=True,
    opt=SCOPE,
    guards=[_read],
    summary="One stored template",
    description="Its name, channel, text and placeholders; another customer's answers 404.",
    responses=_answers(S.NOT_FOUND),
    tags=["templates"],
)
def show_template(
    template_id: TemplateId,
    caller: NamedDependency[Caller],
    messages: NamedDependency[Messages],
) -> TemplateOut:
    return _out(messages.template(_own(caller), template_id))


@put(
    "/templates/{template_id:uuid}",
    sync_to_thread=True,
    opt=SCOPE,
    guards=[_manage],
    request_max_body_size=MAX_TEMPLATE_BODY,
    summary="Replace a stored template's text",
    description="Its placeholders are checked as when it was created; name and channel stay.",
    responses=_answers(S.NOT_FOUND, S.CONFLICT, S.UNPROCESSABLE_ENTITY),
    tags=["templates"],
)
def change_template(
    template_id: TemplateId,
    data: JSONBody[TemplateChange],
    caller: NamedDependency[Caller],
    messages: NamedDependency[Messages],
) -> TemplateOut:
    customer_id = _own(caller)
    messages.change_template(customer_id, template_id, data.text)
    return _out(messages.template(customer_id, template_id))


@delete(
    "/templates/{template_id:uuid}",
    sync_to_thread=True,
    opt=SCOPE,
    guards=[_manage],
    status_code=HTTPStatus.NO_CONTENT,
    summary="Delete a stored template",
    description="Messages can no longer be sent from it; its name is free again.",
    responses=_answers(S.NOT_FOUND),
    tags=["templates"],
)
def delete_template(
    template_id: TemplateId,
    caller: NamedDependency[Caller],
    messages: NamedDependency[Messages],
) -> None:
    messages.delete_template(_own(caller), template_id)


ROUTES: tuple[Any, ...] = (
    list_templates,
    create_template,
    show_template,
    change_template,
    delete_template,
)
STRICT_BODIES = (NewTemplate, TemplateChange)
