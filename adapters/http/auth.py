"""Who is calling: login sessions for pages, API keys for programs, failed-login throttling,
and the one guard that decides which customer a caller may reach (R11).

- A session is a random token in the `picasse_session` cookie (HttpOnly, SameSite=Lax,
  Secure under TLS); the server keeps only its SHA-256, with an expiry, in PostgreSQL.
  Sessions are not a record of logins: a row lives as long as the session and no longer,
  and nothing is logged about logins unless an operator switches login tracking on (R6).
- A program sends `Authorization: Bearer pk_<id>_<secret>` (see `domain/api_keys.py`).
- Either way the user is loaded on every request, so a disabled user is out at once.
- Failed logins count per account, per account-and-address pair and per client address
  (keyed pseudonyms, never the login or the address itself): after a few, each next
  attempt must wait (429 with Retry-After). A pair or an address is then locked for a
  while; an account only ever slowed, never locked, since anyone can fail against it from
  anywhere: its owner, from an address that has not failed, still gets in. No address
  that succeeded is remembered (R6). The counters live in PostgreSQL, so every API process
  sees the same ones, and go when their window does. The client's address is the one
  `adapters/http/clients.py` settles (forwarded headers only from trusted proxies).
- Anonymous requests: the API (/v1) answers 401 problem+json, a page redirects to /login.
  Route handlers that anyone may call say so with `opt=PUBLIC`.
- Scopes: an API key holds scopes (`domain/api_keys.py` `Scope`); every route handler
  names the one it needs with `opt={"scope": ...}` (`scoped(...)`), and `scope_guard`,
  installed on the whole app, refuses a key without it (403 missing-scope). A route that
  names no scope refuses every key (pages among them): sessions only. Sessions are not
  limited by scopes; the user's role limits them.
- Tenant isolation: `tenant_guard`, installed on the whole app, checks every `customer_id`
  in a route's path or query against the caller (`customer_in_reach`); another
  customer's id answers 404, so its existence is not revealed. Resources addressed by
  their own id (a message, a key) are checked by the domain query that loads them, with
  `caller.viewer()`.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import math
import secrets
from collections.abc import AsyncIterator, Callable, Hashable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit
from uuid import UUID

import anyio
import msgspec
from litestar import Litestar, Response
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie
from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers import BaseRouteHandler
from litestar.types import ASGIApp, Guard, Receive, Scope, Send

from picasse.adapters.postgres.keystore import TenantErased
from picasse.adapters.postgres.notices import NoticedCache, Notices
from picasse.domain.access import Viewer
from picasse.domain.api_keys import MissingScope
from picasse.domain.api_keys import Scope as ApiScope
from picasse.domain.clock import Clock
from picasse.domain.errors import (
    AuthenticationFailed,
    DomainError,
    Forbidden,
    InvalidInput,
    NotFound,
    UserDisabled,
)
from picasse.domain.values import Role

if TYPE_CHECKING:
    from picasse.adapters.http.app import HttpDeps

log = logging.getLogger(__name__)

SESSION_COOKIE = "picasse_session"
SESSION_LIFETIME = timedelta(hours=8)  # from login; not extended by use (that would track it)
# How long an API key's caller is kept between requests at most (CallerCache): a bound, in
# case a change ever reached no notice.
CALLER_LIFETIME = timedelta(seconds=60)
PUBLIC: dict[str, Any] = {"public": True}  # a route handler's opt: anyone may call it
API_PREFIX = "/v1"
LOGIN_PAGE = "/login"
HOUSEKEEPING_EVERY = 60.0  # seconds between purges of expired sessions and counters
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_NOT_PAGES = ("/health", "/schema")


class Caller(msgspec.Struct, frozen=True):
    """The authenticated user behind a request, and how they proved it."""

    user_id: UUID
    login: str
    role: Role
    customer_id: UUID | None  # None for Picasse staff
    via: Literal["session", "api-key"]
    scopes: frozenset[ApiScope] | None = (
        None  # an API key's; None for a session (the role limits it)
    )

    def viewer(self) -> Viewer:
        return Viewer(role=self.role, customer_id=self.customer_id, user_id=self.user_id)

    def __repr__(self) -> str:  # the login is personal data: keep it out of log lines
        return f"Caller(user_id={self.user_id}, role={self.role.value}, via={self.via})"

    __str__ = __repr__


class CallerCache(NoticedCache):
    """The callers of API keys, kept between requests: a request with a key seen before then
    needs no thread and no read of the key, its user and their customer. Forgotten at any
    change of a key, a user or a customer, in this process at once and in any other when
    the notice arrives (adapters/postgres/notices.py). Only API keys: a session ends by a
    row deleted, which tells nobody. Keyed by the key's digest, never the key."""

    def __init__(self, clock: Clock, notices: Notices) -> None:
        super().__init__(clock, notices, CALLER_LIFETIME)

    def get(self, key: Hashable) -> Caller | None:
        caller: Caller | None = super().get(_digest(str(key)))
        return caller

    def keep(self, key: Hashable, value: Any, generation: int) -> None:
        super().keep(_digest(str(key)), value, generation)


