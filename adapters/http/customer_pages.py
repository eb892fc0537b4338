"""The customer's own pages under /app: server-rendered like the dashboard, for its users.

A customer's users log in at /login like staff and land here. Every page is for the
caller's own customer only: no page takes a customer id, so there is no other tenant to
name. Who sees which page is the access policy's to say (`domain/access.py` `Viewer`):
`Viewer.may_use_customer_pages` guards them all, and `Viewer.may_administer` the pages of
the customer's own settings (users, API keys, webhooks, templates); the navigation in
`app.html` asks the same questions. Pages of later capabilities go here too, one section
per page, with a template `app_<page>.html` that extends `app.html`.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from http import HTTPStatus
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath, QueryParameter
from litestar.response import Redirect

from picasse.adapters.http.charts import CHANNELS, OUTCOMES, deliveries_chart, outcome_totals
from picasse.adapters.http.messages_api import MessagePage, delivery_rows, list_message_page
from picasse.adapters.http.pages import (
    CHART_DAYS,
    MAX_FORM_BYTES,
    Dashboard,
    PageGuard,
    _caller,
    _parse,
    _today,
    caller_page,
)
from picasse.adapters.http.problems import problem_for
from picasse.adapters.webhook_posts import check_destination
from picasse.domain.access import Viewer
from picasse.domain.errors import DomainError, InvalidInput, NotFound
from picasse.domain.messages import Channel, DeliveryStatus
from picasse.domain.webhooks import WebhookEventType
from picasse.projections.traffic import DeliveryRow

customers_only = PageGuard(
    Viewer.may_use_customer_pages,
    "these pages are for a customer's users; Picasse staff use the dashboard at /admin/",
)


def _administers_own(viewer: Viewer) -> bool:
    return viewer.may_administer(viewer.customer_id)


admins_only = PageGuard(_administers_own, "only the customer's admins manage its settings")


def own_customer(request: Request[Any, Any, Any]) -> UUID:
    """The caller's customer: the only one these pages ever show (the guard saw to it)."""
    customer_id = _caller(request).customer_id
    assert customer_id is not None, "customers_only lets a customer's users in only"
    return customer_id


# Home


@get("/", include_in_schema=False, sync_to_thread=True)
def home(request: Request[Any, Any, Any], dashboard: NamedDependency[Dashboard]) -> Response[str]:
    customer_id = own_customer(request)
    rows = dashboard.accounts.customers(customer_id=customer_id)
    organisation = rows[0].organisation if rows else None
    return caller_page(request, "app_home.html", organisation=organisation)


# Messages: the customer's own, a page at a time, and one message's deliveries

STATUS_CLASS = {"delivered": "ok", "failed": "bad", "undelivered": "bad", "cancelled": "idle"}


@get("/messages", include_in_schema=False, sync_to_thread=True)
def messages_page(
    request: Request[Any, Any, Any],
    dashboard: NamedDependency[Dashboard],
    status: Annotated[str | None, QueryParameter()] = None,
    channel: Annotated[str | None, QueryParameter()] = None,
    cursor: Annotated[str | None, QueryParameter()] = None,
) -> Response[str]:
    errors: list[str] = []
    wanted_status = _parse(status, DeliveryStatus, "status", errors)
    wanted_channel = _parse(channel, Channel, "channel", errors)
    found = MessagePage(items=[], next_cursor=None)
    if not errors:
        try:
            found = list_message_page(
                dashboard.traffic, _caller(request), channel=wanted_channel,
                status=wanted_status, cursor=cursor or None,
            )  # fmt: skip
        except InvalidInput as error:  # a cursor of no list of ours
            errors.append(error.message)
    return caller_page(
        request,
        "app_messages.html",
        HTTPStatus.BAD_REQUEST if errors else HTTPStatus.OK,
        page=found,
        errors=errors,
        wanted_status=wanted_status,
        wanted_channel=wanted_channel,
        statuses=list(DeliveryStatus),
        channels=CHANNELS,
        status_class=STATUS_CLASS,
        first_page=not cursor,
    )


@get("/messages/{message_id:uuid}", include_in_schema=False, sync_to_thread=True)
def message_page(
    request: Request[Any, Any, Any],
    dashboard: NamedDependency[Dashboard],
    message_id: FromPath[UUID],
    cursor: Annotated[str | None, QueryParameter()] = None,
) -> Response[str]:
    message = dashboard.traffic.message_row(message_id)
    if message is None or message.customer_id != own_customer(request):
        raise NotFound(f"There is no message {message_id}.")
    errors: list[str] = []
    rows: list[DeliveryRow] = []
    next_cursor = None
    try:
        rows, next_cursor = delivery_rows(dashboard.traffic, message_id, cursor=cursor or None)
    except InvalidInput as error:  # a cursor of no list of ours
        errors.append(error.message)
    return caller_page(
        request,
        "app_message.html",
        HTTPStatus.BAD_REQUEST if errors else HTTPStatus.OK,
        message=message,
        deliveries=rows,
        errors=errors,
        next_cursor=next_cursor,
        status_class=STATUS_CLASS,
    )


# Traffic: the customer's own deliveries per day


@get("/traffic", include_in_schema=False, sync_to_thread=True)
def traffic_page(
    request: Request[Any, Any, Any], dashboard: NamedDependency[Dashboard]
) -> Response[str]:
    today = _today(dashboard)
    first = today - timedelta(days=CHART_DAYS - 1)
    counts = dashboard.traffic.daily_counts(own_customer(request), first, today)
    return caller_page(
        request,
        "app_traffic.html",
        chart=deliveries_chart(counts, first, today),
        totals=outcome_totals(counts),
        outcomes=OUTCOMES,
        first=first,
        today=today,
    )


