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

from typing import Any
from uuid import UUID

from litestar import Request, Response, Router, get
from litestar.di import NamedDependency

from picasse.adapters.http.pages import Dashboard, PageGuard, _caller, caller_page
from picasse.domain.access import Viewer

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


def customer_pages_router() -> Router:
    """Every page under /app (the pages router gives them its dependencies and error page)."""
    return Router(path="/app", route_handlers=[home], guards=[customers_only])
