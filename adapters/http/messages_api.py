"""Messages listed and followed under /v1: a customer's messages page by page (from the
traffic view), a message's deliveries, and cancelling a scheduled message.

| route                                   | platform_admin | support      | auditor                      | customer_admin | customer_user |
|-----------------------------------------|----------------|--------------|------------------------------|----------------|---------------|
| GET /v1/messages                        | customer_id=   | customer_id= | customer_id=                 | own            | own           |
| GET /v1/messages/{message_id}/deliveries| ✓              | ✓            | ✓, no recipients             | own            | own           |
| DELETE /v1/messages/{message_id}        | no             | no           | no                           | own            | own           |

Lists show ids, channels, statuses, counts and times: no content for anyone (R7). Pages
are cursors, newest message first: a cursor names the last message of the page it ends
(its time and id), so messages arriving meanwhile shift nothing between pages.
"""

from __future__ import annotations

from datetime import datetime
from http import HTTPStatus
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import delete, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from picasse.adapters.http.api import (
    CHANNEL,
    FAILURE_REASON,
    PRIORITY,
    MessageId,
    S,
    _answers,
    _utc,
)
from picasse.adapters.http.auth import Caller, allowed, scoped
from picasse.adapters.http.cursors import Position, decode_cursor, encode_cursor
from picasse.domain.access import Viewer
from picasse.domain.api_keys import Scope
from picasse.domain.errors import InvalidInput, NotFound
from picasse.domain.messages import Channel, DeliveryStatus, FailureReason, Priority
from picasse.domain.messaging import Messages
from picasse.projections.traffic import DeliveryRow, MessageQuery, MessageRow, TrafficView

DEFAULT_PAGE = 50
MAX_PAGE = 200
READ = scoped(Scope.MESSAGES_READ)
SEND = scoped(Scope.MESSAGES_SEND)


class MessageSummary(msgspec.Struct, frozen=True):
    id: Annotated[UUID, msgspec.Meta(description="the message's id")]
    customer_id: Annotated[UUID, msgspec.Meta(description="the customer who sent it")]
    channel: Annotated[Channel, msgspec.Meta(description=CHANNEL)]
    priority: Annotated[Priority, msgspec.Meta(description=PRIORITY)]
    requested_at: Annotated[datetime, msgspec.Meta(description="when it was sent (asked for)")]
    requested_by: Annotated[
        UUID | None, msgspec.Meta(description="the user who sent it (None: Picasse itself)")
    ]
    recipient_count: Annotated[int, msgspec.Meta(description="its deliveries, one per recipient")]
    counts: Annotated[
        dict[str, int],
        msgspec.Meta(description="its deliveries per status (only the statuses it has)"),
    ]


class MessagePage(msgspec.Struct, frozen=True):
    items: Annotated[list[MessageSummary], msgspec.Meta(description="newest first")]
    next_cursor: Annotated[
        str | None, msgspec.Meta(description="give as `cursor` for the next page; None: the last")
    ]


class DeliveryEntry(msgspec.Struct, frozen=True):
    id: Annotated[UUID, msgspec.Meta(description="the delivery's id")]
    index: Annotated[int, msgspec.Meta(description="the recipient's place in the message")]
    to: Annotated[
        str | None,
        msgspec.Meta(description="the recipient; None for roles not entitled, and once erased"),
    ]
    status: Annotated[DeliveryStatus, msgspec.Meta(description="where the delivery stands")]
    attempts: Annotated[int, msgspec.Meta(description="attempts made so far")]
    reason: Annotated[FailureReason | None, msgspec.Meta(description=FAILURE_REASON)]
    provider: Annotated[str | None, msgspec.Meta(description="who took it for delivery")]
    acknowledged: Annotated[bool, msgspec.Meta(description="an alert's recipient acknowledged")]
    updated_at: Annotated[datetime, msgspec.Meta(description="its last change")]


class DeliveryPage(msgspec.Struct, frozen=True):
    items: Annotated[list[DeliveryEntry], msgspec.Meta(description="in recipient order")]
    next_cursor: Annotated[
        str | None, msgspec.Meta(description="give as `cursor` for the next page; None: the last")
    ]


# ---------------------------------------------------------------- cursors


MessagePosition = Position  # (requested_at, id) of a page's last message


def _summary(row: MessageRow) -> MessageSummary:
    return MessageSummary(
        id=row.id,
        customer_id=row.customer_id,
        channel=Channel(row.channel),
        priority=Priority(row.priority),
        requested_at=row.requested_at,
        requested_by=row.requested_by,
        recipient_count=sum(row.counts.values()),
        counts=row.counts,
    )


def list_message_page(
    traffic_view: TrafficView,
    caller: Caller,
    *,
    customer_id: UUID | None = None,
    channel: Channel | None = None,
    status: DeliveryStatus | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = DEFAULT_PAGE,
    cursor: str | None = None,
) -> MessagePage:
    """One page of a customer's messages, as the API and the customer's pages show it."""
    whose = customer_id if customer_id is not None else caller.customer_id
    if whose is None:
        raise InvalidInput(
            "customer_id: staff name the customer whose messages to list", field="customer_id"
        )
    if not caller.viewer().sees_customer(whose):  # the tenant guard said so already
        raise NotFound(f"customer {whose} not found")
    if since is not None and until is not None and _utc(since) > _utc(until):
        raise InvalidInput("since: must not lie after until", field="since")
    before = decode_cursor(cursor, MessagePosition) if cursor else None
    rows = traffic_view.messages(
        MessageQuery(
            customer_id=whose,
            channel=channel.value if channel else None,
            status=status.value if status else None,
            since=_utc(since) if since else None,
            until=_utc(until) if until else None,
            before=before,
            limit=limit + 1,  # one more: is there a next page?
        )
    )
    page, more = rows[:limit], len(rows) > limit
    last = page[-1] if page else None
    return MessagePage(
        items=[_summary(row) for row in page],
        next_cursor=encode_cursor((last.requested_at, last.id)) if more and last else None,
    )


