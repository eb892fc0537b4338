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
from collections.abc import Callable
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

from picasse.adapters.http.api import change_and_end_sessions, invite_and_mail
from picasse.adapters.http.case_pages import CUSTOMER_PAGES as CUSTOMER_CASE_PAGES
from picasse.adapters.http.charts import CHANNELS, OUTCOMES, deliveries_chart, outcome_totals
from picasse.adapters.http.messages_api import MessagePage, delivery_rows, list_message_page
from picasse.adapters.http.pages import (
    CHART_DAYS,
    MAX_FORM_BYTES,
    SEE_OTHER,
    STATUS_CLASS,
    Dashboard,
    PageGuard,
    _caller,
    _parse,
    _today,
    caller_page,
)
from picasse.adapters.http.problems import problem_for
from picasse.adapters.http.webhook_endpoints import enable_endpoint
from picasse.adapters.webhook_posts import check_destination
from picasse.domain.access import Viewer
from picasse.domain.accounts import UserDetails
from picasse.domain.api_keys import SCOPE_DESCRIPTIONS, IssuedKey
from picasse.domain.errors import DomainError, InvalidInput, NotFound
from picasse.domain.messages import Channel, DeliveryStatus
from picasse.domain.personal import Erased
from picasse.domain.values import Role
from picasse.domain.webhooks import WebhookEventType
from picasse.projections.accounts import ApiKeyRow, UserRow
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
    return Redirect("/app/templates", status_code=SEE_OTHER)


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
    return Redirect("/app/templates", status_code=SEE_OTHER)


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


@post(
    "/webhooks/{webhook_id:uuid}/enable",
    guards=[admins_only],
    include_in_schema=False,
    sync_to_thread=True,
    request_max_body_size=MAX_FORM_BYTES,
)
def enable_webhook(
    request: Request[Any, Any, Any],
    dashboard: NamedDependency[Dashboard],
    webhook_id: FromPath[UUID],
) -> Response[str]:
    """Enables a disabled endpoint again (as `POST /v1/webhooks/{id}/enable` does)."""
    http = dashboard.http
    enable_endpoint(http.webhooks, http.webhook_log, webhook_id, _caller(request).viewer())
    return _webhooks_page(request, dashboard, enabled=webhook_id)


# Shared by the admin pages: a form's fields, and a command's refusal shown on its page.


async def _form(request: Request[Any, Any, Any]) -> dict[str, list[str]]:
    form = await request.form()
    return {name: [str(v) for v in form.getall(name)] for name in form}


def _one(form: dict[str, list[str]], name: str) -> str:
    return (form.get(name) or [""])[0]


async def _attempt(command: Callable[[], Any]) -> tuple[Any, str | None, int]:
    """The command's result, or the refusal's message and status (the API's, for the page)."""
    try:
        return await asyncio.to_thread(command), None, 200
    except DomainError as error:
        problem, _ = problem_for(error)
        return None, error.message, problem.status


# Users (the customer's admins)

CUSTOMER_ROLES = (Role.CUSTOMER_ADMIN, Role.CUSTOMER_USER)


def _role(text: str) -> Role:
    if text not in {r.value for r in CUSTOMER_ROLES}:
        raise InvalidInput("role: customer_admin or customer_user", field="role")
    return Role(text)


def _users_page(
    request: Request[Any, Any, Any],
    dashboard: Dashboard,
    *,
    changed: UserDetails | None = None,
    status: int = 200,
    **context: Any,
) -> Response[str]:
    """The users from the view, with a user just changed as the command left it (the view
    follows the log a moment later)."""
    customer_id = own_customer(request)
    rows = {u.id: u for u in dashboard.accounts.users(customer_id=customer_id)}
    if changed is not None:
        old = rows.get(changed.id)
        rows[changed.id] = UserRow(
            id=changed.id,
            customer_id=changed.customer_id,
            login=None if isinstance(changed.login, Erased) else changed.login,
            role=changed.role.value,
            disabled=changed.disabled,
            added_at=old.added_at if old else dashboard.http.clock.now(),
            email=old.email if old else None,
        )
    return caller_page(
        request,
        "app_users.html",
        status,
        users=list(rows.values()),
        roles=[r.value for r in CUSTOMER_ROLES],
        me=_caller(request).user_id,
        **context,
    )


@get("/users", include_in_schema=False, sync_to_thread=True, guards=[admins_only])
def users_page(
    request: Request[Any, Any, Any], dashboard: NamedDependency[Dashboard]
) -> Response[str]:
    return _users_page(request, dashboard)


@post(
    "/users",
    include_in_schema=False,
    guards=[admins_only],
    request_max_body_size=MAX_FORM_BYTES,
)
async def add_user(
    request: Request[Any, Any, Any], dashboard: NamedDependency[Dashboard]
) -> Response[str]:
    """Invites a user (the same command as `POST /v1/customers/{id}/users`): a one-time
    set-password link goes to their e-mail address."""
    form, customer_id, viewer = (
        await _form(request),
        own_customer(request),
        _caller(request).viewer(),
    )
    http = dashboard.http

    def invite() -> UserDetails:
        return invite_and_mail(
            http,
            customer_id,
            login=_one(form, "login"),
            role=_role(_one(form, "role")),
            email=_one(form, "email"),
            by=viewer,
        )

    added, error, status = await _attempt(invite)
    return await asyncio.to_thread(
        lambda: _users_page(
            request, dashboard, changed=added, status=status, error=error, added=added
        )
    )


