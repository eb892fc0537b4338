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
from http import HTTPStatus
from typing import Any
from uuid import UUID

from litestar import Request, Response, Router, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath

from picasse.adapters.http.pages import (
    MAX_FORM_BYTES,
    Dashboard,
    PageGuard,
    _caller,
    caller_page,
)
from picasse.adapters.http.problems import problem_for
from picasse.adapters.webhook_posts import check_destination
from picasse.domain.access import Viewer
from picasse.domain.errors import DomainError
from picasse.domain.webhooks import WebhookEventType

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
        route_handlers=[home, webhooks_page, create_webhook, delete_webhook],
        guards=[customers_only],
    )
