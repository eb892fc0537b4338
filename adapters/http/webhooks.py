"""Calls from outside into a delivery: gateways' signed receipts and recipients' ack links."""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from typing import Annotated, Any, TypeVar, get_args
from uuid import UUID

import msgspec
from eventsourcing.persistence import IntegrityError
from litestar import MediaType, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
)
from litestar.params import HeaderParameter, PathParameter, QueryParameter, RawBody
from msgspec import Meta

from picasse.adapters.http.acklinks import ACK_PATH, AckLinks
from picasse.adapters.http.auth import PUBLIC
from picasse.adapters.http.problems import problem_responses
from picasse.adapters.providers.receipts import (
    RECEIPTS_PATH,
    SIGNATURE_HEADER,
    ReceiptStatus,
    verify_receipt,
)
from picasse.adapters.providers.twilio import (
    ACK_DIGIT,
    GATHER_PATH,
    PROVIDER_NAME,
    STATUS_PATH,
    ForgedCallback,
    TwilioCallbacks,
)
from picasse.adapters.providers.twilio import SIGNATURE_HEADER as TWILIO_SIGNATURE_HEADER
from picasse.domain.errors import NotFound
from picasse.domain.messaging import Messages

MAX_RECEIPT_BYTES = 16 * 1024  # a receipt is a few hundred bytes; refuse to buffer more
# A concurrent write to the same delivery (a worker recording the hand-over, a duplicate
# receipt) makes saving fail; the command then runs again on the fresh state.
RETRIES_ON_CONCURRENT_WRITE = 2

T = TypeVar("T")


class ReceiptAnswer(msgspec.Struct, frozen=True):
    """The answer to a receipt that was accepted but recorded nothing."""

    recorded: Annotated[bool, Meta(description="false: nothing was recorded")]
    detail: Annotated[str, Meta(description="why, in words")]


NOT_RECORDED = ReceiptAnswer(
    recorded=False, detail="the delivery awaits no receipt any more; nothing was recorded"
)

# The link in an alert opens a page that asks; only the POST from its button acknowledges.
# Mail scanners and link previewers GET every link they see: a GET that acknowledged would
# tell the sender that someone read an alert no one has seen.
#
# The POST needs no login and no CSRF token: the link's token (an HMAC of the delivery id
# under our secret) is the capability itself, and it rides in the form's action URL. A
# page elsewhere can only post a token it already knows, and whoever knows the token may
# acknowledge anyway; no cookie or other ambient authority is used. (Browsers still send
# Origin, which the authentication middleware checks for every changing request.)
CONFIRM_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>Acknowledge this alert</title></head>
<body><h1>Acknowledge this alert</h1>
<p>Confirm that you have received the alert: the sender will see that you have.</p>
<form method="post" action="{action}"><button type="submit">Acknowledge</button></form>
</body>
</html>
"""
THANK_YOU_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>Acknowledged</title></head>
<body><h1>Thank you, acknowledged</h1>
<p>The sender can see that you have received this alert. You can close this page.</p></body>
</html>
"""
# The pages show nothing personal, but their URL holds the token: keep it out of caches and
# other sites' Referer headers (same-origin, not no-referrer: with no-referrer the form
# would post Origin: null, which the middleware refuses), and let the pages run nothing.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


def _receipt_schema() -> Schema:
    text = Schema(type=OpenAPIType.STRING)
    return Schema(
        type=OpenAPIType.OBJECT,
        required=["id", "reference", "status"],
        properties={
            "id": Schema(type=OpenAPIType.STRING, description="the gateway's own id"),
            "reference": Schema(
                type=OpenAPIType.STRING,
                format=OpenAPIFormat.UUID,
                description="our delivery id, as we submitted it",
            ),
            "status": Schema(
                type=OpenAPIType.STRING,
                enum=list(get_args(ReceiptStatus)),
                description="what became of the delivery",
            ),
            "reason": Schema(
                one_of=[text, Schema(type=OpenAPIType.NULL)],
                description="why it failed, in the network's words (read for a code, then dropped)",
            ),
        },
    )


