"""The customer's webhook endpoints under /v1/webhooks: register, list, delete, attempts.

Only a customer's own admins manage its endpoints (`Viewer.may_administer`); an
API key needs the `webhooks` scope. The secret is in the registration's response only.
A URL whose host is or resolves to a loopback, private or link-local address answers
422 `webhook-destination-refused` unless the operator allows private destinations.
(The gateways' receipts, POST /v1/webhooks/receipts, are another thing: webhooks.py.)
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from http import HTTPStatus
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Router, delete, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter

from picasse.adapters.http.auth import Caller, allowed, scoped
from picasse.adapters.http.problems import problem_responses
from picasse.adapters.postgres.webhook_log import MAX_LISTED_ATTEMPTS, WebhookLog
from picasse.adapters.webhook_posts import check_destination
from picasse.domain.access import Viewer
from picasse.domain.api_keys import Scope
from picasse.domain.errors import Forbidden
from picasse.domain.webhooks import (
    MAX_URL_LENGTH,
    EndpointDetails,
    WebhookEventType,
    Webhooks,
)

S = HTTPStatus
SCOPE = scoped(Scope.WEBHOOKS)
REFUSAL = "only the customer's admins manage its webhooks"
MAX_BODY = 16 * 1024

WebhookId = Annotated[UUID, PathParameter(description="the webhook endpoint's id")]


class NewWebhook(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A webhook endpoint to register."""

    url: Annotated[
        str,
        msgspec.Meta(
            max_length=MAX_URL_LENGTH,
            description="where status events are posted: an http(s) URL on a public address",
        ),
    ]
    events: Annotated[
        list[str],
        msgspec.Meta(
            max_length=len(WebhookEventType),
            description="the event types to post: " + ", ".join(t.value for t in WebhookEventType),
        ),
    ]


class WebhookOut(msgspec.Struct, frozen=True):
    """A webhook endpoint (never its secret)."""

    id: Annotated[UUID, msgspec.Meta(description="the endpoint's id")]
    customer_id: Annotated[UUID, msgspec.Meta(description="the customer it belongs to")]
    url: Annotated[
        str | None, msgspec.Meta(description="where events are posted; null once erased")
    ]
    events: Annotated[
        list[WebhookEventType], msgspec.Meta(description="the event types it receives")
    ]
    disabled: Annotated[
        bool, msgspec.Meta(description="true once it failed for 24 hours: nothing is posted to it")
    ]
    created_at: Annotated[datetime, msgspec.Meta(description="when it was registered")]


class NewWebhookOut(WebhookOut, frozen=True):
    """A registered endpoint with its signing secret, shown in this response only."""

    secret: Annotated[
        str,
        msgspec.Meta(
            description="the Standard Webhooks signing secret (whsec_…): shown this once, kept"
            " only sealed"
        ),
    ]

    def __repr__(self) -> str:  # the secret stays out of every log line
        return f"NewWebhookOut(id={self.id})"


class AttemptOut(msgspec.Struct, frozen=True):
    """One post of one event to the endpoint."""

    event_id: Annotated[str, msgspec.Meta(description="the event's id (its webhook-id header)")]
    event_type: Annotated[str, msgspec.Meta(description="the event's type")]
    attempt: Annotated[
        int, msgspec.Meta(description="1 for the first post of the event, then 2, …")
    ]
    attempted_at: Annotated[datetime, msgspec.Meta(description="when it was posted")]
    status_code: Annotated[
        int | None,
        msgspec.Meta(description="the endpoint's HTTP status; null when nothing answered"),
    ]
    outcome: Annotated[
        str,
        msgspec.Meta(
            description="delivered (2xx), failed (another status), refused (a loopback, private"
            " or link-local address), unreachable or timed-out"
        ),
    ]


def _out(details: EndpointDetails) -> WebhookOut:
    return WebhookOut(
        id=details.id,
        customer_id=details.customer_id,
        url=details.url,
        events=details.events,
        disabled=details.disabled,
        created_at=details.created_at,
    )


def _own_customer(caller: Caller) -> UUID:
    if caller.customer_id is None:  # the guard lets customer admins only; they all have one
        raise Forbidden(REFUSAL)
    return caller.customer_id


def _answers(*statuses: HTTPStatus) -> dict[int, Any]:
    return problem_responses(S.BAD_REQUEST, S.UNAUTHORIZED, S.FORBIDDEN, *statuses)


GUARD = [allowed(Viewer.may_administer, REFUSAL)]


@post(
    "/webhooks",
    guards=GUARD,
    opt=SCOPE,
    status_code=HTTPStatus.CREATED,
    request_max_body_size=MAX_BODY,
    summary="Register a webhook endpoint for the caller's customer; its secret is shown once",
    description=(
        "Status events of the chosen types are posted to `url` as JSON, signed in the"
        " Standard Webhooks format (webhook-id, webhook-timestamp, webhook-signature) with"
        " the secret in this response. Failed posts are retried with back-off for 24 hours;"
        " an endpoint failing that long is disabled and the customer's admins are mailed."
        " URLs on loopback, private or link-local addresses are refused (422)."
    ),
    responses=_answers(S.CONFLICT, S.GONE, S.UNPROCESSABLE_ENTITY),
    tags=["webhooks"],
)
async def register_webhook(
    data: JSONBody[NewWebhook],
    caller: NamedDependency[Caller],
    webhooks: NamedDependency[Webhooks],
    deps: NamedDependency[Any],
) -> NewWebhookOut:
    customer_id = _own_customer(caller)
    await check_destination(data.url, allow_private=deps.webhooks_allow_private)
    new = await asyncio.to_thread(
        webhooks.register, customer_id, data.url, data.events, by=caller.viewer()
    )
    return NewWebhookOut(**msgspec.structs.asdict(_out(new.endpoint)), secret=new.secret)


