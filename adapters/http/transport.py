"""What every response and every request body must satisfy, whatever the route: one middleware.

- Responses carry personal data (API bodies, pages): `Cache-Control: no-store` on every
  response that does not say otherwise, so no browser or proxy keeps a copy.
- Served over TLS (here; PICASSE_TLS_CERT/KEY), `Strict-Transport-Security`, so a browser
  never again talks to us in the clear.
- A route that takes a JSON body takes `application/json` (or `…+json`) only: 415
  otherwise. Litestar would parse a `text/plain` or form body as JSON, which lets a
  cross-site form post "simple" requests that no CORS preflight ever checks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.enums import RequestEncodingType, ScopeType
from litestar.exceptions import HTTPException
from litestar.handlers import BaseRouteHandler
from litestar.types import Message, Scope

HSTS = b"max-age=31536000"  # a year; no includeSubDomains: other hosts are not ours to bind
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def response_headers(*, hsts: bool) -> Callable[[Message, Scope], Awaitable[None]]:
    """A `before_send` hook of the app: it sees every response, errors included."""

    async def add(message: Message, scope: Scope) -> None:
        if message["type"] != "http.response.start":
            return
        headers = list(message.get("headers", ()))  # any iterable, by the ASGI spec
        names = {name.lower() for name, _ in headers}
        if b"cache-control" not in names:
            headers.append((b"cache-control", b"no-store"))
        if hsts and b"strict-transport-security" not in names:
            headers.append((b"strict-transport-security", HSTS))
        message["headers"] = headers

    return add


async def json_bodies_only(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """A guard of the whole app: a body sent to a JSON route must say it is JSON (415)."""
    scope = connection.scope
    if (
        scope["type"] == ScopeType.HTTP  # guards see websocket handshakes too
        and scope["method"] in _BODY_METHODS
        and _takes_json(handler)
        and _has_body(scope)
        and not _is_json(connection.headers.get("content-type"))
    ):
        raise HTTPException(status_code=415, detail="send the body as application/json")


def _takes_json(handler: BaseRouteHandler) -> bool:
    """Whether the handler declares a body (`data`) it reads as JSON (the default encoding)."""
    data = handler.parsed_fn_signature.parameters.get("data")
    if data is None:
        return False
    media_type: Any = getattr(data.kwarg_definition, "media_type", RequestEncodingType.JSON)
    return bool(media_type == RequestEncodingType.JSON)


def _has_body(scope: Scope) -> bool:
    length = _header(scope, b"content-length")
    return _header(scope, b"transfer-encoding") is not None or (
        length is not None and length.strip() not in ("", "0")
    )


def _is_json(content_type: str | None) -> bool:
    if content_type is None:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None
