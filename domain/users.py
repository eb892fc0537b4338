"""User: an account of a customer (or of Picasse staff) with a login, a role and a password."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from picasse.domain.errors import Conflict, LoginTaken, UserDisabled
from picasse.domain.personal import Personal
from picasse.domain.values import Role

# Staff accounts belong to no customer; their personal data is sealed under this tenant.
PLATFORM_TENANT = UUID(int=0)


class User(Aggregate):
    """Password hashes are argon2id strings, and sealed as personal data on top of that."""

    @event("Added")
    def __init__(
        self,
        tenant_id: UUID,
        login: Annotated[str, Personal("user")],
        role: Role,
        password_hash: Annotated[str, Personal("user")],
    ) -> None:
        self.tenant_id = tenant_id
        self.login = login
        self.role = role
        self.password_hash = password_hash
        self.disabled = False

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

    def rehash_password(self, password_hash: str) -> None:
        """Same password, hashed with the current parameters."""
        self._password_rehashed(self.tenant_id, password_hash)

    @event("PasswordRehashed")
    def _password_rehashed(
        self, tenant_id: UUID, password_hash: Annotated[str, Personal("user")]
    ) -> None:
        self.password_hash = password_hash

    def disable(self) -> None:
        if self.disabled:
            raise Conflict(f"user {self.login} is already disabled")
        self._disabled()

    @event("Disabled")
    def _disabled(self) -> None:
        self.disabled = True

    def enable(self) -> None:
        if not self.disabled:
            raise Conflict(f"user {self.login} is not disabled")
        self._enabled()

    @event("Enabled")
    def _enabled(self) -> None:
        self.disabled = False


class Login(Aggregate):
    """Claims one login for one user, so that logins are unique.

    Its id is a keyed pseudonym of the login (see `Pseudonyms`), so the event
    table holds no login in plaintext, nor an unkeyed hash that could be guessed.
    """

    @event("Claimed")
    def __init__(self, id: UUID, user_id: UUID) -> None:
        self.user_id = user_id

    @staticmethod
    def taken(login: str) -> LoginTaken:
        return LoginTaken(f"login {login!r} is already taken", field="login")