# Templates: the customer's stored texts, for its admins


class TemplateForm(msgspec.Struct, frozen=True):
    name: str = ""
    channel: str = ""
    text: str = ""


def _templates_page(
    request: Request[Any, Any, Any], dashboard: NamedDependency[Dashboard], **context: Any
) -> Response[str]:
    status = context.pop("status", HTTPStatus.OK)
    templates = dashboard.http.messages.templates(own_customer(request))
    return caller_page(
        request, "app_templates.html", status, templates=templates, channels=CHANNELS, **context
    )


@get("/templates", include_in_schema=False, sync_to_thread=True, guards=[admins_only])
def templates_page(
    request: Request[Any, Any, Any], dashboard: NamedDependency[Dashboard]
) -> Response[str]:
    return _templates_page(request, dashboard)


@post(
    "/templates",
    include_in_schema=False,
    sync_to_thread=True,
    guards=[admins_only],
    request_max_body_size=MAX_FORM_BYTES,
)
def create_template(
    request: Request[Any, Any, Any],
    dashboard: NamedDependency[Dashboard],
    data: Annotated[TemplateForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Response[Any]:
    """Stores a template (the same command as `POST /v1/templates`)."""
    try:
        dashboard.http.messages.save_template(
            own_customer(request), data.channel, data.name, data.text
        )
    except DomainError as error:
        problem, _ = problem_for(error)
        return _templates_page(
            request, dashboard, status=problem.status, error=error.message, form=data
        )
    return Redirect("/app/templates", status_code=HTTPStatus.SEE_OTHER)


@post(
    "/templates/{template_id:uuid}/delete",
    include_in_schema=False,
    sync_to_thread=True,
    guards=[admins_only],
)
def delete_template(
    request: Request[Any, Any, Any],
    dashboard: NamedDependency[Dashboard],
    template_id: FromPath[UUID],
) -> Response[Any]:
    dashboard.http.messages.delete_template(own_customer(request), template_id)
    return Redirect("/app/templates", status_code=HTTPStatus.SEE_OTHER)


# Webhooks (the customer's admins): the endpoints, their recent attempts, create and delete

ATTEMPTS_SHOWN = 10  # per endpoint; GET /v1/webhooks/{id}/attempts gives more


def _webhooks_page(
    request: Request[Any, Any, Any],
    dashboard: Dashboard,
    status: int = HTTPStatus.OK,
    **context: Any,
) -> Response[str]:
    http = dashboard.http
    endpoints = http.webhooks.endpoints(own_customer(request), by=_caller(request).viewer())
    attempts = {e.id: http.webhook_log.attempts(e.id, limit=ATTEMPTS_SHOWN) for e in endpoints}
    return caller_page(
        request,
        "app_webhooks.html",
        status,
        endpoints=endpoints,
        attempts=attempts,
        event_types=[t.value for t in WebhookEventType],
        **context,
    )


@get("/webhooks", guards=[admins_only], include_in_schema=False, sync_to_thread=True)
def webhooks_page(
    request: Request[Any, Any, Any], dashboard: NamedDependency[Dashboard]
) -> Response[str]:
    return _webhooks_page(request, dashboard)


@post(
    "/webhooks",
    guards=[admins_only],
    include_in_schema=False,
    request_max_body_size=MAX_FORM_BYTES,
)
async def create_webhook(
    request: Request[Any, Any, Any], dashboard: NamedDependency[Dashboard]
) -> Response[str]:
    """Registers an endpoint (as `POST /v1/webhooks` does) and shows its secret, once."""
    form = await request.form()
    url = str(form.get("url") or "")
    events = [str(value) for value in form.getall("events", [])]
    http = dashboard.http
    try:
        await check_destination(url, allow_private=http.webhooks_allow_private)
        new = await asyncio.to_thread(
            http.webhooks.register,
            own_customer(request),
            url,
            events,
            by=_caller(request).viewer(),
        )
    except DomainError as error:
        problem, _ = problem_for(error)
        return await asyncio.to_thread(
            _webhooks_page, request, dashboard, problem.status, error=error.message, url=url
        )
    return await asyncio.to_thread(
        _webhooks_page, request, dashboard, HTTPStatus.CREATED, created=new.endpoint,
        secret=new.secret,
    )  # fmt: skip


@post(
    "/webhooks/{webhook_id:uuid}/delete",
    guards=[admins_only],
    include_in_schema=False,
    sync_to_thread=True,
    request_max_body_size=MAX_FORM_BYTES,
)
def delete_webhook(
    request: Request[Any, Any, Any],
    dashboard: NamedDependency[Dashboard],
    webhook_id: FromPath[UUID],
) -> Response[str]:
    """Deletes an endpoint (another customer's is a 404, as in the API)."""
    dashboard.http.webhooks.delete(webhook_id, by=_caller(request).viewer())
    dashboard.http.webhook_log.cancel(webhook_id)
    return _webhooks_page(request, dashboard, deleted=webhook_id)


def customer_pages_router() -> Router:
    """Every page under /app (the pages router gives them its dependencies and error page)."""
    return Router(
        path="/app",
        route_handlers=[
            home,
            messages_page,
            message_page,
            traffic_page,
            templates_page,
            create_template,
            delete_template,
            webhooks_page,
            create_webhook,
            delete_webhook,
        ],
        guards=[customers_only],
    )
