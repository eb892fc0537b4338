"""API keys: per-user credentials for programs, shown once and kept only as a hash (R2, R11)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Annotated
from uuid import UUID

import msgspec
from eventsourcing.domain import Aggregate, event

from picasse.domain.access import Viewer
from picasse.domain.application import PicasseApplication
from picasse.domain.errors import AuthenticationFailed, NotFound
from picasse.domain.personal import Personal
from picasse.domain.users import PLATFORM_TENANT

KEY_PREFIX = "pk"
SECRET_BYTES = 32  # 256 bits: a plain SHA-256 of the secret is then as strong as a slow hash


def hash_of_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiKey(Aggregate):
    """One key of one user. The hash is sealed under the user's key too, so erasing the
    user (or the whole customer) leaves no key that could still open the door."""

    @event("Issued")
    def __init__(
        self,
        tenant_id: UUID,
        user_id: UUID,
        secret_hash: Annotated[str, Personal("user", of="user_id")],
    ) -> None:
        self.tenant_id = tenant_id
        self.user_id = user_id
        self.secret_hash = secret_hash
        self.revoked = False

    def revoke(self) -> None:
        if not self.revoked:  # revoking twice is asking for what already holds
            self._revoked()

    @event("Revoked")
    def _revoked(self) -> None:
        self.revoked = True


class IssuedKey(msgspec.Struct, frozen=True):
    """A new key: `key` is shown to its owner this once and kept nowhere."""

    id: UUID
    key: str

    def __repr__(self) -> str:  # the key stays out of every log line
        return f"IssuedKey(id={self.id})"

    __str__ = __repr__


class KeyHolder(msgspec.Struct, frozen=True):
    """Whose key was presented: the HTTP layer then checks that user is still enabled."""

    key_id: UUID
    user_id: UUID


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


class ApiKeys(PicasseApplication):
    """Issues, checks and revokes API keys; the HTTP layer's only way to them."""

    def issue(self, *, user_id: UUID, customer_id: UUID | None) -> IssuedKey:
        secret = secrets.token_urlsafe(SECRET_BYTES)
        key = ApiKey(
            tenant_id=customer_id if customer_id is not None else PLATFORM_TENANT,
            user_id=user_id,
            secret_hash=hash_of_secret(secret),
        )
        self.save(key)
        return IssuedKey(id=key.id, key=f"{KEY_PREFIX}_{key.id.hex}_{secret}")

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
        return KeyHolder(key_id=key.id, user_id=key.user_id)

    def revoke(self, key_id: UUID, *, by: Viewer) -> None:
        """The key's owner, or a platform admin, revokes it; to anyone else it does not exist."""
        key = self._get(key_id, ApiKey, "API key")
        if not by.may_revoke_key_of(key.user_id):
            raise NotFound(f"API key {key_id} not found")
        key.revoke()
        if key.pending_events:
            self.save(key)
