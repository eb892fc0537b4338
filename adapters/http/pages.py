"""The admin dashboard: server-rendered pages for Picasse staff, read from the views.

No page shows message content (R7): the views hold none. Who may open the pages, and
which fields of them, is the access policy's to say, as for the API (`domain/access.py`
`Viewer`): `Viewer.may_use_dashboard` guards every page; a customer's contact person and
billing address are shown only where `Viewer.sees_contact_of` says so, recipients, sender
accounts and IPs, and failure reasons where `Viewer.sees_traffic_of` does (R4, R11).
Templates get the `viewer` and ask it too; they never look at a role. Reasons are codes of
a fixed vocabulary, shown in words.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, TypeVar
from uuid import UUID

import msgspec
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from litestar import MediaType, Request, Response, Router, get, post
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency, Provide
from litestar.enums import RequestEncodingType
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    PermissionDeniedException,
)
from litestar.handlers import BaseRouteHandler
from litestar.params import Body, FromPath, QueryParameter
from litestar.response import Redirect
from litestar.static_files import create_static_files_router

from picasse.adapters.http.auth import (
    PUBLIC,
    SESSION_COOKIE,
    Caller,
    LoginThrottled,
    clear_session_cookie,
    current_caller,
    end_other_sessions,
    log_in,
    log_out,
    password_field,
    set_session_cookie,
)
from picasse.adapters.http.charts import CHANNELS, OUTCOMES, deliveries_chart, outcome_totals
from picasse.adapters.http.clients import client_address
from picasse.adapters.http.cursors import Position, decode_cursor, encode_cursor
from picasse.adapters.http.health import HealthProbe, PlatformHealth
from picasse.adapters.http.problems import problem_for
from picasse.domain.access import Viewer
from picasse.domain.accounts import acceptable_password
from picasse.domain.errors import AuthenticationFailed, DomainError, InvalidInput, NotFound
from picasse.domain.messaging import parse_recipient_query
from picasse.projections.accounts import PAGE_SIZE, AccountsView, CustomerRow
from picasse.projections.ledger import LedgerView
from picasse.projections.traffic import DailyCount, TrafficRow, TrafficView

if TYPE_CHECKING:
    from picasse.adapters.http.app import HttpDeps

HERE = Path(__file__).parent
CHART_DAYS = 14
MAX_FORM_BYTES = 8 * 1024
# The badge colour of each delivery status, on the staff and the customer's pages alike.
STATUS_CLASS = {"delivered": "ok", "failed": "bad", "undelivered": "bad", "cancelled": "idle"}
SEE_OTHER: Final = 303  # after a form post: the browser GETs the next page
# Pages hold personal data: not cached, not framed, no scripts, nothing loaded from elsewhere.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self';"
        " frame-ancestors 'none'; base-uri 'none'"
    ),
    # same-origin, not no-referrer: with no-referrer our own forms would post Origin: null.
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}

templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


class Dashboard:
    """What the pages read from, taken out of the app's dependencies once.

    A plain class, not a dataclass: Litestar would otherwise inspect its annotations.
    """

    def __init__(self, http: HttpDeps) -> None:
        self.http = http
        self.accounts: AccountsView = http.accounts_view
        self.traffic: TrafficView = http.traffic_view
        self.ledger: LedgerView | None = http.ledger_view
        self.health: HealthProbe | None = http.health  # None: the overview shows no health
        self.secure_cookies = http.secure_cookies


class LoginForm(msgspec.Struct, frozen=True):
    login: str = ""
    password: str = ""


def page(template: str, status: int = HTTPStatus.OK, **context: Any) -> Response[str]:
    context = {"caller": None, "viewer": None, "path": ""} | context
    return Response(
        content=templates.get_template(template).render(**context),
        status_code=status,
        media_type=MediaType.HTML,
        headers=PAGE_HEADERS,
    )


def caller_page(
    request: Request[Any, Any, Any], template: str, status: int = HTTPStatus.OK, **context: Any
) -> Response[str]:
    """A page for the logged-in caller (staff or a customer's user): the templates get the
    caller, its viewer and the path, for the navigation."""
    caller = _caller(request)
    return page(
        template, status, caller=caller, viewer=caller.viewer(), path=request.url.path, **context
    )


def _caller(connection: ASGIConnection[Any, Any, Any, Any]) -> Caller:
    caller = current_caller(connection)
    if caller is None:
        raise NotAuthorizedException("log in first")
    return caller


class PageGuard:
    """A page guard: one question of the access policy, asked of the logged-in caller.

    The question is kept on the guard (`question`), so that the page access test asks the
    policy the same question and compares.
    """

    def __init__(self, question: Callable[[Viewer], bool], refusal: str) -> None:
        self.question, self.refusal = question, refusal

    async def __call__(
        self, connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
    ) -> None:
        if not self.question(_caller(connection).viewer()):
            raise PermissionDeniedException(self.refusal)


# The dashboard is for Picasse staff, as the access policy says.
staff_only = PageGuard(Viewer.may_use_dashboard, "the dashboard is for Picasse staff")


def home_of(viewer: Viewer) -> str:
    """Where a logged-in person starts: staff on the dashboard, a customer's users on theirs."""
    return "/admin/" if viewer.may_use_dashboard() else "/app/"


# Signing in and out


@get("/login", opt=PUBLIC, include_in_schema=False)
async def login_page(request: Request[Any, Any, Any]) -> Response[Any]:
    caller = current_caller(request)
    if caller is not None:
        return Redirect(home_of(caller.viewer()))
    return page("login.html")


@post("/login", opt=PUBLIC, include_in_schema=False, request_max_body_size=MAX_FORM_BYTES)
async def login(
    request: Request[Any, Any, Any],
    dashboard: NamedDependency[Dashboard],
    data: Annotated[LoginForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Response[Any]:
    client_ip = client_address(request)
    try:
        caller, token = await log_in(dashboard.http, data.login, data.password, client_ip)
    except AuthenticationFailed:
        message = "Wrong login or password."
        return page("login.html", HTTPStatus.UNAUTHORIZED, error=message)
    except LoginThrottled as error:
        message = "Too many failed attempts. Wait a few minutes, then try again."
        throttled = page("login.html", HTTPStatus.TOO_MANY_REQUESTS, error=message)
        throttled.headers["Retry-After"] = str(error.retry_after)
        return throttled
    except InvalidInput as error:  # text no login holds, e.g. a control character
        return page("login.html", HTTPStatus.UNPROCESSABLE_ENTITY, error=error.message)
    except DomainError as error:  # a disabled account: said only after the right password
        return page("login.html", HTTPStatus.FORBIDDEN, error=error.message)
    response: Response[Any] = Redirect(home_of(caller.viewer()), status_code=SEE_OTHER)
    set_session_cookie(response, token, secure=dashboard.secure_cookies)
    return response


@post("/logout", include_in_schema=False, request_max_body_size=MAX_FORM_BYTES)
async def logout(
    request: Request[Any, Any, Any], dashboard: NamedDependency[Dashboard]
) -> Response[Any]:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await log_out(dashboard.http, token)
    response: Response[Any] = Redirect("/login", status_code=SEE_OTHER)
    clear_session_cookie(response)
    return response


# Setting a password with a one-time link (mailed to a customer's user)


class NewPasswordForm(msgspec.Struct, frozen=True):
    new_password: str = ""
    repeat: str = ""


@get("/set-password/{token:str}", opt=PUBLIC, include_in_schema=False, sync_to_thread=True)
def set_password_page(dashboard: NamedDependency[Dashboard], token: FromPath[str]) -> Response[str]:
    """Shows the form; changes nothing (a mail scanner that follows the link uses nothing up)."""
    valid = dashboard.http.accounts.password_link_valid(token)
    status = HTTPStatus.OK if valid else HTTPStatus.NOT_FOUND
    return page("set_password.html", status, valid=valid, token=token)


@post(
    "/set-password/{token:str}",
    opt=PUBLIC,
    include_in_schema=False,
    sync_to_thread=True,
    request_max_body_size=MAX_FORM_BYTES,
)
def set_password(
    dashboard: NamedDependency[Dashboard],
    token: FromPath[str],
    data: Annotated[NewPasswordForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Response[str]:
    """Sets the password (the same command as `POST /v1/password-links/{token}`)."""
    try:
        with password_field("new_password"):
            acceptable_password(data.new_password)  # what is wrong with it, before "differ"
            if data.new_password != data.repeat:
                raise InvalidInput("repeat: the two passwords differ", field="repeat")
            user_id = dashboard.http.accounts.set_password_with_link(token, data.new_password)
    except DomainError as error:
        problem, _ = problem_for(error)
        valid = not isinstance(error, NotFound)
        return page(
            "set_password.html", problem.status, valid=valid, token=token, error=error.message
        )
    end_other_sessions(dashboard.http, user_id, None)
    return page("set_password.html", valid=False, token=token, done=True)


# One's own account: the password (staff and a customer's users alike)


class PasswordChangeForm(msgspec.Struct, frozen=True):
    current_password: str = ""
    new_password: str = ""
    repeat: str = ""


@get("/account", include_in_schema=False)
async def account_page(request: Request[Any, Any, Any]) -> Response[str]:
    return caller_page(request, "account.html", home=home_of(_caller(request).viewer()))


@post(
    "/account/password",
    include_in_schema=False,
    sync_to_thread=True,
    request_max_body_size=MAX_FORM_BYTES,
)
def change_own_password(
    request: Request[Any, Any, Any],
    dashboard: NamedDependency[Dashboard],
    data: Annotated[PasswordChangeForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Response[str]:
    """Changes the password (the same command as `POST /v1/me/password`)."""
    caller = _caller(request)
    home = home_of(caller.viewer())
    try:
        with password_field("new_password"):
            acceptable_password(data.new_password)  # what is wrong with it, before "differ"
            if data.new_password != data.repeat:
                raise InvalidInput("repeat: the two passwords differ", field="repeat")
            user_id = dashboard.http.accounts.change_password(
                caller.login, data.current_password, data.new_password
            )
    except DomainError as error:
        problem, _ = problem_for(error)
        return caller_page(request, "account.html", problem.status, home=home, error=error.message)
    ended = end_other_sessions(dashboard.http, user_id, request.cookies.get(SESSION_COOKIE))
    return caller_page(request, "account.html", home=home, done=True, sessions_ended=ended)


# The dashboard


class Rate(msgspec.Struct, frozen=True):
    delivered: int
    failed: int
    pending: int

    @property
    def settled(self) -> int:
        return self.delivered + self.failed

    @property
    def percent(self) -> float | None:
        """Delivered among those whose outcome is known; None while none is."""
        return 100.0 * self.delivered / self.settled if self.settled else None


def _rate(counts: list[DailyCount]) -> Rate:
    totals = outcome_totals(counts)
    return Rate(totals["delivered"], totals["failed"], totals["pending"])


def _today(dashboard: Dashboard) -> date:
    """Today on the process's clock (UTC)."""
    return dashboard.http.clock.now().date()


@get("/", include_in_schema=False)
async def overview(
    request: Request[Any, Any, Any], dashboard: NamedDependency[Dashboard]
) -> Response[str]:
    today = _today(dashboard)
    first = today - timedelta(days=CHART_DAYS - 1)

    def read() -> tuple[dict[str, int], list[DailyCount]]:
        # Counts the projections keep: a few hundred rows, however many customers and
        # deliveries there are.
        return (
            dashboard.accounts.customer_counts(),
            dashboard.traffic.daily_counts(None, first, today),
        )

    probe = dashboard.health
    (subscriptions, counts), health = await asyncio.gather(
        asyncio.to_thread(read), probe.check() if probe else _nothing()
    )
    week = [c for c in counts if c.day > today - timedelta(days=7)]
    todays = [c for c in counts if c.day == today]
    return caller_page(
        request,
        "overview.html",
        today=today,
        customer_count=sum(subscriptions.values()),
        active_count=subscriptions.get("active", 0),
        deliveries_today=sum(c.count for c in todays),
        rate_today=_rate(todays),
        rate_week=_rate(week),
        chart=deliveries_chart(counts, first, today),
        chart_days=CHART_DAYS,
        health=health,
        states=_health_status(health) if health else {},
        provider_states=PROVIDER_BADGES,
    )


# The badge colour of each provider state (adapters/providers/health.py).
PROVIDER_BADGES = {
    "bound": "ok",
    "reachable": "ok",
    "idle": "behind",
    "unbound": "down",
    "unreachable": "down",
}


async def _nothing() -> None:
    return None


def _health_status(health: PlatformHealth) -> dict[str, str]:
    """'ok', 'behind' or 'down' for each part, for the colour of its badge."""
    status = {view.name: "ok" if view.lag == 0 else "behind" for view in health.views}
    relay = health.relay
    status["relay"] = "down" if relay.position is None and relay.lag else (
        "ok" if relay.lag == 0 else "behind"
    )  # fmt: skip
    workers = health.workers
    if not workers.reachable:
        status["workers"] = "down"
    elif workers.waiting_pulls or workers.in_flight:
        status["workers"] = "ok"
    else:  # no worker is asking for jobs: none is alive, or all are between two fetches
        status["workers"] = "down" if workers.pending else "behind"
    return status


@get("/customers", include_in_schema=False, sync_to_thread=True)
def customers_page(
    request: Request[Any, Any, Any],
    dashboard: NamedDependency[Dashboard],
    after: Annotated[str | None, QueryParameter(name="after")] = None,
    find: Annotated[str | None, QueryParameter(name="q")] = None,
) -> Response[str]:
    """Customers a page at a time (registration order, keyset cursor `after`), or the one
    a search finds (`q`: its id, or the login of one of its users)."""
    errors: list[str] = []
    position = _cursor(after, CustomerPosition, errors)
    customers: list[CustomerRow] = []
    if errors:
        pass
    elif find and find.strip():
        customers = _find_customers(dashboard, find)
    else:
        customers = dashboard.accounts.customer_page(after=position, limit=PAGE_SIZE + 1)
    shown = customers[:PAGE_SIZE]
    last = shown[-1] if len(customers) > PAGE_SIZE else None
    invoices = dashboard.http.invoices_view
    overdue = invoices.overdue_of([c.id for c in shown]) if invoices is not None else {}
    return caller_page(
        request,
        "customers.html",
        HTTPStatus.BAD_REQUEST if errors else HTTPStatus.OK,
        customers=shown,
        total=sum(dashboard.accounts.customer_counts().values()),
        user_counts=dashboard.accounts.user_counts([c.id for c in shown]),
        overdue=overdue,
        find=(find or "").strip(),
        errors=errors,
        next=last and encode_cursor((last.registered_at, last.id)),
    )


CustomerPosition = Position  # (registered_at, id) of a page's last customer
TrafficPosition = Position  # (queued_at, delivery id) of a page's last row
T = TypeVar("T")


def _cursor(text: str | None, shape: type[T], errors: list[str], field: str = "after") -> T | None:
    """A page's cursor, or None and a line in `errors` (the page answers 400)."""
    if not text:
        return None
    try:
        return decode_cursor(text.strip(), shape, field)
    except InvalidInput as error:
        errors.append(error.message)
        return None


def _find_customers(dashboard: Dashboard, text: str) -> list[CustomerRow]:
    """The customer a search names: by its id, or by the login of one of its users, found
    through the login's claim (the platform-wide blind index of logins); no list of every
    customer is read."""
    text = text.strip()
    try:
        return dashboard.accounts.customers(customer_id=UUID(text))
    except ValueError:
        pass
    try:
        user = dashboard.http.accounts.user_by_login(text)
    except DomainError:  # no such login, or text no login can be
        return []
    if user.customer_id is None:
        return []
    return dashboard.accounts.customers(customer_id=user.customer_id)


def _chosen_customer(
    dashboard: Dashboard, customer_id: UUID | None, find: str | None, errors: list[str]
) -> UUID | None:
    """The customer a list page is narrowed to: `customer_id`, else the one the search box
    (`customer`: an id or a user's login) finds."""
    if customer_id is not None or not find or not find.strip():
        return customer_id
    found = _find_customers(dashboard, find)
    if not found:
        errors.append("No customer has that id, nor a user with that login.")
        return None
    return found[0].id


@get("/customers/{customer_id:uuid}", include_in_schema=False, sync_to_thread=True)
def customer_page(
    request: Request[Any, Any, Any],
    dashboard: NamedDependency[Dashboard],
    customer_id: FromPath[UUID],
) -> Response[str]:
    rows = dashboard.accounts.customers(customer_id=customer_id)
    if not rows:
        raise _NotFound(f"There is no customer {customer_id}.")
    customer = rows[0]
    contact_shown = _caller(request).viewer().sees_contact_of(customer_id)
    if not contact_shown:  # not handed to the template at all, rather than hidden by it
        customer = msgspec.structs.replace(
            customer, contact_name=None, contact_email=None, contact_phone=None,
            billing_address=None,
        )  # fmt: skip
    today = _today(dashboard)
    first = today - timedelta(days=CHART_DAYS - 1)
    counts = dashboard.traffic.daily_counts(customer_id, first, today)
    by_channel = {
        channel: outcome_totals(c for c in counts if c.channel == channel)
        for channel, _ in CHANNELS
    }
    ledger = (
        []
        if dashboard.ledger is None
        else dashboard.ledger.entries(customer_id=customer_id, limit=PAGE_SIZE)
    )
    users = dashboard.accounts.users(customer_id=customer_id, limit=PAGE_SIZE + 1)
    return caller_page(
        request,
        "customer.html",
        customer=customer,
        contact_shown=contact_shown,
        users=users[:PAGE_SIZE],
        more_users=len(users) > PAGE_SIZE,
        staff_changes=[entry for entry in ledger if entry.kind == "users"],
        by_channel=by_channel,
        channels=CHANNELS,
        outcomes=OUTCOMES,
        chart=deliveries_chart(counts, first, today),
        first=first,
        today=today,
    )


@get("/traffic", include_in_schema=False, sync_to_thread=True)
def traffic_page(
    request: Request[Any, Any, Any],
    dashboard: NamedDependency[Dashboard],
    customer: Annotated[str | None, QueryParameter(name="customer_id")] = None,
    find: Annotated[str | None, QueryParameter(name="customer")] = None,
    start: Annotated[str | None, QueryParameter(name="from")] = None,
    end: Annotated[str | None, QueryParameter(name="to")] = None,
    recipient: Annotated[str | None, QueryParameter(name="recipient")] = None,
    before: Annotated[str | None, QueryParameter(name="before")] = None,
) -> Response[str]:
    viewer = _caller(request).viewer()
    today = _today(dashboard)
    errors: list[str] = []
    customer_id = _parse(customer, UUID, "customer", errors)
    first = _parse(start, _day, "from", errors) or today - timedelta(days=6)
    last = _parse(end, _day, "to", errors) or today
    position = _cursor(before, TrafficPosition, errors, "before")
    if first > last:
        errors.append("'from' must not be after 'to'.")
    if not errors:
        customer_id = _chosen_customer(dashboard, customer_id, find, errors)
    wanted = _recipient_wanted(viewer, customer_id, recipient, errors)
    rows: list[TrafficRow] = []
    if not errors:
        rows = dashboard.traffic.traffic(
            customer_id,
            datetime.combine(first, time.min, UTC),
            datetime.combine(last + timedelta(days=1), time.min, UTC),
            limit=PAGE_SIZE + 1,
            recipient=wanted,
            before=position,
        )
    shown = rows[:PAGE_SIZE]
    # Only the customers and senders of the rows shown: never a list of every customer.
    customers = dashboard.accounts.customers_by_id(list({r.customer_id for r in shown}))
    senders = list({r.requested_by for r in shown if r.requested_by is not None})
    entitled = {c.id: viewer.sees_traffic_of(c.id) for c in customers}
    end_row = shown[-1] if len(rows) > PAGE_SIZE else None
    return caller_page(
        request,
        "traffic.html",
        HTTPStatus.BAD_REQUEST if errors else HTTPStatus.OK,
        names={c.id: c.organisation for c in customers},
        logins={u.id: u.login for u in dashboard.accounts.users_by_id(senders)},
        customer_id=customer_id,
        find=(find or "").strip() if customer_id is None else str(customer_id),
        first=first,
        last=last,
        recipient=(recipient or "").strip() if viewer.sees_traffic_of(customer_id) else "",
        searches_recipients=viewer.sees_traffic_of(customer_id)
        if customer_id is not None
        else any(entitled.values()),
        errors=errors,
        rows=shown,
        next=end_row
        and end_row.queued_at
        and encode_cursor((end_row.queued_at, end_row.delivery_id)),
        limit=PAGE_SIZE,
        entitled=entitled,
        status_class=STATUS_CLASS,
        utc=UTC,
    )


def _recipient_wanted(
    viewer: Viewer, customer_id: UUID | None, text: str | None, errors: list[str]
) -> str | None:
    """A recipient to search the traffic by, in its look-up form: found through the
    customer's blind index, so the customer must be named, and only by those who see
    recipients (R4, R11)."""
    if not text or not text.strip():
        return None
    if customer_id is None:
        errors.append("Choose a customer to search its traffic by recipient.")
        return None
    if not viewer.sees_traffic_of(customer_id):
        errors.append("Your role does not see recipients, so it cannot search by one.")
        return None
    try:
        return parse_recipient_query(text)
    except InvalidInput as error:
        errors.append(error.message)
        return None


@get("/ledger", include_in_schema=False, sync_to_thread=True)
def ledger_page(
    request: Request[Any, Any, Any],
    dashboard: NamedDependency[Dashboard],
    customer: Annotated[str | None, QueryParameter(name="customer_id")] = None,
    find: Annotated[str | None, QueryParameter(name="customer")] = None,
    before: Annotated[str | None, QueryParameter(name="before")] = None,
) -> Response[str]:
    """The privacy ledger: exports, terminations, erasures, retention runs, disclosures."""
    errors: list[str] = []
    customer_id = _parse(customer, UUID, "customer", errors)
    position = _cursor(before, int, errors, "before")
    if not errors:
        customer_id = _chosen_customer(dashboard, customer_id, find, errors)
    entries = (
        []
        if dashboard.ledger is None or errors
        else dashboard.ledger.entries(customer_id=customer_id, limit=PAGE_SIZE + 1, before=position)
    )
    shown = entries[:PAGE_SIZE]
    customers = dashboard.accounts.customers_by_id(
        list({e.customer_id for e in shown if e.customer_id is not None})
    )
    return caller_page(
        request,
        "ledger.html",
        HTTPStatus.BAD_REQUEST if errors else HTTPStatus.OK,
        entries=shown,
        errors=errors,
        customer_id=customer_id,
        find=(find or "").strip() if customer_id is None else str(customer_id),
        names={c.id: c.organisation for c in customers},
        next=encode_cursor(shown[-1].position) if len(entries) > PAGE_SIZE else None,
    )


def _parse(text: str | None, kind: Any, field: str, errors: list[str]) -> Any:
    """The pages' one parser of query parameters: a value, or None and a line in `errors`
    (the page then answers 400 with its form and the errors, and reads nothing)."""
    if not text:
        return None
    try:
        return kind(text.strip())
    except ValueError as error:
        reason = f" ({error.args[0]})" if isinstance(error, OutOfRange) else ""
        what = "date" if kind is _day else "id" if kind is UUID else "value"
        errors.append(f"'{field}' is not a valid {what}{reason}.")
        return None


class OutOfRange(ValueError):
    """A well-formed value the pages cannot work with; its words say which ones they can."""


# Days a period may start or end on: a year's margin either side of what `date` can hold,
# so a page's arithmetic on them (the day after `to`, a week before) cannot overflow.
FIRST_DAY, LAST_DAY = date(2, 1, 1), date(9998, 12, 31)


def _day(text: str) -> date:
    day = date.fromisoformat(text)
    if not FIRST_DAY <= day <= LAST_DAY:
        raise OutOfRange(f"between {FIRST_DAY.isoformat()} and {LAST_DAY.isoformat()}")
    return day


# Errors as pages


class _NotFound(HTTPException):
    status_code = HTTPStatus.NOT_FOUND


def error_page(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    """The pages' one exception handler: errors become pages, not problem documents.

    Which status an error means is decided where the API decides it (`problem_for`).
    """
    if isinstance(error, NotAuthorizedException):
        return Redirect("/login")
    problem, _ = problem_for(error)
    caller = current_caller(request)
    return page(
        "error.html",
        problem.status,
        caller=caller,
        viewer=caller.viewer() if caller else None,
        path=request.url.path,
        status_code=problem.status,
        title=problem.title,
        detail=problem.detail,
    )


def pages_router(deps: HttpDeps) -> Router:
    """The login and account pages, the dashboard under /admin, the customer's pages under
    /app, and the stylesheet under /static."""
    from picasse.adapters.http.case_pages import STAFF_PAGES  # they use ours
    from picasse.adapters.http.customer_pages import customer_pages_router  # it uses ours
    from picasse.adapters.http.visits import visit_pages  # it uses ours

    dashboard = Dashboard(deps)
    admin = Router(
        path="/admin",
        route_handlers=[
            overview,
            customers_page,
            customer_page,
            traffic_page,
            ledger_page,
            *STAFF_PAGES,
        ],
        guards=[staff_only],
    )
    static = create_static_files_router(
        path="/static", directories=[HERE / "static"], opt=PUBLIC, include_in_schema=False
    )
    return Router(
        path="/",
        route_handlers=[
            login_page,
            login,
            logout,
            set_password_page,
            set_password,
            account_page,
            change_own_password,
            admin,
            customer_pages_router(),
            *visit_pages(),
            static,
        ],
        dependencies={
            "dashboard": Provide(lambda: dashboard, use_cache=True, sync_to_thread=False)
        },
        exception_handlers={Exception: error_page},
        include_in_schema=False,
    )