def _digest(key: str) -> bytes:
    """What the cache is keyed by: not the key itself, which is a secret."""
    return hashlib.sha256(key.encode()).digest()


class ThrottlePolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How failed logins against one key (an account, or a client address) are slowed."""

    slow_after: int  # failures in the window before attempts must wait
    lock_after: int | None = None  # failures in the window that lock the key; None: never
    window: timedelta
    lock: timedelta = timedelta(0)
    first_delay: timedelta  # the wait after failure slow_after; doubles with each further one
    max_delay: timedelta = timedelta(minutes=1)

    def wait_after(self, failures: int) -> timedelta | None:
        if self.lock_after is not None and failures >= self.lock_after:
            return self.lock
        if failures < self.slow_after:
            return None
        # Doubled per further failure only until max_delay: first_delay * 2**failures
        # outgrows a timedelta (OverflowError) after some 47 doublings.
        delay = self.first_delay
        for _ in range(failures - self.slow_after):
            if delay >= self.max_delay or not delay:
                break
            delay *= 2
        return min(delay, self.max_delay)


class LoginThrottling(msgspec.Struct, frozen=True, kw_only=True):
    # Failures from every address against one account: slowed, never locked (a lock here
    # would let anyone lock anyone out), and only after more than one address's worth.
    per_account: ThrottlePolicy = ThrottlePolicy(
        slow_after=10,
        window=timedelta(minutes=15),
        first_delay=timedelta(seconds=1),
        max_delay=timedelta(seconds=30),
    )
    # One address guessing one account's password: slowed, then locked.
    per_pair: ThrottlePolicy = ThrottlePolicy(
        slow_after=3,
        lock_after=5,
        window=timedelta(minutes=15),
        lock=timedelta(minutes=15),
        first_delay=timedelta(seconds=1),
    )
    # An office or a carrier's NAT puts many people behind one address: allow it more.
    per_address: ThrottlePolicy = ThrottlePolicy(
        slow_after=10,
        lock_after=30,
        window=timedelta(minutes=15),
        lock=timedelta(minutes=15),
        first_delay=timedelta(seconds=1),
    )
    # Users added to one customer (logins probed one by one, R11): a burst is fine, a
    # stream is slowed, then stopped for an hour.
    per_customer_user_creation: ThrottlePolicy = ThrottlePolicy(
        slow_after=20,
        lock_after=60,
        window=timedelta(hours=1),
        lock=timedelta(hours=1),
        first_delay=timedelta(seconds=5),
    )
    # Visitor registrations (the public form and its JSON twin) from one address: an
    # office registering its party is fine, a program filling the form in a loop is
    # slowed, then stopped for an hour.
    per_address_registration: ThrottlePolicy = ThrottlePolicy(
        slow_after=20,
        lock_after=40,
        window=timedelta(hours=1),
        lock=timedelta(hours=1),
        first_delay=timedelta(seconds=10),
    )


class LoginThrottled(DomainError):
    """Too many failed logins for this account or from this address: wait, then try again."""

    code = "login-throttled"

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"Too many failed logins; try again in {retry_after} seconds.")
        self.retry_after = retry_after


class UserCreationThrottled(LoginThrottled):
    """Too many users added to one customer for now: wait, then try again."""

    code = "user-creation-throttled"

    def __init__(self, retry_after: int) -> None:
        DomainError.__init__(
            self, f"Too many users added to this customer; try again in {retry_after} seconds."
        )
        self.retry_after = retry_after


def throttle_user_creation(deps: HttpDeps, customer_id: UUID) -> None:
    """Counts one attempt to add a user to the customer, on the failed-login counters'
    store and policy shape; raises UserCreationThrottled (429) while it must wait."""
    store, now = deps.auth_store, deps.clock.now()
    policy = deps.login_throttling.per_customer_user_creation
    key = deps.pseudonyms.pseudonym("user-creation/customer", str(customer_id))
    [count] = store.count_attempt([(key, policy.window)], now)
    if count.retry_after is not None:
        raise UserCreationThrottled(max(1, math.ceil(count.retry_after)))
    wait = policy.wait_after(count.attempt or 0)
    if wait is not None:  # this one goes through; the next waits
        store.block(key, now + wait)


@contextmanager
def password_field(name: str) -> Iterator[None]:
    """The domain calls the password it refuses `password`; a body may call it `name`
    (`new_password`): the problem names the field as the caller sent it."""
    try:
        yield
    except InvalidInput as error:
        if error.field != "password":
            raise
        raise InvalidInput(name + error.message.removeprefix("password"), field=name) from None


def end_other_sessions(deps: HttpDeps, user_id: UUID, keep_token: str | None) -> int:
    """A password was changed or set: every session of the user ends but the caller's."""
    keep = token_hash(keep_token) if keep_token else None
    return deps.auth_store.end_sessions_of(user_id, keep=keep)


