"""Acknowledgement links for alerts: a URL per delivery that only we can mint and check."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from uuid import UUID

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ACK_PATH = "/v1/ack"
MAC_SIZE = 16  # 128 bits: guessing a valid link for a known delivery id stays out of reach
TOKEN_LENGTH = 43  # unpadded base64 of 16 id bytes + MAC_SIZE bytes
_HKDF_INFO = b"picasse ack links"


class InvalidAckToken(Exception):
    """The token was not minted by us for any delivery (changed, truncated or made up)."""


class AckLinks:
    """Mints `{public_url}/v1/ack/{token}` for a delivery and turns a token back into its id.

    The token is the delivery id followed by a truncated HMAC-SHA256 of it, so checking a
    link needs no lookup and no stored state; links never expire, which suits an alert
    acknowledged once and idempotently.
    """

    __slots__ = ("_secret", "public_url")

    def __init__(self, secret: bytes, public_url: str) -> None:
        if len(secret) < 32:
            raise ValueError("the ack link secret must be at least 32 bytes")
        self._secret = secret
        self.public_url = public_url.rstrip("/")

    def __repr__(self) -> str:  # the secret stays out of every log line
        return f"AckLinks(public_url={self.public_url!r})"

    def link(self, delivery_id: UUID) -> str:
        return f"{self.public_url}{ACK_PATH}/{self.token(delivery_id)}"

    def token(self, delivery_id: UUID) -> str:
        raw = delivery_id.bytes + self._mac(delivery_id.bytes)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def verify(self, token: str) -> UUID:
        """The delivery id inside `token`; InvalidAckToken unless we minted exactly this text."""
        if len(token) != TOKEN_LENGTH or not token.isascii():
            raise InvalidAckToken("not an acknowledgement link of ours")
        try:
            raw = base64.b64decode(token + "=", altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raise InvalidAckToken("not an acknowledgement link of ours") from None
        ident, mac = raw[:16], raw[16:]
        if not hmac.compare_digest(mac, self._mac(ident)):
            raise InvalidAckToken("not an acknowledgement link of ours")
        delivery_id = UUID(bytes=ident)
        # Base64's last character carries two unused bits: insist on the one spelling we mint,
        # so that no changed character of a link is ever accepted.
        if self.token(delivery_id) != token:
            raise InvalidAckToken("not an acknowledgement link of ours")
        return delivery_id

    def _mac(self, ident: bytes) -> bytes:
        return hmac.new(self._secret, ident, hashlib.sha256).digest()[:MAC_SIZE]


def ack_links_from(master_key: bytes, public_url: str) -> AckLinks:
    """AckLinks keyed by a secret derived from the master key, never by the key itself."""
    secret = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(
        master_key
    )
    return AckLinks(secret, public_url)
