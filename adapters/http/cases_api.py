"""Complaints and fault reports under /v1/cases (R3).

| route                              | platform_admin, support | auditor | customer_admin, customer_user |
|------------------------------------|-------------------------|---------|-------------------------------|
| POST /v1/cases                     | no                      | no      | own                           |
| GET /v1/cases                      | the queue (not closed)  | no      | own                           |
| GET /v1/cases/{case_id}            | ✓                       | no      | own                           |
| POST /v1/cases/{case_id}/comments  | ✓ (a reply)             | no      | own                           |
| PATCH /v1/cases/{case_id}          | ✓                       | no      | no                            |

What the `Viewer` says decides each; the words are sealed under the customer's `case` key.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import get, patch, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter

from picasse.adapters.http.api import CASE_STATE, S, _answers
from picasse.adapters.http.auth import Caller, allowed, scoped
from picasse.domain.access import Viewer
from picasse.domain.api_keys import Scope
from picasse.domain.cases import CaseCategory, CaseDetails, Cases, CaseState
from picasse.domain.errors import Forbidden

SCOPE = scoped(Scope.CASES)
CaseId = Annotated[UUID, PathParameter(description="the case's id")]
MAX_CASE_BODY = 64 * 1024
_see = allowed(Viewer.sees_cases_of, "your role does not handle cases")
_file = allowed(Viewer.may_file_cases_for, "cases are filed by the customer's own users")
_handle = allowed(Viewer.may_handle_cases, "only support moves a case along")


class NewCase(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    category: Annotated[CaseCategory, msgspec.Meta(description="complaint or fault_report")]
    description: Annotated[str, msgspec.Meta(description="what happened, in your words")]
    message_id: Annotated[
        UUID | None, msgspec.Meta(description="the message it is about, if any")
    ] = None
    conference_id: Annotated[
        UUID | None, msgspec.Meta(description="the conference call it is about, if any")
    ] = None

    def __repr__(self) -> str:  # the customer's words stay out of every log line
        return f"NewCase(category={self.category.value})"


class NewComment(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    text: Annotated[str, msgspec.Meta(description="a comment, or support's reply")]

    def __repr__(self) -> str:
        return "NewComment(…)"


class CaseStep(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    state: Annotated[
        CaseState,
        msgspec.Meta(description=CASE_STATE),
    ]


class CommentOut(msgspec.Struct, frozen=True):
    at: Annotated[datetime, msgspec.Meta(description="when it was written")]
    from_support: Annotated[bool, msgspec.Meta(description="true for Picasse support's replies")]
    text: Annotated[str | None, msgspec.Meta(description="its words; None once erased")]


class CaseOut(msgspec.Struct, frozen=True):
    id: Annotated[UUID, msgspec.Meta(description="the case's id")]
    customer_id: Annotated[UUID, msgspec.Meta(description="whose case it is")]
    category: Annotated[CaseCategory, msgspec.Meta(description="complaint or fault_report")]
    state: Annotated[CaseState, msgspec.Meta(description=CASE_STATE)]
    description: Annotated[str | None, msgspec.Meta(description="None once erased")]
    message_id: Annotated[UUID | None, msgspec.Meta(description="the message it is about")]
    conference_id: Annotated[UUID | None, msgspec.Meta(description="the conference it is about")]
    filed_at: Annotated[datetime, msgspec.Meta(description="when it was filed")]
    comments: Annotated[
        list[CommentOut], msgspec.Meta(description="comments and replies, oldest first")
    ]


def case_out(case: CaseDetails) -> CaseOut:
    return CaseOut(
        id=case.id,
        customer_id=case.customer_id,
        category=case.category,
        state=case.state,
        description=case.description,
        message_id=case.message_id,
        conference_id=case.conference_id,
        filed_at=case.filed_at,
        comments=[
            CommentOut(at=c.at, from_support=c.from_support, text=c.text) for c in case.comments
        ],
    )


@post(
    "/cases",
    sync_to_thread=True,
    opt=SCOPE,
    guards=[_file],
    request_max_body_size=MAX_CASE_BODY,
    summary="File a complaint or a fault report",
    description=(
        "For the customer's own users. The description is sealed under the customer's key;"
        " a `message_id` must name one of the customer's messages (422 otherwise)."
    ),
    responses=_answers(S.GONE, S.UNPROCESSABLE_ENTITY),
    tags=["cases"],
)
def file_case(
    data: JSONBody[NewCase], caller: NamedDependency[Caller], cases: NamedDependency[Cases]
) -> CaseOut:
    if caller.customer_id is None:
        raise Forbidden("cases are filed by the customer's own users")
    return case_out(
        cases.file(
            caller.customer_id,
            data.category.value,
            data.description,
            by=caller.viewer(),
            message_id=data.message_id,
            conference_id=data.conference_id,
        )
    )


@get(
    "/cases",
    sync_to_thread=True,
    opt=SCOPE,
    guards=[_see],
    summary="Cases: the customer's own, or support's queue",
    description=(
        "A customer's users get their customer's cases, newest first; support and platform"
        " admins get the queue of every case not yet closed, oldest first."
    ),
    responses=_answers(),
    tags=["cases"],
)
def list_cases(caller: NamedDependency[Caller], cases: NamedDependency[Cases]) -> list[CaseOut]:
    viewer = caller.viewer()
    if caller.customer_id is None:
        return [case_out(c) for c in cases.queue(by=viewer)]
    return [case_out(c) for c in cases.cases(caller.customer_id, by=viewer)]


@get(
    "/cases/{case_id:uuid}",
    sync_to_thread=True,
    opt=SCOPE,
    guards=[_see],
    summary="One case, with its comments and replies",
    description="Another customer's case answers 404.",
    responses=_answers(S.NOT_FOUND),
    tags=["cases"],
)
def show_case(
    case_id: CaseId, caller: NamedDependency[Caller], cases: NamedDependency[Cases]
) -> CaseOut:
    return case_out(cases.case(case_id, by=caller.viewer()))


@post(
    "/cases/{case_id:uuid}/comments",
    sync_to_thread=True,
    opt=SCOPE,
    guards=[_see],
    request_max_body_size=MAX_CASE_BODY,
    summary="Comment on a case (support: reply to it)",
    description="A closed case takes no more comments (409 case-closed).",
    responses=_answers(S.NOT_FOUND, S.CONFLICT, S.UNPROCESSABLE_ENTITY),
    tags=["cases"],
)
def comment_on_case(
    case_id: CaseId,
    data: JSONBody[NewComment],
    caller: NamedDependency[Caller],
    cases: NamedDependency[Cases],
) -> CaseOut:
    return case_out(cases.comment(case_id, data.text, by=caller.viewer()))


@patch(
    "/cases/{case_id:uuid}",
    sync_to_thread=True,
    opt=SCOPE,
    guards=[_handle],
    summary="Move a case to its next state",
    description=(
        "open → in_progress → resolved → closed, one step at a time; any other step answers"
        " 409 case-step-refused. Each step is recorded as an event."
    ),
    responses=_answers(S.NOT_FOUND, S.CONFLICT, S.UNPROCESSABLE_ENTITY),
    tags=["cases"],
)
def move_case(
    case_id: CaseId,
    data: JSONBody[CaseStep],
    caller: NamedDependency[Caller],
    cases: NamedDependency[Cases],
) -> CaseOut:
    return case_out(cases.move(case_id, data.state.value, by=caller.viewer()))


ROUTES: tuple[Any, ...] = (file_case, list_cases, show_case, comment_on_case, move_case)
STRICT_BODIES = (NewCase, NewComment, CaseStep)
