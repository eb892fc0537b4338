"""The HTTP API as one Litestar app: its routes and the dependencies they are given."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import msgspec
from litestar import Litestar, get
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin

from picasse.adapters.http.acklinks import AckLinks
from picasse.adapters.http.problems import problem_response
from picasse.adapters.http.webhooks import acknowledge_by_link, receive_receipt
from picasse.domain.messaging import Messages

API_VERSION = "1"


class Health(msgspec.Struct, frozen=True):
    status: str


@dataclass(frozen=True, kw_only=True)
class HttpDeps:
    """What the routes need, built by a runner: the app reads no settings of its own."""

    messages: Messages
    receipt_tokens: Mapping[str, str] = field(repr=False)  # gateway name → token
    ack_links: AckLinks


@get("/health", summary="Liveness: the process serves requests")
async def health() -> Health:
    return Health(status="ok")


def create_app(deps: HttpDeps) -> Litestar:
    def provide(value: object) -> Provide:
        return Provide(lambda: value, use_cache=True, sync_to_thread=False)

    return Litestar(
        route_handlers=[health, receive_receipt, acknowledge_by_link],
        dependencies={
            "messages": provide(deps.messages),
            "receipt_tokens": provide(deps.receipt_tokens),
            "ack_links": provide(deps.ack_links),
        },
        exception_handlers={Exception: problem_response},
        openapi_config=OpenAPIConfig(
            title="Picasse API",
            version=API_VERSION,
            path="/schema",
            # JSON only: the HTML viewers load scripts from third-party CDNs.
            render_plugins=[JsonRenderPlugin()],
        ),
        # Litestar would otherwise take over the process's root logger.
        logging_config=None,
        debug=False,
    )
