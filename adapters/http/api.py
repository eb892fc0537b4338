"""The customer API under /v1: sessions, API keys, customers, users, messages and traffic.

Who may do what is the access policy's to say (`domain/access.py` `Viewer`): routes ask it
with `allowed(Viewer.question, …)` guards and in their handlers, never by a role of their
own. What it answers, route by route (✓ any; "own": only their own customer, others' answer
404; no: 403):

| route                                  | scope (5)     | platform_admin | support    | auditor         | customer_admin | customer_user |
|----------------------------------------|---------------|----------------|------------|-----------------|----------------|---------------|
| POST, DELETE /v1/sessions              | public        | anyone: log in, log out                                                               |
| GET /v1/api-keys                       | users         | own keys       | own keys   | own keys        | customer's (6) | own keys      |
| POST /v1/api-keys                      | users         | ✓              | ✓          | ✓               | ✓              | ✓             |
| DELETE /v1/api-keys/{key_id}           | users         | any key        | own key    | own key         | customer's (6) | own key       |
| GET /v1/customers                      | users         | all            | all        | all (1)         | own            | own           |
| GET /v1/customers/{customer_id}        | users         | ✓              | ✓          | ✓ (1)           | own            | own           |
| PATCH /v1/customers/{customer_id}      | users         | ✓              | ✓          | no              | own            | no            |
| GET /v1/customers/{customer_id}/users  | users         | ✓              | ✓          | ✓               | own            | no            |
| POST /v1/customers/{customer_id}/users | users         | if none (2)    | no         | no              | own (2)        | no            |
| PATCH /v1/customers/{id}/users/{user_id} | users       | ✓ (7)          | ✓ (7)      | no              | own (7)        | no            |
| POST /v1/me/password                   | users         | ✓              | ✓          | ✓               | ✓              | ✓             |
| POST /v1/password-links/{token}        | public        | anyone holding the link (a customer's user, from their mail)                         |
| POST /v1/messages                      | messages:send | no             | no         | no              | own            | own           |
| GET /v1/messages/{message_id}          | messages:read | status (3)     | status (3) | status (3), no recipients | own (4) | own (4)     |
| GET /v1/traffic                        | messages:read | customer_id=   | customer_id= | customer_id=, no recipients | own | own           |

(1) organisation and subscription only: contact person and billing address are for
    support, admins and the customer itself.
(2) customer roles only (customer_admin, customer_user); staff accounts come from the CLI.
    The user gets a one-time set-password link at the given `email`: nobody else ever
    knows their password (R7). A platform admin adds a customer's admin only while it has
    none who can act (its first, or one after the last one's data was erased); after that
    only the customer's own admins add its users (`Viewer.may_add_users_to`). Every
    refused login answers alike (409 login-unavailable), and additions are rate-limited
    per customer (429).
(3) never the content (R7): `reveal_content=true` answers 403 to every Picasse role.
(4) `reveal_content=true` adds the body: only the customer's own users ever get one.
(5) what an API key needs to call the route (`opt=scoped(Scope....)` on the handler;
    `auth.scope_guard` refuses a key without it: 403 missing-scope). Sessions are limited
    by the role alone. A route naming no scope takes no key at all.
(6) a customer's admins list and revoke every key of the customer's users
    (`Viewer.sees_api_keys_of`); everyone else their own keys only.
(7) role (customer_admin, customer_user) or disabled true/false (`Viewer.may_change_users_of`);
    disabling ends the user's sessions. The customer's last active admin is neither
    disabled nor demoted (409 last-admin).

The tenant check is not repeated here: `auth.tenant_guard` checks every `customer_id` in a
path or query, and the domain's queries check resources addressed by their own id.
Lists come from the views (`picasse project` keeps them current, a moment behind the
log); single resources come from the event store, so a change reads back at once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlencode
from uuid import UUID

import msgspec
from litestar import Request, Response, Router, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import HeaderParameter, JSONBody, PathParameter, QueryParameter
from msgspec import Meta

from picasse.adapters.http.auth import (
    PUBLIC,
    SESSION_COOKIE,
    Caller,
    allowed,
    caller_dependency,
    clear_session_cookie,
    end_other_sessions,
    log_in,
    log_out,
    password_field,
    scoped,
    set_session_cookie,
    throttle_user_creation,
)
from picasse.adapters.http.clients import client_address
from picasse.adapters.http.cursors import Position, decode_cursor, encode_cursor
from picasse.adapters.http.problems import problem_responses
from picasse.adapters.password_links import mail_password_link
from picasse.domain.access import Viewer
from picasse.domain.accounts import MAX_PASSWORD_LENGTH, Accounts, UserDetails
from picasse.domain.api_keys import MAX_NAME, SCOPE_DESCRIPTIONS, ApiKeys, Scope
from picasse.domain.customers import Subscription
from picasse.domain.errors import Forbidden, InvalidInput
from picasse.domain.messages import Channel, DeliveryStatus, FailureReason, Priority
from picasse.domain.messaging import Messages, SendRequest, parse_recipient_query
from picasse.domain.personal import Erased
from picasse.domain.values import Role
from picasse.projections.accounts import PAGE_SIZE, AccountsView
from picasse.projections.traffic import TrafficView

if TYPE_CHECKING:
    from picasse.adapters.http.app import HttpDeps

MAX_TRAFFIC_ROWS = 1000
# The cursor of a list route's next page, as its `Link: <…?after=…>; rel="next"` names it.
AfterCursor = Annotated[
    str | None,
    QueryParameter(
        max_length=200,
        description="where the previous page ended: the `after` of its `Link: rel=next`",
    ),
]
DEFAULT_TRAFFIC_PERIOD = timedelta(days=1)
MAX_JSON_BODY = 512 * 1024  # an e-mail body is at most 100 000 characters

S = HTTPStatus  # short names for the status lists below

# An enum is one component schema of the OpenAPI document, whose description Litestar takes
# from whichever field of that enum it meets last: every field of one enum says the same,
# or the document would change from one process to the next.
ROLE = "the user's role: what they may do (a customer's users: customer_admin or customer_user)"
CHANNEL = "the channel: sms, email or voice"
PRIORITY = "normal, or alert (an alert may ask for acknowledgement: see ack_within_minutes)"
FAILURE_REASON = "why it failed, as a code; null if it did not"
CASE_STATE = "the case's state: open → in_progress → resolved → closed"

# Path parameters, described once for every route that takes them.
CustomerId = Annotated[UUID, PathParameter(description="the customer's id")]
KeyId = Annotated[UUID, PathParameter(description="the API key's id")]
UserId = Annotated[UUID, PathParameter(description="the user's id")]
MessageId = Annotated[UUID, PathParameter(description="the message's id")]
LinkToken = Annotated[
    str, PathParameter(description="the last part of the set-password link mailed to the user")
]


# ---------------------------------------------------------------- wire shapes
# Every field says what it is: the OpenAPI document and /docs show these descriptions
# (tests/integration/test_api_documentation.py holds every route and field to it).


class Credentials(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A login and its password."""

    login: Annotated[str, Meta(max_length=254, description="the user's login")]
    password: Annotated[
        str, Meta(max_length=MAX_PASSWORD_LENGTH, description="the user's password")
    ]

    def __repr__(self) -> str:  # the password stays out of every log line
        return "Credentials(…)"


