"""User: an account of a customer (or of Picasse staff) with a login, a role and a password."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from eventsourcing.domain import event

from picasse.domain.aggregates import Aggregate
from picasse.domain.errors import Conflict, LoginTaken, UserDisabled
from picasse.domain.personal import Erased, Personal
from picasse.domain.values import Role

# Staff accounts belong to no customer; their personal data is sealed under this tenant.
PLATFORM_TENANT = UUID(int=0)


class User(Aggregate):
    """Password hashes are argon2id strings, and sealed as personal data on top of that.

    A customer's user is added without a password (`password_hash` None) and with an
    e-mail address: they set the password themselves through a one-time link sent there,
    so nobody at Picasse ever knows it (R7). `by` names who made a change (a role, or
    `operator` for the CLI), so that staff changes show in the customer's privacy ledger.

    The event classes other rooms dispatch on are declared, so that type checkers see them.
    """

    class Added(Aggregate.Created):
        tenant_id: UUID
        login: Annotated[str, Personal("user")]
        role: Role
        password_hash: Annotated[str | None, Personal("user")]
        email: Annotated[str | None, Personal("user")]
        by: str

    @event(Added)
    def __init__(
        self,
        tenant_id: UUID,
        login: Annotated[str, Personal("user")],
        role: Role,
        password_hash: Annotated[str | None, Personal("user")],
        email: Annotated[str | None, Personal("user")] = None,
        by: str = "",
    ) -> None:
        self.tenant_id = tenant_id
        self.login = login
        self.role = role
        self.password_hash = password_hash
        self.email = email
        self.disabled = False
        self.password_link: UUID | None = None  # the one link that may still set a password

    @property
    def customer_id(self) -> UUID | None:
        return None if self.tenant_id == PLATFORM_TENANT else self.tenant_id

    def change_password(self, password_hash: str) -> None:
        if self.disabled:
            raise UserDisabled(f"user {self.login} is disabled")
        self._password_changed(self.tenant_id, password_hash)

    @event("PasswordChanged")
    def _password_changed(
        self, tenant_id: UUID, password_hash: Annotated[str, Personal("user")]
    ) -> None:
        self.password_hash = password_hash
        self.password_link = None  # a new password voids any link still out

    def issue_password_link(self, link_id: UUID, expires_at: datetime, by: str) -> None:
        """A new link replaces any earlier one: only the newest sets a password."""
        if self.disabled:
            raise UserDisabled(f"user {self.login} is disabled")
        self._password_link_issued(self.tenant_id, link_id, expires_at, by)

    class PasswordLinkIssued(Aggregate.Event):
        tenant_id: UUID
        link_id: UUID
        expires_at: datetime
        by: str

    @event(PasswordLinkIssued)
    def _password_link_issued(
        self, tenant_id: UUID, link_id: UUID, expires_at: datetime, by: str
    ) -> None:
        self.password_link = link_id

    def rehash_password(self, password_hash: str) -> None:
        """Same password, hashed with the current parameters."""
        self._password_rehashed(self.tenant_id, password_hash)

    @event("PasswordRehashed")
    def _password_rehashed(
        self, tenant_id: UUID, password_hash: Annotated[str, Personal("user")]
    ) -> None:
        self.password_hash = password_hash

    def disable(self, by: str = "") -> None:
        if self.disabled:
            raise Conflict(f"user {self.login} is already disabled")
        self._disabled(self.tenant_id, by)

    class Disabled(Aggregate.Event):
        tenant_id: UUID | None
        by: str

    @event(Disabled)
    def _disabled(self, tenant_id: UUID | None = None, by: str = "") -> None:
        self.disabled = True
        self.password_link = None

    def enable(self, by: str = "") -> None:
        if not self.disabled:
            raise Conflict(f"user {self.login} is not disabled")
        self._enabled(self.tenant_id, by)

    class Enabled(Aggregate.Event):
        """Version 1 told neither the customer nor who enabled the user."""

        class_version = 2
        tenant_id: UUID | None
        by: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["tenant_id"] = None
            state["by"] = ""

    @event(Enabled)
    def _enabled(self, tenant_id: UUID | None, by: str) -> None:
        self.disabled = False

    def change_role(self, role: Role, by: str = "") -> None:
        """A customer's user becomes its admin or an ordinary user; staff roles stay staff's."""
        if role.is_platform != self.role.is_platform:
            raise Conflict(
                f"user {self.login}: staff and customer roles do not change into each other"
            )
        if role is not self.role:
            self._role_changed(self.tenant_id, role, by)

    class RoleChanged(Aggregate.Event):
        tenant_id: UUID
        role: Role
        by: str

    @event(RoleChanged)
    def _role_changed(self, tenant_id: UUID, role: Role, by: str) -> None:
        self.role = role

    @property
    def erased(self) -> bool:
        """Whether the user's personal data is erased (their key destroyed): with no login
        left, nobody can log in as them any more."""
        return isinstance(self.login, Erased)

    @property
    def active_admin(self) -> bool:
        """Whether the user is one of its customer's admins who may act now."""
        return self.role is Role.CUSTOMER_ADMIN and not self.disabled and not self.erased


class Login(Aggregate):
    """Claims one login for one user, so that logins are unique.

    Its id is a keyed pseudonym of the login (see `Pseudonyms`), so the event
    table holds no login in plaintext, nor an unkeyed hash that could be guessed.
    A claim whose user has been erased holds nobody's login: it is claimed again
    (`reclaim`) by the next user who asks for that login.
    """

    @event("Claimed")
    def __init__(self, id: UUID, user_id: UUID) -> None:
        self.user_id = user_id

    @event("Reclaimed")
    def reclaim(self, user_id: UUID) -> None:
        self.user_id = user_id

    @staticmethod
    def taken(login: str) -> LoginTaken:
        return LoginTaken(f"login {login!r} is already taken", field="login")


class PasswordLink(Aggregate):
    """A one-time set-password link: its id is derived from the SHA-256 of the link's
    token (`link_id`), so the log holds only a hash of it, never the token itself."""

    @event("Issued")
    def __init__(self, id: UUID, user_id: UUID, tenant_id: UUID, expires_at: datetime) -> None:
        self.user_id = user_id
        self.tenant_id = tenant_id
        self.expires_at = expires_at


def link_id(token: str) -> UUID:
    """The id of the link a token belongs to: the first 128 bits of its SHA-256."""
    return UUID(bytes=hashlib.sha256(token.encode()).digest()[:16])