@get(
    "/webhooks",
    guards=GUARD,
    opt=SCOPE,
    sync_to_thread=True,
    summary="The caller's customer's webhook endpoints",
    description="Never their secrets. Deleted endpoints are not listed; disabled ones are.",
    responses=_answers(),
    tags=["webhooks"],
)
def list_webhooks(
    caller: NamedDependency[Caller], webhooks: NamedDependency[Webhooks]
) -> list[WebhookOut]:
    return [_out(d) for d in webhooks.endpoints(_own_customer(caller), by=caller.viewer())]


@get(
    "/webhooks/{webhook_id:uuid}",
    guards=GUARD,
    opt=SCOPE,
    sync_to_thread=True,
    summary="One webhook endpoint",
    description="Never its secret. Another customer's endpoint answers 404.",
    responses=_answers(S.NOT_FOUND),
    tags=["webhooks"],
)
def show_webhook(
    webhook_id: WebhookId, caller: NamedDependency[Caller], webhooks: NamedDependency[Webhooks]
) -> WebhookOut:
    return _out(webhooks.endpoint(webhook_id, by=caller.viewer()))


@delete(
    "/webhooks/{webhook_id:uuid}",
    guards=GUARD,
    opt=SCOPE,
    sync_to_thread=True,
    status_code=HTTPStatus.NO_CONTENT,
    summary="Delete a webhook endpoint",
    description="Nothing more is posted to it, retries included.",
    responses=_answers(S.NOT_FOUND),
    tags=["webhooks"],
)
def delete_webhook(
    webhook_id: WebhookId,
    caller: NamedDependency[Caller],
    webhooks: NamedDependency[Webhooks],
    webhook_log: NamedDependency[WebhookLog],
) -> None:
    webhooks.delete(webhook_id, by=caller.viewer())
    webhook_log.cancel(webhook_id)


@post(
    "/webhooks/{webhook_id:uuid}/enable",
    guards=GUARD,
    opt=SCOPE,
    sync_to_thread=True,
    status_code=HTTPStatus.OK,
    summary="Enable a disabled webhook endpoint again",
    description=(
        "For an endpoint that was disabled after failing for 24 hours, once its receiver"
        " works again. Events of the time it was disabled are not posted; new ones are, and"
        " its failing streak starts anew. Enabling an active endpoint changes nothing."
    ),
    responses=_answers(S.NOT_FOUND),
    tags=["webhooks"],
)
def enable_webhook(
    webhook_id: WebhookId,
    caller: NamedDependency[Caller],
    webhooks: NamedDependency[Webhooks],
    webhook_log: NamedDependency[WebhookLog],
) -> WebhookOut:
    enable_endpoint(webhooks, webhook_log, webhook_id, caller.viewer())
    return _out(webhooks.endpoint(webhook_id, by=caller.viewer()))


def enable_endpoint(webhooks: Webhooks, log: WebhookLog, endpoint_id: UUID, by: Viewer) -> None:
    """The one way an endpoint is enabled again (API and page): its failing streak goes too."""
    if webhooks.enable(endpoint_id, by=by):
        log.forget_failures(endpoint_id)


@get(
    "/webhooks/{webhook_id:uuid}/attempts",
    guards=GUARD,
    opt=SCOPE,
    sync_to_thread=True,
    summary="A webhook endpoint's recent attempts, newest first, with their status codes",
    description=f"At most {MAX_LISTED_ATTEMPTS}, of the last 7 days.",
    responses=_answers(S.NOT_FOUND),
    tags=["webhooks"],
)
def list_webhook_attempts(
    webhook_id: WebhookId,
    caller: NamedDependency[Caller],
    webhooks: NamedDependency[Webhooks],
    webhook_log: NamedDependency[WebhookLog],
) -> list[AttemptOut]:
    webhooks.endpoint(webhook_id, by=caller.viewer())  # another customer's: 404
    return [
        AttemptOut(
            event_id=a.event_id,
            event_type=a.event_type,
            attempt=a.attempt,
            attempted_at=a.attempted_at,
            status_code=a.status_code,
            outcome=a.outcome,
        )
        for a in webhook_log.attempts(webhook_id)
    ]


# Request bodies that refuse unknown fields (the document says so too).
STRICT_BODIES = (NewWebhook,)


def webhook_endpoints_router() -> Router:
    return Router(
        path="/v1",
        route_handlers=[
            register_webhook,
            list_webhooks,
            show_webhook,
            delete_webhook,
            enable_webhook,
            list_webhook_attempts,
        ],
    )