@dataclass
class _ReceiptOperation(Operation):
    """Documents the body we read raw: Litestar sees no `data` parameter to describe."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description=(
                "A delivery receipt, signed: the header carries sha256=<hex HMAC-SHA256 of"
                " these exact bytes, keyed with the gateway's token>."
            ),
            content={"application/json": OpenAPIMediaType(schema=_receipt_schema())},
        )


def _receipt_responses(not_recorded: str, *more: HTTPStatus) -> dict[int, ResponseSpec]:
    """A receipt's answers: 204 recorded, 200 (saying why) nothing recorded, and problems."""
    return {
        HTTPStatus.NO_CONTENT.value: ResponseSpec(
            data_container=None, description="Recorded", generate_examples=False
        ),
        HTTPStatus.OK.value: ResponseSpec(
            data_container=ReceiptAnswer, description=not_recorded, generate_examples=False
        ),
        **problem_responses(
            HTTPStatus.BAD_REQUEST,
            *more,
            HTTPStatus.FORBIDDEN,
            HTTPStatus.NOT_FOUND,
            HTTPStatus.CONFLICT,
        ),
    }


# Both routes run in a worker thread: the domain's commands block on the database.
@post(
    RECEIPTS_PATH,
    opt=PUBLIC,  # gateways sign each receipt instead of logging in
    security=[],
    status_code=HTTPStatus.OK,  # and 204 when recorded: see the answers below
    sync_to_thread=True,
    request_max_body_size=MAX_RECEIPT_BYTES,
    operation_class=_ReceiptOperation,
    summary="Record a gateway's delivery receipt",
    description=(
        "Delivered and answered mark the delivery delivered (204); failed, undelivered,"
        " no-answer and busy mark it failed with a reason code read from the receipt (the"
        " network's own words are dropped). A receipt counts only from the gateway the"
        " delivery was handed to, for the reference that gateway answered: any other"
        " gateway's is refused (403). One that no longer applies (the delivery is final:"
        " a repeated or late receipt) answers 200 and records nothing. One that arrives"
        " before the hand-over is recorded answers 409: the gateway retries. A receipt"
        " that is not signed by one of our gateways records nothing (401)."
    ),
    responses=_receipt_responses(
        "Accepted, but the delivery awaits no receipt any more: nothing recorded",
        HTTPStatus.UNAUTHORIZED,
    ),
    tags=["webhooks"],
)
def receive_receipt(
    body: RawBody,
    messages: NamedDependency[Messages],
    receipt_tokens: NamedDependency[Mapping[str, str]],
    signature: Annotated[
        str | None,
        HeaderParameter(name=SIGNATURE_HEADER, description="sha256=<hex HMAC-SHA256 of the body>"),
    ] = None,
) -> Response[ReceiptAnswer | None]:
    # The signature covers the bytes as received: take them raw, decode only once verified.
    gateway, receipt = verify_receipt(body, signature, receipt_tokens)
    try:
        delivery_id = UUID(receipt.reference)
    except ValueError:
        raise NotFound("the receipt's reference names no delivery of ours") from None
    recorded = _retrying(
        partial(
            messages.record_receipt,
            delivery_id,
            receipt.failure,
            provider=gateway,
            reference=receipt.id,
            call_seconds=receipt.call_seconds,
        )
    )
    if recorded:
        return Response(None, status_code=HTTPStatus.NO_CONTENT)
    # A 2xx, so that the gateway stops retrying a receipt that can change nothing.
    return Response(NOT_RECORDED, status_code=HTTPStatus.OK)


TokenParameter = Annotated[
    str, PathParameter(description="the token of the link sent with the alert")
]