@get(
    "/messages",
    sync_to_thread=True,
    opt=READ,
    summary="A customer's messages, newest first, a page at a time",
    description=(
        "Each message with its deliveries counted per status; never its content. A"
        " customer's users see their own customer's; Picasse staff name the customer with"
        " customer_id. `status` keeps messages with at least one delivery in that status."
        " Times without a time zone are UTC. The answer's next_cursor, given as `cursor`,"
        " is the next page: stable while new messages arrive."
    ),
    responses=_answers(S.NOT_FOUND, S.UNPROCESSABLE_ENTITY),
    tags=["messages"],
)
def list_messages(
    caller: NamedDependency[Caller],
    traffic_view: NamedDependency[TrafficView],
    customer_id: Annotated[
        UUID | None,
        QueryParameter(description="whose messages (Picasse staff only; others: their own)"),
    ] = None,
    channel: Annotated[Channel | None, QueryParameter(description="only this channel")] = None,
    status: Annotated[
        DeliveryStatus | None,
        QueryParameter(description="only messages with a delivery in this status"),
    ] = None,
    since: Annotated[
        datetime | None, QueryParameter(description="sent at or after this moment")
    ] = None,
    until: Annotated[datetime | None, QueryParameter(description="sent before this moment")] = None,
    limit: Annotated[
        int, QueryParameter(ge=1, le=MAX_PAGE, description="messages per page")
    ] = DEFAULT_PAGE,
    cursor: Annotated[
        str | None,
        QueryParameter(max_length=200, description="the next_cursor of the previous page"),
    ] = None,
) -> MessagePage:
    return list_message_page(
        traffic_view, caller, customer_id=customer_id, channel=channel, status=status,
        since=since, until=until, limit=limit, cursor=cursor,
    )  # fmt: skip


def delivery_rows(
    traffic_view: TrafficView, message_id: UUID, *, cursor: str | None, limit: int = DEFAULT_PAGE
) -> tuple[list[DeliveryRow], str | None]:
    """One page of a message's deliveries in recipient order, and the next page's cursor."""
    after = decode_cursor(cursor, int) if cursor else None
    rows = traffic_view.deliveries_of(message_id, after_index=after, limit=limit + 1)
    page = rows[:limit]
    return page, encode_cursor(page[-1].index) if len(rows) > limit and page else None


@get(
    "/messages/{message_id:uuid}/deliveries",
    sync_to_thread=True,
    opt=READ,
    summary="A message's deliveries: the status per recipient, a page at a time",
    description=(
        "In recipient order. Recipients are shown to the customer's users and to support"
        " and platform admins; auditors get none. next_cursor, given as `cursor`, is the"
        " next page."
    ),
    responses=_answers(S.NOT_FOUND, S.UNPROCESSABLE_ENTITY),
    tags=["messages"],
)
def list_deliveries(
    message_id: MessageId,
    caller: NamedDependency[Caller],
    traffic_view: NamedDependency[TrafficView],
    limit: Annotated[
        int, QueryParameter(ge=1, le=MAX_PAGE, description="deliveries per page")
    ] = DEFAULT_PAGE,
    cursor: Annotated[
        str | None,
        QueryParameter(max_length=200, description="the next_cursor of the previous page"),
    ] = None,
) -> DeliveryPage:
    viewer = caller.viewer()
    message = traffic_view.message_row(message_id)
    if message is None or not viewer.sees_customer(message.customer_id):
        raise NotFound(f"message {message_id} not found")
    page, next_cursor = delivery_rows(traffic_view, message_id, cursor=cursor, limit=limit)
    recipients = viewer.sees_traffic_of(message.customer_id)
    return DeliveryPage(
        items=[
            DeliveryEntry(
                id=row.id,
                index=row.index,
                to=row.recipient if recipients else None,
                status=DeliveryStatus(row.status),
                attempts=row.attempts,
                reason=row.reason,
                provider=row.provider,
                acknowledged=row.acknowledged,
                updated_at=row.updated_at,
            )
            for row in page
        ],
        next_cursor=next_cursor,
    )


@delete(
    "/messages/{message_id:uuid}",
    sync_to_thread=True,
    opt=SEND,
    status_code=HTTPStatus.NO_CONTENT,
    guards=[allowed(Viewer.may_send_messages_for, "only a customer's users cancel messages")],
    summary="Cancel a scheduled message before any of it is sent",
    description=(
        "Only a message scheduled for later (schedule_at) whose deliveries have not"
        " started: they read `cancelled` and nothing is sent. Otherwise 409 with code"
        " message-not-cancellable. Cancelling a cancelled message answers 204 again."
    ),
    responses=_answers(S.NOT_FOUND, S.CONFLICT),
    tags=["messages"],
)
def cancel_message(
    message_id: MessageId, caller: NamedDependency[Caller], messages: NamedDependency[Messages]
) -> None:
    messages.cancel(message_id, caller.viewer())


ROUTES: tuple[Any, ...] = (list_messages, list_deliveries, cancel_message)
