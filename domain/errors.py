"""The one base of every domain error: a message meant for a person and a stable code."""

from __future__ import annotations

from typing import ClassVar


class DomainError(Exception):
    """Something the caller asked for cannot be done; `str(error)` says why, to a person."""

    code: ClassVar[str] = "domain-error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(DomainError):
    """A value given by a person is not acceptable; nothing was recorded."""

    code = "invalid-input"


class NotFound(DomainError):
    """The thing asked for does not exist (or is not visible to the caller)."""

    code = "not-found"


class Conflict(DomainError):
    """The request contradicts what has already happened."""

    code = "conflict"


class AlreadyTerminated(Conflict):
    code = "already-terminated"


class NotCancellable(Conflict):
    """A message can be cancelled only while it is scheduled and none of it has started."""

    code = "message-not-cancellable"


class NameTaken(Conflict):
    """A customer's template or group of that name (and channel) exists already."""

    code = "name-taken"


class LoginTaken(Conflict):
    code = "login-taken"


class UserDisabled(Conflict):
    code = "user-disabled"


class Forbidden(DomainError):
    code = "forbidden"


class AuthenticationFailed(DomainError):
    """Login or password is wrong; deliberately does not say which."""

    code = "authentication-failed"