# ---------------------------------------------------------------- reading the caller


def current_caller(connection: ASGIConnection[Any, Any, Any, Any]) -> Caller | None:
    """The caller the authentication middleware resolved for this request, if any."""
    caller = connection.scope.get("user")
    return caller if isinstance(caller, Caller) else None


def caller_dependency(request: ASGIConnection[Any, Any, Any, Any]) -> Caller:
    """The `caller` dependency of routes that need one (the middleware let no anonymous in).
    A route that must keep to one dependency (POST /v1/messages) calls it itself."""
    caller = current_caller(request)
    if caller is None:
        raise NotAuthorizedException("log in, or send an API key")
    return caller


def customer_in_reach(caller: Caller | None, customer_id: UUID) -> None:
    """The one decision on tenant access (R11); NotFound, not Forbidden: existence stays hidden."""
    if caller is None or not caller.viewer().sees_customer(customer_id):
        raise NotFound(f"customer {customer_id} not found")


async def tenant_guard(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Installed on the whole app: every `customer_id` in a path or query must be in reach."""
    if handler.opt.get("public"):
        return
    caller = current_caller(connection)
    values: list[Any] = [connection.path_params.get("customer_id")]
    values += connection.query_params.getall("customer_id", [])  # all: ?customer_id=A&customer_id=B
    for value in values:
        if value is None:
            continue
        try:
            customer_id = value if isinstance(value, UUID) else UUID(str(value))
        except ValueError:
            continue  # not an id at all: the route's validation answers that
        customer_in_reach(caller, customer_id)


def scoped(scope: ApiScope) -> dict[str, Any]:
    """A route handler's opt: the scope an API key needs to call it."""
    return {"scope": scope}


async def scope_guard(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Installed on the whole app: an API key calls only routes whose scope it holds; a
    route that names none takes no key at all (refused by default, never let through).
    What anyone may read (PUBLIC routes, the OpenAPI document) takes any key or none."""
    path = connection.scope["path"]
    if handler.opt.get("public") or not (_is_api(path) or _is_page(path)):
        return
    caller = current_caller(connection)
    if caller is None or caller.scopes is None:
        return
    needed = handler.opt.get("scope")
    if needed is None:
        raise MissingScope("this route takes a session, not an API key")
    if ApiScope(needed) not in caller.scopes:
        raise MissingScope(f"this API key lacks the scope {ApiScope(needed).value}")


Question = Callable[[Viewer, UUID | None], bool]


def allowed(question: Question, refusal: str) -> Guard:
    """A guard that asks the access policy (`Viewer`) about the customer a request names:
    its path's `customer_id`, else the caller's own. 403 with `refusal` when it says no."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        caller = current_caller(connection)
        if caller is None:
            raise NotAuthorizedException("log in, or send an API key")
        customer_id = connection.path_params.get("customer_id", caller.customer_id)
        if not question(caller.viewer(), customer_id):
            raise Forbidden(refusal)

    return guard


# ---------------------------------------------------------------- logging in and out


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def log_in(deps: HttpDeps, login: str, password: str, client_ip: str) -> tuple[Caller, str]:
    """Check the password (throttled), start a session; the caller and the session's token.

    Raises AuthenticationFailed (401), LoginThrottled (429), UserDisabled (409).
    """
    return await asyncio.to_thread(_log_in, deps, login, password, client_ip)


async def log_out(deps: HttpDeps, token: str) -> None:
    await asyncio.to_thread(deps.auth_store.end_session, token_hash(token))


def set_session_cookie(response: Response[Any], token: str, *, secure: bool) -> None:
    response.set_cookie(
        key=SESSION_COOKIE,
        value=token,
        max_age=int(SESSION_LIFETIME.total_seconds()),
        path="/",
        secure=secure,
        httponly=True,
        samesite="lax",  # strict would log people out when they follow a link to a page
    )


def clear_session_cookie(response: Response[Any]) -> None:
    response.cookies = [c for c in response.cookies if c.key != SESSION_COOKIE]
    response.cookies.append(_expired_cookie())


def _expired_cookie() -> Cookie:
    return Cookie(
        key=SESSION_COOKIE, value="", path="/", max_age=0, expires=0, httponly=True, samesite="lax"
    )


def _throttle_keys(deps: HttpDeps, login: str, client_ip: str) -> list[tuple[UUID, ThrottlePolicy]]:
    """The account's, the account-and-address pair's and the address's keys, in this order."""
    policies = deps.login_throttling
    account = login.strip().lower()
    block = address_block(client_ip)
    pseudonym = deps.pseudonyms.pseudonym
    return [
        (pseudonym("login-throttle/account", account), policies.per_account),
        (pseudonym("login-throttle/pair", f"{account}\n{block}"), policies.per_pair),
        (pseudonym("login-throttle/address", block), policies.per_address),
    ]


def address_block(client_ip: str) -> str:
    """IPv6 users hold a whole /64 each: count per /64, or one person has endless addresses."""
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return client_ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _log_in(deps: HttpDeps, login: str, password: str, client_ip: str) -> tuple[Caller, str]:
    store = deps.auth_store
    now = deps.clock.now()
    keys = _throttle_keys(deps, login, client_ip)
    # Counted before the password is checked, so attempts sent all at once count too.
    counts = store.count_attempt([(key, policy.window) for key, policy in keys], now)
    waits = [c.retry_after for c in counts if c.retry_after is not None]
    if waits:
        raise LoginThrottled(max(1, math.ceil(max(waits))))
    for (key, policy), count in zip(keys, counts, strict=True):
        if policy.lock_after is not None and (count.attempt or 0) > policy.lock_after:
            # more in flight than the lock allows
            store.block(key, now + policy.lock)
            raise LoginThrottled(math.ceil(policy.lock.total_seconds()))
    try:
        user = deps.accounts.authenticate(login, password)
    except (AuthenticationFailed, TenantErased):  # an erased customer's users are no more
        for (key, policy), count in zip(keys, counts, strict=True):
            wait = policy.wait_after(count.attempt or 0)
            if wait is not None:
                store.block(key, now + wait)
        raise AuthenticationFailed("wrong login or password") from None
    except UserDisabled:
        _forgive(store, keys, now)  # the password was right: no failure to count
        raise
    _forgive(store, keys, now)
    caller = Caller(
        user_id=user.id,
        login=str(user.login),
        role=user.role,
        customer_id=user.customer_id,
        via="session",
    )
    token = secrets.token_urlsafe(32)
    store.start_session(token_hash(token), user.id, now + SESSION_LIFETIME)
    if deps.login_tracking:  # off unless an operator switched it on (R6)
        store.record_login(user.id, "session", now)
    return caller, token


def _forgive(store: Any, keys: list[tuple[UUID, ThrottlePolicy]], now: datetime) -> None:
    (account, _), (pair, _), (address, _) = keys
    store.forget(account)
    store.forget(pair)
    store.uncount(address, now)


# ---------------------------------------------------------------- resolving callers


def _caller_of_user(
    deps: HttpDeps,
    user_id: UUID,
    via: Literal["session", "api-key"],
    scopes: frozenset[ApiScope] | None = None,
) -> Caller | None:
    try:
        user = deps.accounts.user(user_id)
    except (NotFound, TenantErased):
        return None
    if user.disabled or not isinstance(user.login, str):
        return None
    return Caller(
        user_id=user.id,
        login=user.login,
        role=user.role,
        customer_id=user.customer_id,
        via=via,
        scopes=scopes,
    )


def _caller_from_session(deps: HttpDeps, token: str) -> Caller | None:
    digest = token_hash(token)
    user_id = deps.auth_store.session_user(digest, deps.clock.now())
    if user_id is None:
        return None
    caller = _caller_of_user(deps, user_id, "session")
    if caller is None:
        deps.auth_store.end_session(digest)  # its user is gone or disabled
    return caller


def _caller_from_key(deps: HttpDeps, key: str) -> Caller | None:
    try:
        holder = deps.api_keys.authenticate(key)
    except (AuthenticationFailed, TenantErased):
        return None
    return _caller_of_user(deps, holder.user_id, "api-key", holder.scopes)


def _is_api(path: str) -> bool:
    return path == API_PREFIX or path.startswith(API_PREFIX + "/")


def _is_page(path: str) -> bool:
    return not _is_api(path) and not any(
        path == prefix or path.startswith(prefix + "/") for prefix in _NOT_PAGES
    )


class AuthenticationMiddleware:
    """Resolves the caller of every request into `scope["user"]`; turns anonymous ones away
    from everything not PUBLIC (the API with 401, pages with a redirect to the login page)."""

    def __init__(self, app: ASGIApp, deps: HttpDeps) -> None:
        self.app = app
        self.deps = deps
        allowed = urlsplit(deps.ack_links.public_url).netloc
        self._public_host = allowed.lower()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        connection: ASGIConnection[Any, Any, Any, Any] = ASGIConnection(scope, receive)
        handler = scope.get("route_handler")
        path: str = scope["path"]
        public = bool(handler is not None and handler.opt.get("public")) or not (
            _is_api(path) or _is_page(path)
        )
        authorization = connection.headers.get("authorization")
        cookie = connection.cookies.get(SESSION_COOKIE)
        caller: Caller | None = None
        if authorization is not None:
            scheme, _, key = authorization.partition(" ")
            if scheme.lower() == "bearer" and key.strip():
                caller = await self._caller_of_key(key.strip())
        elif cookie:
            caller = await asyncio.to_thread(_caller_from_session, self.deps, cookie)
        scope["user"] = caller
        scope["auth"] = caller.via if caller is not None else None
        if caller is None and not public:
            if _is_api(path):
                raise NotAuthorizedException(
                    "log in (POST /v1/sessions) or send Authorization: Bearer <API key>",
                    headers={"WWW-Authenticate": 'Bearer realm="picasse"'},
                )
            await _redirect_to_login(send, clear_cookie=bool(cookie))
            return
        if (
            authorization is None
            and scope["method"] not in _SAFE_METHODS
            and not self._same_origin(connection)
            # a public route that checks the origin itself against its own list (CORS)
            and not (handler is not None and handler.opt.get("cross_site"))
        ):
            # SameSite=Lax keeps the cookie off cross-site POSTs; sibling subdomains are
            # "same site" though, and logging in needs no cookie: so whatever a browser
            # sends to change something must also come from our own origin.
            raise PermissionDeniedException("a changing request must come from this site")
        await self.app(scope, receive, send)

    async def _caller_of_key(self, key: str) -> Caller | None:
        callers = self.deps.callers
        caller = callers.get(key)
        if caller is None:
            generation = callers.generation
            caller = await asyncio.to_thread(_caller_from_key, self.deps, key)
            if caller is not None:  # a failure is not kept: it costs a read every time
                callers.keep(key, caller, generation)
        return caller

    def _same_origin(self, connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
        headers = connection.headers
        if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return False
        origin = headers.get("origin")
        if origin is None:
            return True  # not a browser that tells; the cookie's SameSite covers those
        netloc = urlsplit(origin).netloc.lower()
        return bool(netloc) and netloc in {headers.get("host", "").lower(), self._public_host}


async def _redirect_to_login(send: Send, *, clear_cookie: bool) -> None:
    headers = [
        (b"location", LOGIN_PAGE.encode()),
        (b"cache-control", b"no-store"),
        (b"content-length", b"0"),
    ]
    if clear_cookie:
        headers.append(_expired_cookie().to_encoded_header())
    await send({"type": "http.response.start", "status": 302, "headers": headers})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


# ---------------------------------------------------------------- housekeeping


def housekeeping(deps: HttpDeps) -> Callable[[Litestar], Any]:
    """An app lifespan that purges expired sessions and counters every minute, so that
    nothing about a login outlives its purpose even when nobody logs in for days."""

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_purge_forever, deps)
            try:
                yield
            finally:
                tasks.cancel_scope.cancel()

    return lifespan


async def _purge_forever(deps: HttpDeps) -> None:
    while True:
        try:
            await asyncio.to_thread(deps.auth_store.purge_expired, deps.clock.now())
        except Exception as error:  # a database hiccup: try again next round
            log.warning("purging expired sessions failed (%s); trying again", type(error).__name__)
        await anyio.sleep(HOUSEKEEPING_EVERY)