@post(
    "/users/{user_id:uuid}",
    include_in_schema=False,
    guards=[admins_only],
    request_max_body_size=MAX_FORM_BYTES,
)
async def change_user(
    request: Request[Any, Any, Any], dashboard: NamedDependency[Dashboard], user_id: FromPath[UUID]
) -> Response[str]:
    """A user's role, or disabling and enabling them (the same command as `PATCH
    /v1/customers/{id}/users/{user_id}`); disabling ends their sessions."""
    form, customer_id, viewer = (
        await _form(request),
        own_customer(request),
        _caller(request).viewer(),
    )
    http = dashboard.http

    def change() -> UserDetails:
        role, disabled = _one(form, "role"), _one(form, "disabled")
        return change_and_end_sessions(
            http,
            customer_id,
            user_id,
            role=_role(role) if role else None,
            disabled={"true": True, "false": False}.get(disabled),
            by=viewer,
        )

    changed, error, status = await _attempt(change)
    return await asyncio.to_thread(
        lambda: _users_page(
            request, dashboard, changed=changed, status=status, error=error, done=changed
        )
    )


# API keys (the customer's admins)


def _keys_page(
    request: Request[Any, Any, Any],
    dashboard: Dashboard,
    *,
    status: int = 200,
    new_key: IssuedKey | None = None,
    **context: Any,
) -> Response[str]:
    """The customer's keys from the view, a key just made first (the view follows soon)."""
    customer_id = own_customer(request)
    keys = dashboard.accounts.api_keys(customer_id=customer_id)
    if new_key is not None:  # as the command made it: the view may have none of it, or half
        seen = [k for k in keys if k.id == new_key.id]
        keys = [k for k in keys if k.id != new_key.id]
        keys.insert(
            0,
            ApiKeyRow(
                id=new_key.id,
                customer_id=customer_id,
                user_id=_caller(request).user_id,
                name=new_key.name,
                scopes=new_key.scopes,
                created_at=seen[0].created_at if seen else dashboard.http.clock.now(),
                revoked=False,
            ),
        )
    # Only the keys' creators: never every user of the customer.
    creators = list({k.user_id for k in keys})
    logins = {u.id: u.login for u in dashboard.accounts.users_by_id(creators)}
    return caller_page(
        request,
        "app_api_keys.html",
        status,
        keys=keys,
        logins=logins,
        scopes=[(s.value, text) for s, text in SCOPE_DESCRIPTIONS.items()],
        new_key=new_key,
        **context,
    )


@get("/api-keys", include_in_schema=False, sync_to_thread=True, guards=[admins_only])
def api_keys_page(
    request: Request[Any, Any, Any], dashboard: NamedDependency[Dashboard]
) -> Response[str]:
    return _keys_page(request, dashboard)


@post(
    "/api-keys",
    include_in_schema=False,
    guards=[admins_only],
    request_max_body_size=MAX_FORM_BYTES,
)
async def create_api_key(
    request: Request[Any, Any, Any], dashboard: NamedDependency[Dashboard]
) -> Response[str]:
    """A key for the admin (the same command as `POST /v1/api-keys`), shown this once."""
    form, caller = await _form(request), _caller(request)
    issue = dashboard.http.api_keys.issue

    def create() -> IssuedKey:
        return issue(
            user_id=caller.user_id,
            customer_id=caller.customer_id,
            name=_one(form, "name"),
            scopes=form.get("scopes", []),
        )

    issued, error, status = await _attempt(create)
    return await asyncio.to_thread(
        lambda: _keys_page(request, dashboard, status=status, new_key=issued, error=error)
    )


@post(
    "/api-keys/{key_id:uuid}/revoke",
    include_in_schema=False,
    guards=[admins_only],
    request_max_body_size=MAX_FORM_BYTES,
)
async def revoke_api_key(
    request: Request[Any, Any, Any], dashboard: NamedDependency[Dashboard], key_id: FromPath[UUID]
) -> Response[str]:
    viewer = _caller(request).viewer()
    revoke = dashboard.http.api_keys.revoke
    _, error, status = await _attempt(lambda: revoke(key_id, by=viewer))
    return await asyncio.to_thread(
        lambda: _keys_page(
            request, dashboard, status=status, error=error, revoked=None if error else key_id
        )
    )


# Conferences: past and upcoming, with who called in, for how long; minutes per month


@get("/conferences", include_in_schema=False, sync_to_thread=True)
def conferences_page(
    request: Request[Any, Any, Any], dashboard: NamedDependency[Dashboard]
) -> Response[str]:
    customer_id, viewer = own_customer(request), _caller(request).viewer()
    conferences = dashboard.http.conferences
    found = conferences.conferences(customer_id, viewer) if conferences else []
    now = dashboard.http.clock.now()
    return caller_page(
        request,
        "app_conferences.html",
        upcoming=[c for c in found if c.status in ("scheduled", "running")],
        past=[c for c in found if c.status not in ("scheduled", "running")],
        minutes=conferences.minutes(customer_id) if conferences else [],
        now=now,
    )


def customer_pages_router() -> Router:
    """Every page under /app (the pages router gives them its dependencies and error page)."""
    from picasse.adapters.http import attendance_pages

    return Router(
        path="/app",
        route_handlers=[
            home,
            messages_page,
            message_page,
            traffic_page,
            conferences_page,
            templates_page,
            create_template,
            delete_template,
            users_page,
            add_user,
            change_user,
            api_keys_page,
            create_api_key,
            revoke_api_key,
            webhooks_page,
            create_webhook,
            delete_webhook,
            enable_webhook,
            *attendance_pages.ROUTES,
            *CUSTOMER_CASE_PAGES,
        ],
        guards=[customers_only],
    )