class SessionStarted(msgspec.Struct, frozen=True):
    """Who the new session belongs to."""

    user_id: Annotated[UUID, Meta(description="the logged-in user's id")]
    role: Annotated[Role, Meta(description=ROLE)]
    customer_id: Annotated[
        UUID | None, Meta(description="the user's customer; null for Picasse staff")
    ]


SCOPES_TEXT = "; ".join(f"`{s.value}`: {text}" for s, text in SCOPE_DESCRIPTIONS.items())


class ApiKeyRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A key to create: what to call it and what it may do."""

    name: Annotated[
        str,
        msgspec.Meta(max_length=MAX_NAME, description="what the key is for, e.g. `nightly sender`"),
    ]
    scopes: Annotated[
        list[str],
        msgspec.Meta(
            max_length=len(Scope),
            description="what the key may call (an unknown scope answers 422): " + SCOPES_TEXT,
        ),
    ]


class NewApiKey(msgspec.Struct, frozen=True):
    """A new API key, with its secret."""

    id: Annotated[UUID, Meta(description="the key's id, to revoke it with")]
    key: Annotated[
        str,
        Meta(description="the secret, sent as `Authorization: Bearer <key>`; shown this once"),
    ]  # we keep only its hash
    name: Annotated[str, Meta(description="what the key is for")]
    scopes: Annotated[list[str], Meta(description="what the key may call")]

    def __repr__(self) -> str:
        return f"NewApiKey(id={self.id})"


class ApiKeyOut(msgspec.Struct, frozen=True):
    """An API key as listed: never its secret or hash, and no time of use (R6)."""

    id: Annotated[UUID, msgspec.Meta(description="the key's id")]
    name: Annotated[
        str | None,
        msgspec.Meta(description="what the key is for; null for keys made before names"),
    ]
    scopes: Annotated[list[str], msgspec.Meta(description="what the key may call")]
    creator: Annotated[UUID, msgspec.Meta(description="the user who created it: whose key it is")]
    created: Annotated[datetime, msgspec.Meta(description="when it was created")]
    revoked: Annotated[bool, msgspec.Meta(description="revoked keys open nothing")]


class Contact(msgspec.Struct, frozen=True):
    """A customer's contact person (a data subject: null once erased)."""

    name: Annotated[str | None, Meta(description="the contact person's name")]
    email: Annotated[str | None, Meta(description="their e-mail address")]
    phone: Annotated[str | None, Meta(description="their phone number, E.164")]


class CustomerOut(msgspec.Struct, frozen=True):
    """A business that subscribes to Picasse."""

    id: Annotated[UUID, Meta(description="the customer's id")]
    organisation: Annotated[
        str | None, Meta(description="the organisation's name; null once erased")
    ]
    subscription: Annotated[Subscription, Meta(description="where the subscription stands")]
    plan: Annotated[str | None, Meta(description="the plan subscribed to, if any")]
    registered_at: Annotated[datetime, Meta(description="when the customer was registered")]
    erased: Annotated[
        bool, Meta(description="terminated and crypto-shredded: its personal data reads null")
    ]
    # None for roles not entitled to them (auditor), and once erased:
    contact: Annotated[
        Contact | None,
        Meta(description="the contact person; null for roles not entitled to it (auditors)"),
    ] = None
    billing_address: Annotated[
        str | None, Meta(description="the billing address; null for roles not entitled to it")
    ] = None


