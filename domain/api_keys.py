"""API keys: per-user credentials for programs, shown once and kept only as a hash (R2, R11).

A key has a name and scopes: the parts of the API it may call (`Scope`, the one
vocabulary). Each route declares the scope it needs; a key without it is refused there.
Keys issued before scopes existed read as holding every scope, so scripts that use them
keep working. No time of use is recorded (R6: no usage tracking).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

import msgspec
from eventsourcing.domain import event
from eventsourcing.utils import get_topic

from picasse.domain.access import Viewer
from picasse.domain.aggregates import Aggregate
from picasse.domain.application import PicasseApplication
from picasse.domain.customers import Customer
from picasse.domain.errors import AuthenticationFailed, Forbidden, InvalidInput, NotFound
from picasse.domain.personal import Personal
from picasse.domain.users import PLATFORM_TENANT, User
from picasse.domain.values import single_line

KEY_PREFIX = "pk"
SECRET_BYTES = 32  # 256 bits: a plain SHA-256 of the secret is then as strong as a slow hash
MAX_NAME = 100


class Scope(StrEnum):
    """What an API key may call: the one vocabulary of scopes (routes name one each)."""

    MESSAGES_SEND = "messages:send"
    MESSAGES_READ = "messages:read"
    WEBHOOKS = "webhooks"
    TEMPLATES = "templates"
    GROUPS = "groups"
    USERS = "users"
    LOCATION = "location"
    SITES = "sites"
    CONFERENCES = "conferences"
    CASES = "cases"
    BILLING = "billing"

    @property
    def description(self) -> str:
        return SCOPE_DESCRIPTIONS[self]


SCOPE_DESCRIPTIONS: dict[Scope, str] = {
    Scope.MESSAGES_SEND: "send messages",
    Scope.MESSAGES_READ: "read messages, their deliveries and the traffic",
    Scope.WEBHOOKS: "manage the customer's webhook endpoints",
    Scope.TEMPLATES: "manage stored message templates",
    Scope.GROUPS: "manage recipient groups",
    Scope.USERS: "the account: the customer's record, its users, API keys, own password",
    Scope.LOCATION: "location pings and consent (attendance)",
    Scope.SITES: "manage the customer's sites and their geofences",
    Scope.CONFERENCES: "schedule and run conference calls; staff: dial-in number pools",
    Scope.CASES: "file and follow complaints and fault reports",
    Scope.BILLING: "invoices, price plans and payments",
}
ALL_SCOPES: frozenset[Scope] = frozenset(Scope)
_SCOPE_VALUES = frozenset(s.value for s in Scope)  # a scope no longer known is dropped


class MissingScope(Forbidden):
    """An API key called a route outside its scopes."""

    code = "missing-scope"


def parse_scopes(texts: Iterable[str], field: str = "scopes") -> frozenset[Scope]:
    """Scopes as a person or program names them; unknown ones and none at all are refused."""
    scopes = set()
    for text in texts:
        try:
            scopes.add(Scope(text))
        except ValueError:
            known = ", ".join(s.value for s in Scope)
            raise InvalidInput(
                f"{field}: unknown scope {text!r}; known: {known}", field=field
            ) from None
    if not scopes:
        raise InvalidInput(f"{field}: give at least one scope", field=field)
    return frozenset(scopes)


def key_name(text: str) -> str:
    name = " ".join(single_line(text, "name").split())
    if not name or len(name) > MAX_NAME:
        raise InvalidInput(f"name: 1 to {MAX_NAME} characters", field="name")
    return name


def hash_of_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiKey(Aggregate):
    """One key of one user. The hash is sealed under the user's key too, so erasing the
    user (or the whole customer) leaves no key that could still open the door. Its name
    (free text: it may name a person) is sealed the same way, in an event of its own so that
    keys issued before names existed still read."""

    class Issued(Aggregate.Created):
        """Version 1 had no scopes: such a key reads as holding every scope."""

        class_version = 2
        tenant_id: UUID
        user_id: UUID
        secret_hash: Annotated[str, Personal("user", of="user_id")]
        scopes: list[str]

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["scopes"] = sorted(s.value for s in ALL_SCOPES)

    @event(Issued)
    def __init__(
        self,
        tenant_id: UUID,
        user_id: UUID,
        secret_hash: Annotated[str, Personal("user", of="user_id")],
        scopes: list[str],
    ) -> None:
        self.tenant_id = tenant_id
        self.user_id = user_id
        self.secret_hash = secret_hash
        self.scopes = frozenset(Scope(s) for s in scopes if s in _SCOPE_VALUES)
        self.name: str | None = None  # keys issued before names existed have none
        self.revoked = False

    @property
    def customer_id(self) -> UUID | None:
        return None if self.tenant_id == PLATFORM_TENANT else self.tenant_id

    def name_it(self, name: str) -> None:
        self._named(self.tenant_id, self.user_id, name)

    class Named(Aggregate.Event):
        tenant_id: UUID
        user_id: UUID
        name: Annotated[str, Personal("user", of="user_id")]

    @event(Named)
    def _named(
        self, tenant_id: UUID, user_id: UUID, name: Annotated[str, Personal("user", of="user_id")]
    ) -> None:
        self.name = name

    def revoke(self) -> None:
        if not self.revoked:  # revoking twice is asking for what already holds
            self._revoked()

    class Revoked(Aggregate.Event):
        pass

    @event(Revoked)
    def _revoked(self) -> None:
        self.revoked = True


class IssuedKey(msgspec.Struct, frozen=True):
    """A new key: `key` is shown to its owner this once and kept nowhere."""

    id: UUID
    key: str
    name: str = ""
    scopes: list[str] = []

    def __repr__(self) -> str:  # the key stays out of every log line
        return f"IssuedKey(id={self.id})"

    __str__ = __repr__


class KeyHolder(msgspec.Struct, frozen=True):
    """Whose key was presented: the HTTP layer then checks that user is still enabled."""

    key_id: UUID
    user_id: UUID
    scopes: frozenset[Scope]


def parse_key(text: str) -> tuple[UUID, str]:
    """The key id and secret in `pk_<id>_<secret>`; AuthenticationFailed if not that shape."""
    prefix, _, rest = text.partition("_")
    ident, _, secret = rest.partition("_")
    if prefix != KEY_PREFIX or not secret or len(text) > 200:
        raise AuthenticationFailed("not an API key of ours")
    try:
        return UUID(hex=ident), secret
    except ValueError:
        raise AuthenticationFailed("not an API key of ours") from None


# What an authenticated caller is made of (the key, its user, the user's customer) and
# whether a customer may send (its subscription). The event store tells every process when
# it saves an event of any of them, so that what a process keeps of them (the API's callers
# and sending customers) is forgotten: a key revoked, a user disabled or erased, a customer
# terminated.
ACCOUNT_SOURCES = tuple(get_topic(aggregate) + "." for aggregate in (ApiKey, User, Customer))


class ApiKeys(PicasseApplication):
    """Issues, checks and revokes API keys; the HTTP layer's only way to them."""

    def issue(
        self,
        *,
        user_id: UUID,
        customer_id: UUID | None,
        name: str = "key",
        scopes: Iterable[str] | None = None,
        within: frozenset[Scope] | None = None,
    ) -> IssuedKey:
        """A new key for the user; `scopes` None: every scope. `within`: the scopes of the
        key that asks (None: a session), so no key makes a key broader than itself."""
        wanted = ALL_SCOPES if scopes is None else parse_scopes(scopes)
        name = key_name(name)
        if within is not None and not wanted <= within:
            beyond = ", ".join(sorted(wanted - within))
            raise MissingScope(f"scopes: a key cannot issue a key with scopes it lacks ({beyond})")
        secret = secrets.token_urlsafe(SECRET_BYTES)
        key = ApiKey(
            tenant_id=customer_id if customer_id is not None else PLATFORM_TENANT,
            user_id=user_id,
            secret_hash=hash_of_secret(secret),
            scopes=sorted(s.value for s in wanted),
        )
        key.name_it(name)
        self.save(key)
        return IssuedKey(
            id=key.id,
            key=f"{KEY_PREFIX}_{key.id.hex}_{secret}",
            name=name,
            scopes=sorted(s.value for s in wanted),
        )

    def authenticate(self, text: str) -> KeyHolder:
        key_id, secret = parse_key(text)
        try:
            key = self._get(key_id, ApiKey, "API key")
        except NotFound:
            raise AuthenticationFailed("not an API key of ours") from None
        stored = key.secret_hash
        # An erased user's hash reads as Erased, never as a string: no key of theirs works.
        if (
            key.revoked
            or not isinstance(stored, str)
            or not hmac.compare_digest(stored, hash_of_secret(secret))
        ):
            raise AuthenticationFailed("not an API key of ours, or revoked")
        return KeyHolder(key_id=key.id, user_id=key.user_id, scopes=key.scopes)

    def revoke(self, key_id: UUID, *, by: Viewer) -> None:
        """The key's owner, or a platform admin, revokes it; to anyone else it does not exist."""
        key = self._get(key_id, ApiKey, "API key")
        if not by.may_revoke_key_of(key.user_id, key.customer_id):
            raise NotFound(f"API key {key_id} not found")
        key.revoke()
        if key.pending_events:
            self.save(key)