@get(
    f"{ACK_PATH}/{{token:str}}",
    opt=PUBLIC,  # the link's token is the recipient's proof
    security=[],
    media_type=MediaType.HTML,
    sync_to_thread=False,  # checks the token's MAC only: no database
    summary="The page an alert's acknowledgement link opens",
    description=(
        "Asks the recipient to confirm, with a button that POSTs to the same URL. Records"
        " nothing: link scanners that open every link acknowledge nothing."
    ),
    responses=problem_responses(HTTPStatus.BAD_REQUEST, HTTPStatus.NOT_FOUND),
    tags=["alerts"],
)
def ack_confirmation_page(
    token: TokenParameter, ack_links: NamedDependency[AckLinks]
) -> Response[str]:
    ack_links.verify(token)  # a made-up or changed link is a 404 here already
    page = CONFIRM_PAGE.format(action=html.escape(f"{ACK_PATH}/{token}", quote=True))
    return Response(page, media_type=MediaType.HTML, headers=PAGE_HEADERS)


@post(
    f"{ACK_PATH}/{{token:str}}",
    opt=PUBLIC,  # the link's token is the recipient's proof (and CSRF-safe: see CONFIRM_PAGE)
    security=[],
    media_type=MediaType.HTML,
    status_code=HTTPStatus.OK,
    sync_to_thread=True,
    request_max_body_size=1024,  # the form sends no fields
    summary="Acknowledge an alert: the confirmation page's button",
    description="Idempotent: posting again shows the same page and records nothing.",
    responses=problem_responses(HTTPStatus.BAD_REQUEST, HTTPStatus.NOT_FOUND),
    tags=["alerts"],
)
def acknowledge_by_link(
    token: TokenParameter,
    messages: NamedDependency[Messages],
    ack_links: NamedDependency[AckLinks],
) -> Response[str]:
    delivery_id = ack_links.verify(token)
    _retrying(partial(messages.acknowledge, delivery_id, via="link"))
    return Response(THANK_YOU_PAGE, media_type=MediaType.HTML, headers=PAGE_HEADERS)