class ContactChange(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Only the fields given change."""

    contact_name: Annotated[str | None, Meta(description="the contact person's new name")] = None
    email: Annotated[str | None, Meta(description="their new e-mail address")] = None
    phone: Annotated[
        str | None, Meta(description="their new phone number (+ and the country code)")
    ] = None
    billing_address: Annotated[str | None, Meta(description="the new billing address")] = None


class UserOut(msgspec.Struct, frozen=True):
    """A user account."""

    id: Annotated[UUID, Meta(description="the user's id")]
    customer_id: Annotated[
        UUID | None, Meta(description="the user's customer; null for Picasse staff")
    ]
    login: Annotated[str | None, Meta(description="the user's login; null once erased")]
    role: Annotated[Role, Meta(description=ROLE)]
    disabled: Annotated[bool, Meta(description="whether the user is barred from logging in")]


class NewUser(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A user to add to a customer."""

    login: Annotated[str, Meta(description="the login, unique across Picasse")]
    role: Annotated[Role, Meta(description=ROLE)]
    email: Annotated[
        str, Meta(max_length=320, description="where the one-time set-password link is sent")
    ]

    def __repr__(self) -> str:  # login and address stay out of every log line
        return f"NewUser(role={self.role.value})"


class UserChange(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Only the fields given change; at least one."""

    role: Annotated[
        Role | None,
        msgspec.Meta(description=ROLE),
    ] = None
    disabled: Annotated[
        bool | None,
        msgspec.Meta(
            description="true: the user can no longer log in and their sessions end;"
            " false: enabled again"
        ),
    ] = None


class NewPassword(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A password to set with a one-time link."""

    new_password: Annotated[
        str,
        Meta(
            max_length=MAX_PASSWORD_LENGTH,
            description="the new password; it must score 3 or more with zxcvbn",
        ),
    ]

    def __repr__(self) -> str:
        return "NewPassword(…)"


class PasswordChange(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The caller's current password and the one to replace it."""

    current_password: Annotated[
        str, Meta(max_length=MAX_PASSWORD_LENGTH, description="the password in use now")
    ]
    new_password: Annotated[
        str,
        Meta(
            max_length=MAX_PASSWORD_LENGTH,
            description="the new password; it must score 3 or more with zxcvbn",
        ),
    ]

    def __repr__(self) -> str:
        return "PasswordChange(…)"


API_KEYS_STAY = (
    "API keys stay valid until revoked: revoke any the old password may have exposed"
    " with DELETE /v1/api-keys/{key_id}"
)


class PasswordSet(msgspec.Struct, frozen=True):
    """A password was set."""

    user_id: Annotated[UUID, Meta(description="whose password it is")]
    sessions_ended: Annotated[
        int, Meta(description="how many other sessions of the user the new password ended")
    ]
    api_keys: Annotated[str, Meta(description="a reminder: API keys are not revoked")] = (
        API_KEYS_STAY
    )


class SendMessage(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A message to send: its channel, recipients and content."""

    channel: Annotated[Channel, Meta(description=CHANNEL)]
    to: Annotated[
        list[str],
        Meta(description="recipients: phone numbers (+ and the country code) or e-mail addresses"),
    ] = []
    body: Annotated[
        str | None, Meta(description="the text; sealed at rest, never shown to Picasse staff")
    ] = None
    idempotency_key: Annotated[
        str | None,
        Meta(description="the same key within 24 hours answers the first message's id again"),
    ] = None
    schedule_at: Annotated[
        datetime | None,
        Meta(description="send then instead of now: with a time zone, at most 7 days ahead"),
    ] = None
    subject: Annotated[str | None, Meta(description="the subject line (e-mail only)")] = None
    group: Annotated[
        str | None,
        Meta(description="a recipient group's name or id, instead of or besides `to`"),
    ] = None
    priority: Annotated[Priority, Meta(description=PRIORITY)] = Priority.NORMAL
    template: Annotated[
        str | None, Meta(description="instead of body: text with {name} placeholders")
    ] = None
    template_id: Annotated[
        UUID | None,
        Meta(description="instead of body: a stored template (POST /v1/templates)"),
    ] = None
    variables: Annotated[
        dict[str, str], Meta(description="the values of the template's placeholders")
    ] = {}
    ack_within_minutes: Annotated[
        int | None,
        Meta(description="alerts: escalate to escalation_groups if not acknowledged in time"),
    ] = None
    escalation_groups: Annotated[
        list[str],
        Meta(description="groups (names or ids) alerted in turn while nobody acknowledges"),
    ] = []

    def __repr__(self) -> str:  # recipients and content stay out of every log line
        return f"SendMessage(channel={self.channel.value})"


class Accepted(msgspec.Struct, frozen=True):
    """A message was accepted for delivery."""

    id: Annotated[UUID, Meta(description="the message's id, to follow it with")]


Recipient = Annotated[
    str | None,
    Meta(description="the recipient; null for roles not entitled to traffic data, or erased"),
]
Attempts = Annotated[int, Meta(description="hand-overs to a provider so far")]
Reason = Annotated[FailureReason | None, Meta(description=FAILURE_REASON)]


class RecipientStatus(msgspec.Struct, frozen=True):
    """Where the delivery to one recipient stands."""

    id: Annotated[UUID, Meta(description="the delivery's id")]
    index: Annotated[int, Meta(description="the recipient's position in the message, from 0")]
    to: Recipient
    status: Annotated[DeliveryStatus, Meta(description="where the delivery stands")]
    attempts: Attempts
    reason: Reason
    provider: Annotated[str | None, Meta(description="the provider it was handed to, if any")]
    acknowledged: Annotated[bool, Meta(description="alerts: the recipient acknowledged it")]
    escalation_level: Annotated[
        int, Meta(description="alerts: how many escalation groups it has reached")
    ]


class MessageOut(msgspec.Struct, frozen=True):
    """A message and its deliveries."""

    id: Annotated[UUID, Meta(description="the message's id")]
    customer_id: Annotated[UUID, Meta(description="the customer that sent it")]
    channel: Annotated[Channel, Meta(description=CHANNEL)]
    priority: Annotated[Priority, Meta(description=PRIORITY)]
    requested_at: Annotated[datetime, Meta(description="when it was sent to us")]
    not_before: Annotated[
        datetime | None, Meta(description="when it is scheduled for; null: at once")
    ]
    recipient_count: Annotated[int, Meta(description="how many recipients it has")]
    deliveries: Annotated[list[RecipientStatus], Meta(description="one per recipient")]
    body: Annotated[
        str | None,
        Meta(description="the text: with reveal_content=true, for the customer's own users only"),
    ] = None


class TrafficEntry(msgspec.Struct, frozen=True):
    """One delivery as the traffic record (R4) has it."""

    delivery_id: Annotated[UUID, Meta(description="the delivery's id")]
    message_id: Annotated[UUID, Meta(description="the message it belongs to")]
    customer_id: Annotated[UUID, Meta(description="the customer that sent it")]
    requested_at: Annotated[datetime, Meta(description="when the message was sent to us")]
    requested_by: Annotated[
        UUID | None,
        Meta(description="the user who sent it; null: the operator's CLI; all zeros: Picasse"),
    ]
    client_ip: Annotated[
        str | None,
        Meta(description="the sender's address; null for roles not entitled to it, or erased"),
    ]
    channel: Annotated[str, Meta(description=CHANNEL)]
    recipient: Recipient
    status: Annotated[str, Meta(description="where the delivery stands")]
    attempts: Attempts
    reason: Reason
    updated_at: Annotated[datetime, Meta(description="when its status last changed")]


# ---------------------------------------------------------------- sessions and keys


def _answers(*statuses: HTTPStatus) -> dict[int, Any]:
    """A route's documented problems: what any authenticated route may answer, and these."""
    return problem_responses(S.BAD_REQUEST, S.UNAUTHORIZED, S.FORBIDDEN, *statuses)


@post(
    "/sessions",
    opt=PUBLIC,
    request_max_body_size=16 * 1024,
    security=[],
    summary="Log in: starts a session (cookie) for the pages and this API",
    description=(
        "Sets the session cookie. Repeated failures are slowed per account, and slowed then"
        " locked for a while per account and client address and per client address: 429"
        " with Retry-After."
    ),
    responses=problem_responses(
        S.BAD_REQUEST,
        S.UNAUTHORIZED,
        S.FORBIDDEN,
        S.CONFLICT,
        S.TOO_MANY_REQUESTS,
        S.UNPROCESSABLE_ENTITY,
    ),
    tags=["sessions"],
)
async def start_session(
    request: Request[Any, Any, Any], data: JSONBody[Credentials], deps: NamedDependency[Any]
) -> Response[SessionStarted]:
    caller, token = await log_in(deps, data.login, data.password, client_address(request))
    previous = request.cookies.get(SESSION_COOKIE)
    if previous:  # the session this browser had ends: one live session, not two
        await log_out(deps, previous)
    response = Response(
        SessionStarted(user_id=caller.user_id, role=caller.role, customer_id=caller.customer_id),
        status_code=HTTPStatus.CREATED,
    )
    set_session_cookie(response, token, secure=deps.secure_cookies)
    return response


@delete(
    "/sessions",
    opt=PUBLIC,
    security=[],
    status_code=HTTPStatus.NO_CONTENT,
    summary="Log out: ends this session and clears its cookie",
    description="Answers 204 also when there was no session to end.",
    responses=problem_responses(S.FORBIDDEN),
    tags=["sessions"],
)
async def end_session(
    request: Request[Any, Any, Any], deps: NamedDependency[Any]
) -> Response[None]:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await log_out(deps, token)
    response: Response[None] = Response(None, status_code=HTTPStatus.NO_CONTENT)
    clear_session_cookie(response)
    return response


@get(
    "/api-keys",
    sync_to_thread=True,
    opt=scoped(Scope.USERS),
    summary="API keys: the customer's for its admins, the caller's own for everyone else",
    description=(
        "Id, name, scopes, creator and dates; never the secret or its hash, and no time of"
        " last use (R6: no usage tracking). Comes from the accounts view, a moment behind."
    ),
    responses=_answers(),
    tags=["api-keys"],
)
def list_api_keys(
    caller: NamedDependency[Caller], accounts_view: NamedDependency[AccountsView]
) -> list[ApiKeyOut]:
    viewer = caller.viewer()
    mine = None if viewer.may_administer(caller.customer_id) else caller.user_id
    return [
        ApiKeyOut(
            id=row.id,
            name=row.name,
            scopes=row.scopes,
            creator=row.user_id,
            created=row.created_at,
            revoked=row.revoked,
        )
        for row in accounts_view.api_keys(customer_id=caller.customer_id, user_id=mine)
        if viewer.sees_api_keys_of(row.user_id, row.customer_id)
    ]


@post(
    "/api-keys",
    sync_to_thread=True,
    opt=scoped(Scope.USERS),
    request_max_body_size=16 * 1024,
    summary="Create an API key for the caller; the key is shown in this response only",
    description=(
        "Programs send it as `Authorization: Bearer <key>`. Only its hash is kept. The key"
        " may call the routes of its scopes only (others answer 403 missing-scope); a key"
        " creating a key gives it no scope it lacks itself."
    ),
    responses=_answers(S.UNPROCESSABLE_ENTITY),
    tags=["api-keys"],
)
def create_api_key(
    data: JSONBody[ApiKeyRequest],
    caller: NamedDependency[Caller],
    api_keys: NamedDependency[ApiKeys],
) -> NewApiKey:
    issued = api_keys.issue(
        user_id=caller.user_id,
        customer_id=caller.customer_id,
        name=data.name,
        scopes=data.scopes,
        within=caller.scopes,
    )
    return NewApiKey(id=issued.id, key=issued.key, name=issued.name, scopes=issued.scopes)


@delete(
    "/api-keys/{key_id:uuid}",
    sync_to_thread=True,
    opt=scoped(Scope.USERS),
    status_code=HTTPStatus.NO_CONTENT,
    summary="Revoke an API key (the owner's own, its customer's admins, or a platform admin)",
    description=(
        "The key stops working at once. Revoking a revoked key changes nothing. Another"
        " user's key (not of one's own customer, for its admins) answers 404, as one that"
        " does not exist."
    ),
    responses=_answers(S.NOT_FOUND),
    tags=["api-keys"],
)
def revoke_api_key(
    key_id: KeyId, caller: NamedDependency[Caller], api_keys: NamedDependency[ApiKeys]
) -> None:
    api_keys.revoke(key_id, by=caller.viewer())


# ---------------------------------------------------------------- customers and users


def customer_of(caller: Caller, refusal: str) -> UUID:
    """The caller's customer, on routes whose guard lets a customer's users only (each of
    them has one): Forbidden with `refusal` otherwise."""
    if caller.customer_id is None:
        raise Forbidden(refusal)
    return caller.customer_id


def _text(value: Any) -> str | None:
    return None if value is None or isinstance(value, Erased) else str(value)


@get(
    "/customers",
    sync_to_thread=True,
    opt=scoped(Scope.USERS),
    summary="Customers: all for Picasse staff, the caller's own for a customer's users",
    description=(
        "Read from the accounts view, a moment behind the log. Contact person and billing"
        " address only for those entitled to them (not auditors). Staff get 200 customers a"
        ' page in registration order; a `Link: <…?after=…>; rel="next"` header names the'
        " next page (none on the last)."
    ),
    responses=_answers(S.UNPROCESSABLE_ENTITY),
    tags=["customers"],
)
def list_customers(
    request: Request[Any, Any, Any],
    caller: NamedDependency[Caller],
    accounts_view: NamedDependency[AccountsView],
    after: AfterCursor = None,
) -> Response[list[CustomerOut]]:
    viewer = caller.viewer()
    if viewer.customer_id is not None:  # a customer's users: their own, one row
        rows = accounts_view.customers(customer_id=viewer.customer_id)
        more = False
    else:  # staff: a page of every customer's rows, in registration order
        position = decode_cursor(after, CustomerPosition, "after") if after else None
        rows = accounts_view.customer_page(after=position, limit=PAGE_SIZE + 1)
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
    last = rows[-1] if more else None
    customers = [
        CustomerOut(
            id=row.id,
            organisation=row.organisation,
            subscription=Subscription(row.subscription),
            plan=row.plan,
            registered_at=row.registered_at,
            erased=row.erased,
            contact=Contact(row.contact_name, row.contact_email, row.contact_phone)
            if viewer.sees_contact_of(row.id)
            else None,
            billing_address=row.billing_address if viewer.sees_contact_of(row.id) else None,
        )
        for row in rows
        if viewer.sees_customer(row.id)
    ]
    following = None if last is None else encode_cursor((last.registered_at, last.id))
    return paged(request, customers, following)


CustomerPosition = Position  # (registered_at, id) of a page's last customer
UserPosition = Position  # (added_at, id) of a page's last user


def paged(request: Request[Any, Any, Any], rows: list[Any], after: str | None) -> Response[Any]:
    """A page of a list route that answers a JSON array: the array as it always was, and
    the next page, if there is one, in a `Link: <…?after=…>; rel="next"` header (RFC 8288),
    so clients reading the array read it as before."""
    response = Response(rows)
    if after is not None:
        query = [(k, v) for k, v in request.query_params.multi_items() if k != "after"]
        following = urlencode([*query, ("after", after)])
        response.headers["Link"] = f'<{request.url.path}?{following}>; rel="next"'
    return response


def _customer_out(accounts: Accounts, customer_id: CustomerId, caller: Caller) -> CustomerOut:
    details = accounts.customer(customer_id)
    contact = caller.viewer().sees_contact_of(customer_id)
    erased = isinstance(details.organisation, Erased)
    return CustomerOut(
        id=details.id,
        organisation=_text(details.organisation),
        subscription=details.subscription,
        plan=details.plan,
        registered_at=datetime.fromisoformat(details.registered_at),
        erased=erased,
        contact=Contact(
            _text(details.contact.name), _text(details.contact.email), _text(details.contact.phone)
        )
        if contact
        else None,
        billing_address=_text(details.billing_address) if contact else None,
    )


@get(
    "/customers/{customer_id:uuid}",
    sync_to_thread=True,
    opt=scoped(Scope.USERS),
    summary="One customer",
    description=(
        "Read from the event store, so a change reads back at once. A customer's users see"
        " their own customer only (others: 404); 410 once it is terminated and erased."
    ),
    responses=_answers(S.NOT_FOUND, S.GONE),
    tags=["customers"],
)
def show_customer(
    customer_id: CustomerId,
    caller: NamedDependency[Caller],
    accounts: NamedDependency[Accounts],
) -> CustomerOut:
    return _customer_out(accounts, customer_id, caller)


@patch(
    "/customers/{customer_id:uuid}",
    sync_to_thread=True,
    opt=scoped(Scope.USERS),
    guards=[allowed(Viewer.may_change_customer, "your role may not change customers")],
    summary="Change a customer's contact details and billing address",
    description=(
        "Only the fields given change; phone numbers and e-mail addresses are checked as at"
        " registration (422 naming the field)."
    ),
    responses=_answers(
        S.NOT_FOUND,
        S.CONFLICT,
        S.GONE,
        S.UNPROCESSABLE_ENTITY,
    ),
    tags=["customers"],
)
def change_customer(
    customer_id: CustomerId,
    data: JSONBody[ContactChange],
    caller: NamedDependency[Caller],
    accounts: NamedDependency[Accounts],
) -> CustomerOut:
    accounts.change_contact(
        customer_id,
        contact_name=data.contact_name,
        email=data.email,
        phone=data.phone,
        billing_address=data.billing_address,
    )
    return _customer_out(accounts, customer_id, caller)


@get(
    "/customers/{customer_id:uuid}/users",
    sync_to_thread=True,
    opt=scoped(Scope.USERS),
    guards=[allowed(Viewer.may_list_users_of, "your role may not list users")],
    summary="A customer's users",
    description=(
        "For Picasse staff and the customer's own admins. Read from the accounts view, a"
        " moment behind the log; logins of erased users read null. 200 users a page, in the"
        ' order they were added; a `Link: <…?after=…>; rel="next"` header names the next.'
    ),
    responses=_answers(S.NOT_FOUND, S.UNPROCESSABLE_ENTITY),
    tags=["customers"],
)
def list_users(
    request: Request[Any, Any, Any],
    customer_id: CustomerId,
    accounts: NamedDependency[Accounts],
    accounts_view: NamedDependency[AccountsView],
    after: AfterCursor = None,
) -> Response[list[UserOut]]:
    accounts.customer(customer_id)  # a customer we do not know is a 404, not an empty list
    position = decode_cursor(after, UserPosition, "after") if after else None
    rows = accounts_view.users(customer_id=customer_id, after=position, limit=PAGE_SIZE + 1)
    last = rows[PAGE_SIZE - 1] if len(rows) > PAGE_SIZE else None
    users = [
        UserOut(
            id=row.id,
            customer_id=row.customer_id,
            login=row.login,
            role=Role(row.role),
            disabled=row.disabled,
        )
        for row in rows[:PAGE_SIZE]
    ]
    following = None if last is None else encode_cursor((last.added_at, last.id))
    return paged(request, users, following)


@post(
    "/customers/{customer_id:uuid}/users",
    sync_to_thread=True,
    opt=scoped(Scope.USERS),
    guards=[allowed(Viewer.may_add_users_to, "your role may not add users")],
    summary="Add a user to a customer (role customer_admin or customer_user)",
    description=(
        "The user gets a one-time set-password link (24 hours) at `email`. A platform admin"
        " adds a customer's admin only while it has none who can act. A login that cannot be used answers 409"
        " login-unavailable, whatever the reason; additions are rate-limited per customer."
    ),
    responses=_answers(
        S.NOT_FOUND,
        S.CONFLICT,
        S.GONE,
        S.UNPROCESSABLE_ENTITY,
        S.TOO_MANY_REQUESTS,
    ),
    tags=["customers"],
)
def add_user(
    customer_id: CustomerId,
    data: JSONBody[NewUser],
    caller: NamedDependency[Caller],
    deps: NamedDependency[Any],
) -> UserOut:
    if data.role.is_platform:
        raise InvalidInput(
            f"role {data.role.value} is for Picasse staff, who are added with the CLI",
            field="role",
        )
    user = invite_and_mail(
        deps, customer_id, login=data.login, role=data.role, email=data.email, by=caller.viewer()
    )
    return _user_out(user)


def _user_out(user: UserDetails) -> UserOut:
    return UserOut(
        id=user.id,
        customer_id=user.customer_id,
        login=_text(user.login),
        role=user.role,
        disabled=user.disabled,
    )


def invite_and_mail(
    deps: HttpDeps, customer_id: UUID, *, login: str, role: Role, email: str, by: Viewer
) -> UserDetails:
    """Adds a customer's user and mails them their set-password link (rate-limited per
    customer): the one way of the API and the customer's pages."""
    throttle_user_creation(deps, customer_id)
    link = deps.accounts.invite_user(
        customer_id=customer_id, login=login, role=role, email=email, by=by
    )
    mail_password_link(deps.messages, deps.ack_links.public_url, link)
    return deps.accounts.user(link.user_id)


def change_and_end_sessions(
    deps: HttpDeps,
    customer_id: UUID,
    user_id: UUID,
    *,
    role: Role | None,
    disabled: bool | None,
    by: Viewer,
) -> UserDetails:
    """Changes a customer's user; a disabled user's every session ends at once (the API's
    and the customer's pages' one way)."""
    user = deps.accounts.change_user(customer_id, user_id, role=role, disabled=disabled, by=by)
    if user.disabled:
        end_other_sessions(deps, user.id, None)  # every session of theirs: none is kept
    return user


@patch(
    "/customers/{customer_id:uuid}/users/{user_id:uuid}",
    sync_to_thread=True,
    opt=scoped(Scope.USERS),
    guards=[allowed(Viewer.may_change_users_of, "your role may not change users")],
    request_max_body_size=16 * 1024,
    summary="Change a customer's user: its role, or disable or enable it",
    description=(
        '`{"role": "customer_admin"}` or `customer_user`; `{"disabled": true}` ends the'
        " user's sessions and stops their API keys, `false` lets them in again. Asking for"
        " what already holds changes nothing. The customer's last active admin is neither"
        " disabled nor demoted: 409 last-admin."
    ),
    responses=_answers(S.NOT_FOUND, S.CONFLICT, S.GONE, S.UNPROCESSABLE_ENTITY),
    tags=["customers"],
)
def change_user(
    customer_id: CustomerId,
    user_id: UserId,
    data: JSONBody[UserChange],
    caller: NamedDependency[Caller],
    deps: NamedDependency[Any],
) -> UserOut:
    user = change_and_end_sessions(
        deps, customer_id, user_id, role=data.role, disabled=data.disabled, by=caller.viewer()
    )
    return _user_out(user)


@post(
    "/password-links/{token:str}",
    opt=PUBLIC,
    security=[],
    sync_to_thread=True,
    status_code=HTTPStatus.OK,
    request_max_body_size=16 * 1024,
    summary="Set a password with a one-time set-password link (the page's JSON twin)",
    description=(
        "The token is the last part of the link mailed to the user. It works once, for 24"
        " hours, and only the newest link of a user works. Every session of the user ends."
        " API keys stay valid until revoked."
    ),
    responses=problem_responses(S.BAD_REQUEST, S.FORBIDDEN, S.NOT_FOUND, S.UNPROCESSABLE_ENTITY),
    tags=["sessions"],
)
def set_password_with_link(
    token: LinkToken,
    data: JSONBody[NewPassword],
    accounts: NamedDependency[Accounts],
    deps: NamedDependency[Any],
) -> PasswordSet:
    with password_field("new_password"):
        user_id = accounts.set_password_with_link(token, data.new_password)
    return PasswordSet(user_id=user_id, sessions_ended=end_other_sessions(deps, user_id, None))


@post(
    "/me/password",
    status_code=HTTPStatus.OK,
    sync_to_thread=True,
    opt=scoped(Scope.USERS),
    request_max_body_size=16 * 1024,
    summary="Change the caller's own password",
    description=(
        "Ends every other session of the caller (this one stays). API keys stay valid"
        " until revoked."
    ),
    responses=_answers(S.CONFLICT, S.UNPROCESSABLE_ENTITY),
    tags=["sessions"],
)
def change_own_password(
    request: Request[Any, Any, Any],
    data: JSONBody[PasswordChange],
    caller: NamedDependency[Caller],
    accounts: NamedDependency[Accounts],
    deps: NamedDependency[Any],
) -> PasswordSet:
    with password_field("new_password"):
        user_id = accounts.change_password(caller.login, data.current_password, data.new_password)
    own = request.cookies.get(SESSION_COOKIE) if caller.via == "session" else None
    return PasswordSet(user_id=user_id, sessions_ended=end_other_sessions(deps, user_id, own))


# ---------------------------------------------------------------- messages and traffic


@post(
    "/messages",
    sync_to_thread=True,
    opt=scoped(Scope.MESSAGES_SEND),
    status_code=HTTPStatus.ACCEPTED,
    guards=[allowed(Viewer.may_send_messages_for, "only a customer's users send messages")],
    request_max_body_size=MAX_JSON_BODY,
    summary="Send a message to recipients (and/or a group); delivered in the background",
    description=(
        "The same idempotency key (the Idempotency-Key header, or idempotency_key in the"
        " body; both given and different: 422) within 24 hours answers the first message's"
        " id and sends nothing again; with a different request it answers 422"
        " idempotency-key-reused. schedule_at (with a time zone, at most 7 days ahead)"
        " delays it."
    ),
    responses=_answers(
        S.CONFLICT,
        S.GONE,
        S.REQUEST_ENTITY_TOO_LARGE,
        S.UNPROCESSABLE_ENTITY,
    ),
    tags=["messages"],
)
def send_message(
    request: Request[Any, Any, Any],
    data: JSONBody[SendMessage],
    messages: NamedDependency[Messages],
    idempotency_header: Annotated[
        str | None,
        HeaderParameter(
            name="Idempotency-Key",
            description="as `idempotency_key` in the body (both given: they must agree)",
            required=False,
        ),
    ] = None,
) -> Accepted:
    # The caller from the request, as the `caller` dependency would give it: with a second
    # dependency beside `messages`, Litestar resolves the two in a task group of their own
    # (litestar-org/litestar#4563), some 70-80 us of CPU on this route, which carries every
    # send; with one it calls the one directly.
    caller = caller_dependency(request)
    customer_id = customer_of(caller, "only a customer's users send messages")
    idempotency_key = data.idempotency_key
    if idempotency_header is not None:
        if idempotency_key is not None and idempotency_key != idempotency_header:
            raise InvalidInput(
                "idempotency_key: differs from the Idempotency-Key header; give one, or the same",
                field="idempotency_key",
            )
        idempotency_key = idempotency_header
    request_ = SendRequest(
        channel=data.channel.value,
        to=data.to,
        group=data.group,
        body=data.body,
        template=data.template,
        template_id=data.template_id,
        variables=data.variables,
        subject=data.subject,
        priority=data.priority.value,
        schedule_at=data.schedule_at,
        idempotency_key=idempotency_key,
        ack_within_minutes=data.ack_within_minutes,
        escalation_groups=data.escalation_groups,
    )
    message_id = messages.send(
        customer_id, request_, requested_by=caller.user_id, client_ip=client_address(request)
    )
    return Accepted(id=message_id)


@get(
    "/messages/{message_id:uuid}",
    sync_to_thread=True,
    opt=scoped(Scope.MESSAGES_READ),
    summary="A message's status per recipient",
    description=(
        "reveal_content=true adds the body, for the customer's own users only: every"
        " Picasse role gets 403 (R7)."
    ),
    responses=_answers(S.NOT_FOUND, S.GONE),
    tags=["messages"],
)
def show_message(
    message_id: MessageId,
    caller: NamedDependency[Caller],
    messages: NamedDependency[Messages],
    reveal_content: Annotated[
        bool, QueryParameter(description="include the body (the customer's own users only)")
    ] = False,
) -> MessageOut:
    details = messages.message(message_id, caller.viewer(), reveal_content=reveal_content)
    body = (
        details.body
        if reveal_content and caller.viewer().may_read_content_of(details.customer_id)
        else None
    )  # belt and braces: the domain already refused staff (R7)
    return MessageOut(
        id=details.id,
        customer_id=details.customer_id,
        channel=details.channel,
        priority=details.priority,
        requested_at=details.requested_at,
        not_before=details.not_before,
        recipient_count=details.recipient_count,
        body=_text(body),
        deliveries=[
            RecipientStatus(
                id=d.id,
                index=d.index,
                to=_text(d.to),
                status=d.status,
                attempts=d.attempts,
                reason=d.reason,
                provider=d.provider,
                acknowledged=d.acknowledged,
                escalation_level=d.escalation_level,
            )
            for d in details.deliveries
        ],
    )


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@get(
    "/traffic",
    sync_to_thread=True,
    opt=scoped(Scope.MESSAGES_READ),
    summary="Traffic: who sent when to whom, with what outcome, newest first",
    description=(
        "A customer's users see their own customer's traffic; Picasse staff name the"
        " customer with customer_id. Auditors see no recipients or addresses. Times without"
        " a time zone are UTC; the period defaults to the last 24 hours. With recipient, only"
        " deliveries to that phone number or e-mail address (for those who see recipients)."
        ' At most 200 rows a page (fewer with limit); a `Link: <…?after=…>; rel="next"`'
        " header names the next, older page (none on the last)."
    ),
    responses=_answers(S.NOT_FOUND, S.UNPROCESSABLE_ENTITY),
    tags=["traffic"],
)
def show_traffic(
    request: Request[Any, Any, Any],
    caller: NamedDependency[Caller],
    traffic_view: NamedDependency[TrafficView],
    deps: NamedDependency[Any],
    start: Annotated[
        datetime | None, QueryParameter(name="from", description="from this moment (inclusive)")
    ] = None,
    end: Annotated[
        datetime | None, QueryParameter(name="to", description="until this moment (exclusive)")
    ] = None,
    customer_id: Annotated[
        UUID | None,
        QueryParameter(description="whose traffic (Picasse staff only; others: their own)"),
    ] = None,
    limit: Annotated[
        int, QueryParameter(ge=1, le=MAX_TRAFFIC_ROWS, description="at most this many rows")
    ] = 200,
    recipient: Annotated[
        str | None,
        QueryParameter(description="only deliveries to this number (+…) or e-mail address"),
    ] = None,
    after: AfterCursor = None,
) -> Response[list[TrafficEntry]]:
    whose = customer_id if customer_id is not None else caller.customer_id
    if whose is None:
        raise InvalidInput(
            "customer_id: staff name the customer whose traffic to show", field="customer_id"
        )
    until = _utc(end) if end is not None else deps.clock.now()
    try:
        since = _utc(start) if start is not None else until - DEFAULT_TRAFFIC_PERIOD
    except OverflowError:
        raise InvalidInput("to: too early a moment", field="to") from None
    if since > until:
        raise InvalidInput("from: must not lie after to", field="from")
    entitled = caller.viewer().sees_traffic_of(whose)
    wanted = None
    if recipient is not None:
        if not entitled:
            raise Forbidden("recipient: only those who see recipients may search by one")
        wanted = parse_recipient_query(recipient)  # found by its blind index, never as text
    position = decode_cursor(after, TrafficPosition, "after") if after else None
    size = min(limit, PAGE_SIZE)  # a page holds at most PAGE_SIZE rows; Link names the next
    rows = traffic_view.traffic(
        whose, since, until, limit=size + 1, recipient=wanted, before=position
    )
    last = rows[size - 1] if len(rows) > size else None
    entries = [
        TrafficEntry(
            delivery_id=row.delivery_id,
            message_id=row.message_id,
            customer_id=row.customer_id,
            requested_at=row.requested_at,
            requested_by=row.requested_by,
            client_ip=row.client_ip if entitled else None,
            channel=row.channel,
            recipient=row.recipient if entitled else None,
            status=row.status,
            attempts=row.attempts,
            reason=row.reason,
            updated_at=row.updated_at,
        )
        for row in rows[:size]
    ]
    cursor = None
    if last is not None and last.queued_at is not None:  # every row read here was queued
        cursor = encode_cursor((last.queued_at, last.delivery_id))
    return paged(request, entries, cursor)


TrafficPosition = Position  # (queued_at, delivery id) of a page's last row


# Request bodies that refuse unknown fields (the document says so too).
STRICT_BODIES = (
    Credentials,
    ContactChange,
    NewUser,
    UserChange,
    NewPassword,
    PasswordChange,
    SendMessage,
    ApiKeyRequest,
)


def api_router(*more: Any) -> Router:
    """Every /v1 route of the customer API (the webhooks and ack links live in webhooks.py),
    with `more` from the modules that build on this one's shapes (one router: routes of one
    path must share it)."""
    return Router(
        path="/v1",
        route_handlers=[
            *more,
            start_session,
            end_session,
            list_api_keys,
            create_api_key,
            revoke_api_key,
            list_customers,
            show_customer,
            change_customer,
            list_users,
            add_user,
            change_user,
            set_password_with_link,
            change_own_password,
            send_message,
            show_message,
            show_traffic,
        ],
    )
