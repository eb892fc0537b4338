"""Pages for cases (R3): the customer's own under /app/cases, support's queue under
/admin/cases. The same commands as /v1/cases; the access policy decides who sees what."""

from __future__ import annotations

from http import HTTPStatus
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath
from litestar.response import Redirect

from picasse.adapters.http.pages import (
    MAX_FORM_BYTES,
    SEE_OTHER,
    Dashboard,
    PageGuard,
    _caller,
    caller_page,
)
from picasse.adapters.http.problems import problem_for
from picasse.domain.access import Viewer
from picasse.domain.cases import NEXT_STATE, CaseCategory, Cases, CaseState
from picasse.domain.errors import DomainError


def _handles_cases(viewer: Viewer) -> bool:
    return viewer.may_handle_cases()


support_only = PageGuard(_handles_cases, "cases are handled by Picasse's support")


class CaseForm(msgspec.Struct, frozen=True):
    category: str = ""
    description: str = ""


class CommentForm(msgspec.Struct, frozen=True):
    text: str = ""


class StepForm(msgspec.Struct, frozen=True):
    state: str = ""


def _cases(dashboard: Dashboard) -> Cases:
    cases = dashboard.http.cases
    assert cases is not None, "create_app gives the pages their Cases"
    return cases


CATEGORIES = [(c.value, c.value.replace("_", " ")) for c in CaseCategory]


# The customer's pages (the /app router lets the customer's users in only)


def _own_cases_page(
    request: Request[Any, Any, Any], dashboard: Dashboard, **context: Any
) -> Response[str]:
    status = context.pop("status", HTTPStatus.OK)
    caller = _caller(request)
    assert caller.customer_id is not None
    found = _cases(dashboard).cases(caller.customer_id, by=caller.viewer())
    return caller_page(
        request, "app_cases.html", status, cases=found, categories=CATEGORIES, **context
    )


@get("/cases", include_in_schema=False, sync_to_thread=True)
def own_cases_page(
    request: Request[Any, Any, Any], dashboard: NamedDependency[Dashboard]
) -> Response[str]:
    return _own_cases_page(request, dashboard)


@post("/cases", include_in_schema=False, sync_to_thread=True, request_max_body_size=MAX_FORM_BYTES)
def file_case(
    request: Request[Any, Any, Any],
    dashboard: NamedDependency[Dashboard],
    data: Annotated[CaseForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Response[Any]:
    caller = _caller(request)
    assert caller.customer_id is not None
    try:
        case = _cases(dashboard).file(
            caller.customer_id, data.category, data.description, by=caller.viewer()
        )
    except DomainError as error:
        problem, _ = problem_for(error)
        return _own_cases_page(
            request, dashboard, status=problem.status, error=error.message, form=data
        )
    return Redirect(f"/app/cases/{case.id}", status_code=SEE_OTHER)


def _case_page(
    request: Request[Any, Any, Any],
    dashboard: Dashboard,
    case_id: UUID,
    template: str,
    **context: Any,
) -> Response[str]:
    status = context.pop("status", HTTPStatus.OK)
    case = _cases(dashboard).case(case_id, by=_caller(request).viewer())
    step = NEXT_STATE.get(case.state)
    return caller_page(request, template, status, case=case, next_state=step, **context)


@get("/cases/{case_id:uuid}", include_in_schema=False, sync_to_thread=True)
def own_case_page(
    request: Request[Any, Any, Any], dashboard: NamedDependency[Dashboard], case_id: FromPath[UUID]
) -> Response[str]:
    return _case_page(request, dashboard, case_id, "app_case.html")


def _commented(
    request: Request[Any, Any, Any],
    dashboard: Dashboard,
    case_id: UUID,
    text: str,
    back: str,
    template: str,
) -> Response[Any]:
    try:
        _cases(dashboard).comment(case_id, text, by=_caller(request).viewer())
    except DomainError as error:
        problem, _ = problem_for(error)
        return _case_page(
            request, dashboard, case_id, template, status=problem.status, error=error.message
        )
    return Redirect(back, status_code=SEE_OTHER)


@post(
    "/cases/{case_id:uuid}/comments",
    include_in_schema=False,
    sync_to_thread=True,
    request_max_body_size=MAX_FORM_BYTES,
)
def comment_on_own_case(
    request: Request[Any, Any, Any],
    dashboard: NamedDependency[Dashboard],
    case_id: FromPath[UUID],
    data: Annotated[CommentForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Response[Any]:
    back = f"/app/cases/{case_id}"
    return _commented(request, dashboard, case_id, data.text, back, "app_case.html")


# Support's pages (the /admin router lets staff in; these, support and admins only)


@get("/cases", include_in_schema=False, sync_to_thread=True, guards=[support_only])
def case_queue_page(
    request: Request[Any, Any, Any], dashboard: NamedDependency[Dashboard]
) -> Response[str]:
    queue = _cases(dashboard).queue(by=_caller(request).viewer())
    return caller_page(request, "cases.html", cases=queue)


@get("/cases/{case_id:uuid}", include_in_schema=False, sync_to_thread=True, guards=[support_only])
def case_page(
    request: Request[Any, Any, Any], dashboard: NamedDependency[Dashboard], case_id: FromPath[UUID]
) -> Response[str]:
    return _case_page(request, dashboard, case_id, "case.html")


@post(
    "/cases/{case_id:uuid}/comments",
    include_in_schema=False,
    sync_to_thread=True,
    guards=[support_only],
    request_max_body_size=MAX_FORM_BYTES,
)
def reply_to_case(
    request: Request[Any, Any, Any],
    dashboard: NamedDependency[Dashboard],
    case_id: FromPath[UUID],
    data: Annotated[CommentForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Response[Any]:
    back = f"/admin/cases/{case_id}"
    return _commented(request, dashboard, case_id, data.text, back, "case.html")


@post(
    "/cases/{case_id:uuid}/state",
    include_in_schema=False,
    sync_to_thread=True,
    guards=[support_only],
    request_max_body_size=MAX_FORM_BYTES,
)
def move_case(
    request: Request[Any, Any, Any],
    dashboard: NamedDependency[Dashboard],
    case_id: FromPath[UUID],
    data: Annotated[StepForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Response[Any]:
    try:
        _cases(dashboard).move(case_id, data.state, by=_caller(request).viewer())
    except DomainError as error:
        problem, _ = problem_for(error)
        return _case_page(
            request, dashboard, case_id, "case.html", status=problem.status, error=error.message
        )
    return Redirect(f"/admin/cases/{case_id}", status_code=SEE_OTHER)


CUSTOMER_PAGES: tuple[Any, ...] = (own_cases_page, file_case, own_case_page, comment_on_own_case)
STAFF_PAGES: tuple[Any, ...] = (case_queue_page, case_page, reply_to_case, move_case)
__all__ = ["CUSTOMER_PAGES", "STAFF_PAGES", "CaseState"]