@dataclass
class _TwilioFormOperation(Operation):
    """Documents the form Twilio posts, which we read raw to check its signature."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description=(
                "Twilio's form (MessageSid and MessageStatus, or CallSid and CallStatus, with"
                " ErrorCode; Digits for the keypad), signed in X-Twilio-Signature over our"
                " URL and the form, with the account's auth token."
            ),
            content={
                "application/x-www-form-urlencoded": OpenAPIMediaType(
                    schema=Schema(
                        type=OpenAPIType.OBJECT,
                        additional_properties=Schema(type=OpenAPIType.STRING),
                        description="Twilio's fields, as Twilio documents them",
                    )
                )
            },
        )


TwilioSignature = Annotated[
    str | None,
    HeaderParameter(
        name=TWILIO_SIGNATURE_HEADER,
        description="Twilio's signature: base64 HMAC-SHA1 of our URL and the form",
    ),
]
ReferenceParameter = Annotated[
    str, QueryParameter(name="reference", description="our delivery id, from the URL we gave")
]


def _twilio(callbacks: TwilioCallbacks | None) -> TwilioCallbacks:
    if callbacks is None:  # no account configured: nobody can sign for Twilio
        raise ForgedCallback("no Twilio account is configured")
    return callbacks


def _delivery_id(reference: str) -> UUID:
    try:
        return UUID(reference)
    except ValueError:
        raise NotFound("the callback's reference names no delivery of ours") from None


@post(
    STATUS_PATH,
    opt=PUBLIC,  # Twilio signs each callback instead of logging in
    security=[],
    status_code=HTTPStatus.OK,
    sync_to_thread=True,
    request_max_body_size=MAX_RECEIPT_BYTES,
    operation_class=_TwilioFormOperation,
    summary="Record a Twilio status callback of a message or a call",
    description=(
        "Twilio's StatusCallback for the messages and calls we created: delivered, read and"
        " completed mark the delivery delivered (204); failed, undelivered, busy, no-answer"
        " and canceled mark it failed with a reason code read from ErrorCode. Interim"
        " statuses (queued, sent, ringing…) and callbacks for a delivery that is final"
        " answer 200 and record nothing. A callback counts only for the delivery handed to"
        " Twilio under this MessageSid or CallSid (else 403); one not signed with our"
        " auth token is refused (403) and records nothing."
    ),
    responses=_receipt_responses(
        "Accepted, nothing recorded: an interim status or a final delivery"
    ),
    tags=["webhooks"],
)
def receive_twilio_status(
    request: Request[Any, Any, Any],
    body: RawBody,
    messages: NamedDependency[Messages],
    twilio_callbacks: NamedDependency[TwilioCallbacks | None],
    reference: ReferenceParameter,
    signature: TwilioSignature = None,
) -> Response[ReceiptAnswer | None]:
    callback = _twilio(twilio_callbacks).status(
        request.url.path, request.url.query, body, signature
    )
    delivery_id = _delivery_id(reference)  # in the URL Twilio signed
    if not callback.final:
        return Response(INTERIM, status_code=HTTPStatus.OK)
    recorded = _retrying(
        partial(
            messages.record_receipt,
            delivery_id,
            callback.failure,
            provider=PROVIDER_NAME,
            reference=callback.sid,
            call_seconds=callback.call_seconds,
        )
    )
    if recorded:
        return Response(None, status_code=HTTPStatus.NO_CONTENT)
    return Response(NOT_RECORDED, status_code=HTTPStatus.OK)


INTERIM = ReceiptAnswer(recorded=False, detail="an interim status; nothing was recorded")
ACKNOWLEDGED_TWIML = (
    "<Response><Say>Thank you, the alert is acknowledged. Goodbye.</Say></Response>"
)
NOT_ACKNOWLEDGED_TWIML = (
    "<Response><Say>That was not 1: the alert is not acknowledged. Goodbye.</Say></Response>"
)


@post(
    GATHER_PATH,
    opt=PUBLIC,  # Twilio signs the keypad's answer instead of logging in
    security=[],
    status_code=HTTPStatus.OK,
    media_type=MediaType.XML,
    sync_to_thread=True,
    request_max_body_size=MAX_RECEIPT_BYTES,
    operation_class=_TwilioFormOperation,
    summary="Acknowledge an alert by keypad: the Gather action of a Twilio call",
    description=(
        "The key the recipient pressed during an alert call (Digits). 1 acknowledges the"
        " alert, recorded like an acknowledgement by link; any other key records nothing."
        " Answers TwiML that tells the caller which. Counts only on the call the delivery"
        " was handed to Twilio with (CallSid, else 403); one not signed with our auth"
        " token is refused (403) and records nothing."
    ),
    responses=problem_responses(
        HTTPStatus.BAD_REQUEST, HTTPStatus.FORBIDDEN, HTTPStatus.NOT_FOUND, HTTPStatus.CONFLICT
    ),
    tags=["alerts"],
)
def acknowledge_by_keypad(
    request: Request[Any, Any, Any],
    body: RawBody,
    messages: NamedDependency[Messages],
    twilio_callbacks: NamedDependency[TwilioCallbacks | None],
    reference: ReferenceParameter,
    signature: TwilioSignature = None,
) -> Response[str]:
    form = _twilio(twilio_callbacks).verify(request.url.path, request.url.query, body, signature)
    delivery_id = _delivery_id(reference)  # in the URL Twilio signed
    if form.get("Digits") != ACK_DIGIT:
        return Response(NOT_ACKNOWLEDGED_TWIML, media_type=MediaType.XML)
    _retrying(
        partial(
            messages.acknowledge,
            delivery_id,
            via="keypad",
            provider=PROVIDER_NAME,
            reference=form.get("CallSid", ""),
        )
    )
    return Response(ACKNOWLEDGED_TWIML, media_type=MediaType.XML)


def _retrying(command: Callable[[], T]) -> T:
    """Run a load-change-save command, again if another writer saved the aggregate first."""
    for attempt in range(RETRIES_ON_CONCURRENT_WRITE + 1):
        try:
            return command()
        except IntegrityError:
            if attempt == RETRIES_ON_CONCURRENT_WRITE:
                raise
    raise AssertionError("unreachable")
