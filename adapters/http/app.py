"""The HTTP API as one Litestar app: its routes and the dependencies they are given."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from typing import Any

from litestar import Litestar, Request, Response, Router, get
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency, Provide
from litestar.exceptions import SerializationException
from litestar.handlers import BaseRouteHandler
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme

from picasse.adapters.clock import SystemClock
from picasse.adapters.http import (
    attendance_api,
    billing_api,
    cases_api,
    conferences_api,
    groups_api,
    messages_api,
    sites_api,
    templates_api,
    visits_api,
)
from picasse.adapters.http.acklinks import AckLinks
from picasse.adapters.http.api import STRICT_BODIES, api_router
from picasse.adapters.http.auth import (
    PUBLIC,
    SESSION_COOKIE,
    AuthenticationMiddleware,
    CallerCache,
    LoginThrottling,
    caller_dependency,
    housekeeping,
    scope_guard,
    tenant_guard,
)
from picasse.adapters.http.clients import ClientAddressMiddleware, networks
from picasse.adapters.http.docs import docs_router
from picasse.adapters.http.health import HealthProbe, Liveness
from picasse.adapters.http.problems import problem_response
from picasse.adapters.http.telephony_webhook import receive_telephony_report
from picasse.adapters.http.transport import json_bodies_only, response_headers
from picasse.adapters.http.visits import VisitService
from picasse.adapters.http.webhook_endpoints import STRICT_BODIES as STRICT_WEBHOOK_BODIES
from picasse.adapters.http.webhook_endpoints import webhook_endpoints_router
from picasse.adapters.http.webhooks import (
    ack_confirmation_page,
    acknowledge_by_keypad,
    acknowledge_by_link,
    receive_receipt,
    receive_twilio_status,
)
from picasse.adapters.postgres.sessions import PostgresAuthStore
from picasse.adapters.postgres.store import shredder_of
from picasse.adapters.postgres.webhook_log import WebhookLog
from picasse.adapters.providers.twilio import TwilioCallbacks
from picasse.domain.accounts import Accounts
from picasse.domain.api_keys import ApiKeys
from picasse.domain.application import Pseudonyms
from picasse.domain.attendance import Attendance
from picasse.domain.billing import Billing
from picasse.domain.cases import Cases
from picasse.domain.clock import Clock
from picasse.domain.conferencing import Conferences
from picasse.domain.messaging import Messages
from picasse.domain.privacy import Privacy
from picasse.domain.sites import Sites
from picasse.domain.visitors import Visitors
from picasse.domain.webhooks import Webhooks
from picasse.projections.accounts import AccountsView
from picasse.projections.invoices import InvoicesView
from picasse.projections.ledger import LedgerView
from picasse.projections.traffic import TrafficView

API_VERSION = "1"


@dataclass(frozen=True, kw_only=True)
class HttpDeps:
    """What the routes need, built by a runner: the app reads no settings of its own."""

    messages: Messages
    accounts: Accounts
    api_keys: ApiKeys
    callers: CallerCache  # API keys' callers between requests, forgotten at any change
    accounts_view: AccountsView
    traffic_view: TrafficView
    auth_store: PostgresAuthStore  # sessions and failed-login counters
    pseudonyms: Pseudonyms  # keys the failed-login counters without naming anyone
    receipt_tokens: Mapping[str, str] = field(repr=False)  # gateway name → token
    ack_links: AckLinks
    # Checks Twilio's signatures on its callbacks; None: no Twilio account configured.
    twilio_callbacks: TwilioCallbacks | None = None
    webhooks: Webhooks  # the customers' webhook endpoints
    # Cases and billing (R3); None: built on `messages`'s store when the app is created.
    cases: Cases | None = None
    billing: Billing | None = None
    webhook_log: WebhookLog  # their posts and attempts
    webhooks_allow_private: bool = False  # PICASSE_WEBHOOKS_ALLOW_PRIVATE: tests, private use
    secure_cookies: bool = False  # served over TLS (here or at a proxy in front)
    hsts: bool = False  # served over TLS here: browsers are told to come back over https only
    login_tracking: bool = False  # R6: off unless an operator switches it on
    login_throttling: LoginThrottling = field(default_factory=LoginThrottling)
    health: HealthProbe | None = None  # the overview's view lag, relay and workers
    ledger_view: LedgerView | None = None  # the privacy ledger page
    invoices_view: InvoicesView | None = None  # GET /v1/invoices
    clock: Clock = field(default_factory=SystemClock)  # the process's one clock (wiring's)
    # Proxies whose forwarded headers are believed (PICASSE_TRUSTED_PROXIES); none by default.
    trusted_proxies: tuple[str, ...] = ()  # addresses and networks, as Settings has them
    sites: Sites | None = None  # None: on the messages application's store and clock
    visitors: Visitors | None = None  # None: likewise, with the registry's default retention
    attendance: Attendance | None = None  # likewise
    conferences: Conferences | None = None  # conference calls; None: not served here
    # The telephony provider's name → the token its reports are signed with (one, or none).
    telephony_tokens: Mapping[str, str] = field(default_factory=dict, repr=False)


class BodyRequest(Request[Any, Any, Any]):
    """Every route's request: its JSON body is read here, once, for all routes.

    msgspec answers JSON nested deeper than it recurses (e.g. 8,000 `[`) with a
    RecursionError rather than its DecodeError; here it becomes what any other malformed
    JSON becomes, a 400 problem, instead of a 500 and a traceback in the log.
    """

    async def json(self) -> Any:
        try:
            return await super().json()
        except RecursionError:
            raise SerializationException("malformed JSON: nested too deeply") from None


@get(
    "/health",
    opt=PUBLIC,
    security=[],
    summary="Liveness: whether requests can be served (503 while the database cannot be"
    " used) and the state of `picasse up`'s services",
    description=(
        "Public and cheap, for load balancers and supervisors: it names no paths, addresses"
        " or error texts. `degraded` (still 200) while a view is stopped at an event it"
        " cannot take."
    ),
)
async def health(deps: NamedDependency[HttpDeps]) -> Response[Liveness]:
    if deps.health is None:
        return Response(Liveness(status="ok", database="not checked"))
    liveness = await deps.health.liveness()
    unavailable = liveness.status == "unavailable"
    status = HTTPStatus.SERVICE_UNAVAILABLE if unavailable else HTTPStatus.OK
    return Response(liveness, status_code=status)


async def every_route(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """The app's guards, run in this order on every route. One guard, not three: Litestar
    copies the route handler for each guard of each request. Guards only read the caller
    the middleware resolved, so they are coroutines: Litestar runs a plain function guard
    in a worker thread, a thread hand-off per guard per request."""
    await scope_guard(connection, handler)
    await tenant_guard(connection, handler)
    await json_bodies_only(connection, handler)


def create_app(deps: HttpDeps) -> Litestar:
    def provide(value: object) -> Provide:
        return Provide(lambda: value, use_cache=True, sync_to_thread=False)

    deps.auth_store.create_tables(login_records=deps.login_tracking)
    cases = deps.cases or Cases(clock=deps.clock, sharing=deps.messages)
    billing = deps.billing or Billing(clock=deps.clock, sharing=deps.messages)
    deps = replace(deps, cases=cases, billing=billing)  # the pages use them too
    app = Litestar(
        route_handlers=[
            health,
            receive_receipt,
            ack_confirmation_page,
            acknowledge_by_link,
            receive_twilio_status,
            acknowledge_by_keypad,
            receive_telephony_report,
            api_router(
                *messages_api.ROUTES,
                *templates_api.ROUTES,
                *groups_api.ROUTES,
                *sites_api.ROUTES,
                *visits_api.ROUTES,
                *attendance_api.ROUTES,
                *conferences_api.ROUTES,
                *cases_api.ROUTES,
                *billing_api.ROUTES,
            ),
            webhook_endpoints_router(),
            docs_router(),
            *_pages(deps),
        ],
        dependencies={
            "deps": provide(deps),
            "caller": Provide(caller_dependency, sync_to_thread=False),
            "messages": provide(deps.messages),
            "accounts": provide(deps.accounts),
            "api_keys": provide(deps.api_keys),
            "accounts_view": provide(deps.accounts_view),
            "traffic_view": provide(deps.traffic_view),
            "invoices_view": provide(deps.invoices_view),
            "receipt_tokens": provide(deps.receipt_tokens),
            "ack_links": provide(deps.ack_links),
            "twilio_callbacks": provide(deps.twilio_callbacks),
            "webhooks": provide(deps.webhooks),
            "webhook_log": provide(deps.webhook_log),
            "sites": provide(deps.sites or Sites(clock=deps.clock, sharing=deps.messages)),
            "visits": provide(_visit_service(deps)),
            "attendance": provide(deps.attendance or attendance_on(deps.messages, deps.clock)),
            "conferences": provide(deps.conferences),
            "telephony_tokens": provide(deps.telephony_tokens),
            "cases": provide(cases),
            "billing": provide(billing),
        },
        # From where (every request), who calls (every request), then what an API key may
        # call and which customer they may reach (every route: `every_route`).
        middleware=[
            DefineMiddleware(ClientAddressMiddleware, trusted=networks(deps.trusted_proxies)),
            DefineMiddleware(AuthenticationMiddleware, deps=deps),
        ],
        guards=[every_route],
        before_send=[response_headers(hsts=deps.hsts)],
        lifespan=[housekeeping(deps), _closing_health(deps)],
        exception_handlers={Exception: problem_response},
        request_class=BodyRequest,
        openapi_config=OpenAPIConfig(
            title="Picasse API",
            version=API_VERSION,
            path="/schema",
            openapi_router=_schema_router(),
            # JSON only: Litestar's HTML viewers load scripts from CDNs; /docs serves
            # Swagger UI from here (adapters/http/docs.py).
            render_plugins=[JsonRenderPlugin()],
            components=Components(
                security_schemes={
                    "apiKey": SecurityScheme(
                        type="http",
                        scheme="bearer",
                        description="an API key from POST /v1/api-keys",
                    ),
                    "session": SecurityScheme(
                        type="apiKey",
                        name=SESSION_COOKIE,
                        security_scheme_in="cookie",
                        description="the cookie POST /v1/sessions sets",
                    ),
                }
            ),
            security=[{"apiKey": []}, {"session": []}],
        ),
        # Litestar would otherwise take over the process's root logger.
        logging_config=None,
        debug=False,
    )
    return app


def _schema_router() -> Router:
    """The router Litestar would make for /schema, which also completes the document before
    it first serves it. Litestar builds the document on first use; completing it at start
    built it there, ~0.4 s of CPU in every API process, most of which never serve it."""
    return Router(
        "/schema",
        route_handlers=[],
        include_in_schema=False,
        dto=None,
        return_dto=None,
        before_request=_completed_document,
    )


async def _completed_document(request: Request[Any, Any, Any]) -> None:
    # In the event loop, not a thread (Litestar's way with a plain function): two first
    # requests at once must not complete the one document together.
    app = request.app
    document = app.openapi_schema  # built on first use, and again if routes were added
    if app.state.get(_COMPLETED) is not document:
        _complete_the_document(app)
        app.state[_COMPLETED] = document


_COMPLETED = "openapi_document_completed"


def _complete_the_document(app: Litestar) -> None:
    """Say two things Litestar's generated document leaves out: that PUBLIC routes need no
    credentials, and that request bodies with unknown fields are refused (a misspelt
    `schedule_at` must not send at once)."""
    document = app.openapi_schema
    for route in app.routes:
        path_item = (document.paths or {}).get(route.path_format)
        if path_item is None:
            continue
        for handler in getattr(route, "route_handlers", []):
            if not handler.opt.get("public"):
                continue
            for method in handler.http_methods:
                operation = getattr(path_item, method.lower(), None)
                if operation is not None:
                    operation.security = []
    strict = {
        cls.__name__
        for cls in (
            *STRICT_BODIES,
            *templates_api.STRICT_BODIES,
            *groups_api.STRICT_BODIES,
            *sites_api.STRICT_BODIES,
            *visits_api.STRICT_BODIES,
            *attendance_api.STRICT_BODIES,
            *conferences_api.STRICT_BODIES,
            *cases_api.STRICT_BODIES,
            *billing_api.STRICT_BODIES,
            *STRICT_WEBHOOK_BODIES,
        )
    }
    components = document.components
    for component in components if isinstance(components, list) else [components]:
        for name, schema in (component.schemas or {}).items():
            if name.rsplit("_", 1)[-1] in strict or name in strict:
                schema.additional_properties = False


def _visit_service(deps: HttpDeps) -> VisitService:
    return VisitService(
        visitors=deps.visitors or Visitors(clock=deps.clock, sharing=deps.messages),
        privacy=Privacy(shredder=shredder_of, sharing=deps.messages),
        messages=deps.messages,
        public_url=deps.ack_links.public_url,
        deps=deps,
    )


def attendance_on(messages: Messages, clock: Clock) -> Attendance:
    """Attendance on the messages application's store; withdrawals erase through Privacy."""
    privacy = Privacy(shredder=shredder_of, sharing=messages)
    return Attendance(clock=clock, privacy=privacy, sharing=messages)


def _closing_health(deps: HttpDeps) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if deps.health is not None:
                await deps.health.close()  # its NATS connection lives on the server's loop

    return lifespan


def _pages(deps: HttpDeps) -> list[Any]:
    """The dashboard's pages, once adapters/http/pages.py provides them."""
    if importlib.util.find_spec("picasse.adapters.http.pages") is None:
        return []
    from picasse.adapters.http.pages import pages_router

    pages = pages_router(deps)
    return list(pages) if isinstance(pages, list | tuple) else [pages]
