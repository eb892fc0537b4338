"""The telephony provider's reports on `POST /v1/webhooks/telephony`: a caller dialling in
with a PIN (we answer whether to admit them), joined, left, started, ended, a recording.

Signed like the gateways' receipts and checked by the same verifier
(`receipts.verified_signer`) with the provider's token. A forged report is refused (401)
and a replayed one (a report id taken already, or one older than `FRESH_FOR`) too (409);
neither records anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from http import HTTPStatus
from typing import Annotated
from uuid import UUID

import msgspec
from litestar import Response, post
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema
from litestar.params import HeaderParameter, RawBody
from msgspec import Meta

from picasse.adapters.http.auth import PUBLIC
from picasse.adapters.http.problems import problem_responses
from picasse.adapters.http.webhooks import _retrying
from picasse.adapters.providers.receipts import SIGNATURE_HEADER, verified_signer
from picasse.adapters.providers.telephony import (
    TELEPHONY_PATH,
    DialIn,
    Ended,
    Joined,
    Left,
    Started,
    read_report,
)
from picasse.domain.conferences import CallRole
from picasse.domain.conferencing import Conferences, Replayed
from picasse.domain.errors import DomainError

MAX_REPORT_BYTES = 16 * 1024
FRESH_FOR = timedelta(minutes=5)  # a report older (or newer) than this by our clock is a replay


class AdmissionOut(msgspec.Struct, frozen=True, omit_defaults=True):
    """The answer to a dial-in."""

    admit: Annotated[bool, Meta(description="whether to put the caller through")]
    role: Annotated[CallRole | None, Meta(description="host or participant")] = None
    conference: Annotated[UUID | None, Meta(description="the conference to join them to")] = None
    participant: Annotated[
        UUID | None, Meta(description="their participant id (host controls name it)")
    ] = None
    reason: Annotated[
        str | None, Meta(description="why not: wrong-pin, rate-limited or locked")
    ] = None


@dataclass
class _ReportOperation(Operation):
    """Documents the body we read raw to check its signature."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description=(
                "A report, signed in X-Picasse-Signature: sha256=<hex HMAC-SHA256 of these"
                " bytes keyed with the telephony token>. JSON with `type` (dial-in, joined,"
                " left, started, ended, recording), `id` (the report's own id) and `at`; a"
                " dial-in has number, caller, pin and call; joined and left have"
                " conference and call; recording has conference and recording."
            ),
            content={
                "application/json": OpenAPIMediaType(
                    schema=Schema(type=OpenAPIType.OBJECT, description="a telephony report")
                )
            },
        )


class NoTelephony(DomainError):
    code = "no-telephony"


@post(
    TELEPHONY_PATH,
    opt=PUBLIC,  # the provider signs each report instead of logging in
    security=[],
    status_code=HTTPStatus.OK,
    sync_to_thread=True,
    request_max_body_size=MAX_REPORT_BYTES,
    operation_class=_ReportOperation,
    summary="Record a telephony provider's report on a conference call",
    description=(
        "A dial-in answers whether to admit the caller and as host or participant (wrong"
        " PINs are limited per caller and number). Joined, left, started, ended and"
        " recording are recorded (204). A report not signed with the provider's token is"
        " refused (401); one taken already, or too old, is refused as a replay (409)."
        " Neither records anything."
    ),
    responses={
        **problem_responses(
            HTTPStatus.BAD_REQUEST,
            HTTPStatus.UNAUTHORIZED,
            HTTPStatus.NOT_FOUND,
            HTTPStatus.CONFLICT,
            HTTPStatus.UNPROCESSABLE_ENTITY,
        )
    },
    tags=["webhooks"],
)
def receive_telephony_report(
    body: RawBody,
    conferences: NamedDependency[Conferences | None],
    telephony_tokens: NamedDependency[Mapping[str, str]],
    signature: Annotated[
        str | None,
        HeaderParameter(name=SIGNATURE_HEADER, description="sha256=<hex HMAC-SHA256 of the body>"),
    ] = None,
) -> Response[AdmissionOut | None]:
    # The signature covers the bytes as received: checked before anything reads them.
    verified_signer(body, signature, telephony_tokens)
    report = read_report(body)
    if conferences is None:
        raise NoTelephony("conferences are not served here")
    if abs(report.at - conferences.clock.now()) > FRESH_FOR:
        raise Replayed("the report is too old (or from the future): refused as a replay")
    if isinstance(report, DialIn):
        admission = _retrying(
            partial(
                conferences.admit, report.number, report.caller, report.pin, report.call, report.id
            )
        )
        return Response(
            AdmissionOut(
                admit=admission.admit,
                role=admission.role,
                conference=admission.conference_id,
                participant=admission.participant_id,
                reason=admission.reason,
            )
        )
    at = report.at.isoformat()
    record = partial(conferences.record_call_event, report.conference, provider_event=report.id)
    if isinstance(report, Joined):
        command = partial(record, "joined", call=report.call, at=at)
    elif isinstance(report, Left):
        command = partial(record, "left", call=report.call, at=at)
    elif isinstance(report, Started):
        command = partial(record, "started", at=at)
    elif isinstance(report, Ended):
        command = partial(record, "ended", at=at)
    else:
        command = partial(record, "recording", recording=report.recording)
    if not _retrying(command):
        raise Replayed("this report was taken already: nothing recorded")
    return Response(None, status_code=HTTPStatus.NO_CONTENT)
