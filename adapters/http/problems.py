"""Errors as application/problem+json (RFC 9457): the one place an exception becomes a response."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from http import HTTPStatus
from typing import Annotated, Any

import msgspec
from eventsourcing.persistence import IntegrityError, InterfaceError, OperationalError
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from msgspec import Meta

from picasse.adapters.http.acklinks import InvalidAckToken
from picasse.adapters.http.auth import LoginThrottled
from picasse.adapters.postgres.keystore import TenantErased
from picasse.adapters.providers.receipts import ForgedReceipt, MalformedReceipt
from picasse.adapters.providers.telephony import MalformedReport
from picasse.adapters.providers.twilio import ForgedCallback, MalformedCallback
from picasse.domain.conferencing import TelephonyUnavailable
from picasse.domain.errors import (
    AuthenticationFailed,
    Conflict,
    DomainError,
    Forbidden,
    InvalidInput,
    NotFound,
)

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class FieldError(msgspec.Struct, frozen=True):
    """One bad item of a list the request sent (e.g. a ping of a batch)."""

    index: Annotated[int, Meta(description="its position in the list, from 0")]
    field: Annotated[str, Meta(description="its field at fault")]
    reason: Annotated[str, Meta(description="what is wrong, in words (never the value)")]


class Problem(msgspec.Struct, kw_only=True, omit_defaults=True):
    """An error response (RFC 9457); `code` is stable for programs, `detail` is for people."""

    type: Annotated[str, Meta(description="urn:picasse:problem:<code>")]
    title: Annotated[str, Meta(description="the HTTP status in words")]
    status: Annotated[int, Meta(description="the HTTP status")]
    detail: Annotated[str, Meta(description="what went wrong, in words for people")]
    code: Annotated[str, Meta(description="what went wrong, as a stable code for programs")]
    field: Annotated[str | None, Meta(description="the input field at fault, when one is")] = None
    errors: Annotated[
        list[FieldError] | None,
        Meta(description="every bad item of a list refused whole, when the request sent one"),
    ] = None


# The one table from what went wrong to what the caller is told; the most specific
# class in an exception's MRO wins. Domain errors bring their own code and message; for
# the others, a fixed detail (None: the error's own words, written to be shown).
_STATUS_OF: dict[type[BaseException], tuple[HTTPStatus, str | None, str | None]] = {
    DomainError: (HTTPStatus.BAD_REQUEST, None, None),
    InvalidInput: (HTTPStatus.UNPROCESSABLE_ENTITY, None, None),
    NotFound: (HTTPStatus.NOT_FOUND, None, None),
    Conflict: (HTTPStatus.CONFLICT, None, None),
    AuthenticationFailed: (HTTPStatus.UNAUTHORIZED, None, None),
    Forbidden: (HTTPStatus.FORBIDDEN, None, None),
    LoginThrottled: (HTTPStatus.TOO_MANY_REQUESTS, None, None),
    ForgedReceipt: (HTTPStatus.UNAUTHORIZED, "forged-receipt", None),
    MalformedReceipt: (HTTPStatus.BAD_REQUEST, "malformed-receipt", None),
    MalformedReport: (HTTPStatus.BAD_REQUEST, "malformed-report", None),
    TelephonyUnavailable: (HTTPStatus.BAD_GATEWAY, None, None),
    ForgedCallback: (HTTPStatus.FORBIDDEN, "forged-callback", None),
    MalformedCallback: (HTTPStatus.BAD_REQUEST, "malformed-callback", None),
    InvalidAckToken: (HTTPStatus.NOT_FOUND, "invalid-ack-link", None),
    TenantErased: (HTTPStatus.GONE, "customer-erased", None),
    # Arithmetic on a date or number given to us that leaves what Python can hold (e.g. the
    # day after 9999-12-31): the input is at fault. Parsers refuse such values first; this
    # keeps one they miss a 400 rather than a 500.
    OverflowError: (
        HTTPStatus.BAD_REQUEST,
        "out-of-range",
        "A date or number in the request is out of the range we handle.",
    ),
    # Database errors quote SQL and keys: they are told in our words, not theirs.
    IntegrityError: (
        HTTPStatus.CONFLICT,
        "concurrent-change",
        "Someone changed the same thing at the same moment; try again.",
    ),
    OperationalError: (
        HTTPStatus.SERVICE_UNAVAILABLE,
        "unavailable",
        "The data store cannot be reached; try again later.",
    ),
    InterfaceError: (
        HTTPStatus.SERVICE_UNAVAILABLE,
        "unavailable",
        "The data store cannot be reached; try again later.",
    ),
}

_HTTP_CODES = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    413: "too-large",
    415: "unsupported-media-type",
    429: "too-many-requests",
}


def problem_for(error: Exception) -> tuple[Problem, Mapping[str, str]]:
    """The problem to answer with for `error`, and any headers it needs (e.g. Allow)."""
    if isinstance(error, HTTPException):
        try:
            status = HTTPStatus(error.status_code)
        except ValueError:
            status = HTTPStatus.INTERNAL_SERVER_ERROR
        if isinstance(error, ValidationException):
            return _invalid(status, error), error.headers or {}
        code = _HTTP_CODES.get(status, f"http-{status.value}")
        return _problem(status, code, error.detail or status.phrase), error.headers or {}
    for kind in type(error).__mro__:
        if kind in _STATUS_OF:
            status, own_code, detail = _STATUS_OF[kind]
            if isinstance(error, LoginThrottled):
                headers = {"Retry-After": str(error.retry_after)}
                return _problem(status, error.code, error.message, error.field), headers
            if isinstance(error, DomainError):
                problem = _problem(status, error.code, error.message, error.field)
                items = getattr(error, "errors", None)
                if items:
                    problem.errors = [FieldError(i.index, i.field, i.reason) for i in items]
                return problem, {}
            if status >= HTTPStatus.INTERNAL_SERVER_ERROR:
                log.warning("%s while serving a request", type(error).__name__)
            return _problem(status, own_code or "error", detail or str(error) or status.phrase), {}
    # Type and traceback only: request bodies hold phone numbers and are never logged.
    log.error("unhandled %s while serving a request", type(error).__name__, exc_info=error)
    status = HTTPStatus.INTERNAL_SERVER_ERROR
    return _problem(status, "internal-error", "Something went wrong on our side."), {}


# msgspec's reasons that quote the value sent: only their words are kept.
_QUOTING_A_VALUE = re.compile(r"^(Invalid (?:enum )?value)\b.*$")


def _invalid(status: HTTPStatus, error: ValidationException) -> Problem:
    """A request that does not fit its route's parameters or body: what is wrong with the
    first field at fault, and which field (`field`, a dotted path into the body, or the
    query or path parameter's name). The reason is msgspec's, in words; never a value
    that was sent (an invalid enum value is left out of its reason)."""
    extra = error.extra if isinstance(error.extra, list) else []
    faults = [fault for fault in extra if isinstance(fault, dict) and fault.get("message")]
    if not faults:
        return _problem(status, "invalid-input", error.detail or status.phrase)
    first = faults[0]
    reason = _QUOTING_A_VALUE.sub(r"\1", str(first["message"]))
    key = first.get("key")
    field = None if key in (None, "", "data") else str(key)  # "data": the body as a whole
    detail = reason if field is None else f"{field}: {reason}"
    if len(faults) > 1:
        detail += f" (and {len(faults) - 1} more)"
    return _problem(status, "invalid-input", detail, field)


def _problem(status: HTTPStatus, code: str, detail: str, field: str | None = None) -> Problem:
    return Problem(
        type=f"urn:picasse:problem:{code}",
        title=status.phrase,
        status=status.value,
        detail=detail,
        code=code,
        field=field,
    )


def problem_response(request: Request[Any, Any, Any], error: Exception) -> Response[bytes]:
    """The app's one exception handler: every error leaves as application/problem+json."""
    problem, headers = problem_for(error)
    return Response(
        content=msgspec.json.encode(problem),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=dict(headers),
    )


def problem_responses(*statuses: HTTPStatus) -> dict[int, ResponseSpec]:
    """OpenAPI entries saying that a route answers these statuses with a Problem."""
    return {
        status.value: ResponseSpec(
            data_container=Problem,
            media_type=PROBLEM_JSON,
            description=status.phrase,
            generate_examples=False,
        )
        for status in statuses
    }
