"""The HTTP API as one Litestar app: its routes and the dependencies they are given."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
from litestar import Litestar, get
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme

from picasse.adapters.http.acklinks import AckLinks
from picasse.adapters.http.api import api_router
from picasse.adapters.http.auth import (
    PUBLIC,
    SESSION_COOKIE,
    AuthenticationMiddleware,
    LoginThrottling,
    housekeeping,
    tenant_guard,
)
from picasse.adapters.http.problems import problem_response
from picasse.adapters.http.webhooks import acknowledge_by_link, receive_receipt
from picasse.adapters.postgres.sessions import PostgresAuthStore
from picasse.domain.accounts import Accounts
from picasse.domain.api_keys import ApiKeys
from picasse.domain.application import Pseudonyms
from picasse.domain.messaging import Messages
from picasse.projections.accounts import AccountsView
from picasse.projections.traffic import TrafficView

API_VERSION = "1"


class Health(msgspec.Struct, frozen=True):
    status: str


@dataclass(frozen=True, kw_only=True)
class HttpDeps:
    """What the routes need, built by a runner: the app reads no settings of its own."""

    messages: Messages
    accounts: Accounts
    api_keys: ApiKeys
    accounts_view: AccountsView
    traffic_view: TrafficView
    auth_store: PostgresAuthStore  # sessions and failed-login counters
    pseudonyms: Pseudonyms  # keys the failed-login counters without naming anyone
    receipt_tokens: Mapping[str, str] = field(repr=False)  # gateway name → token
    ack_links: AckLinks
    secure_cookies: bool = False  # served over TLS (here or at a proxy in front)
    login_tracking: bool = False  # R6: off unless an operator switches it on
    login_throttling: LoginThrottling = field(default_factory=LoginThrottling)


@get("/health", opt=PUBLIC, security=[], summary="Liveness: the process serves requests")
async def health() -> Health:
    return Health(status="ok")


def create_app(deps: HttpDeps) -> Litestar:
    def provide(value: object) -> Provide:
        return Provide(lambda: value, use_cache=True, sync_to_thread=False)

    deps.auth_store.create_tables(login_records=deps.login_tracking)
    return Litestar(
        route_handlers=[
            health,
            receive_receipt,
            acknowledge_by_link,
            api_router(),
            *_pages(deps),
        ],
        dependencies={
            "deps": provide(deps),
            "messages": provide(deps.messages),
            "accounts": provide(deps.accounts),
            "api_keys": provide(deps.api_keys),
            "accounts_view": provide(deps.accounts_view),
            "traffic_view": provide(deps.traffic_view),
            "receipt_tokens": provide(deps.receipt_tokens),
            "ack_links": provide(deps.ack_links),
        },
        # Who calls (every request), then which customer they may reach (every route).
        middleware=[DefineMiddleware(AuthenticationMiddleware, deps=deps)],
        guards=[tenant_guard],
        lifespan=[housekeeping(deps)],
        exception_handlers={Exception: problem_response},
        openapi_config=OpenAPIConfig(
            title="Picasse API",
            version=API_VERSION,
            path="/schema",
            # JSON only: the HTML viewers load scripts from third-party CDNs.
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


def _pages(deps: HttpDeps) -> list[Any]:
    """The dashboard's pages, once adapters/http/pages.py provides them."""
    if importlib.util.find_spec("picasse.adapters.http.pages") is None:
        return []
    from picasse.adapters.http.pages import pages_router

    pages = pages_router(deps)
    return list(pages) if isinstance(pages, list | tuple) else [pages]
