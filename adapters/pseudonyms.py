"""Keyed pseudonyms: stable ids for logins and client keys that reveal nothing without the master key."""

from __future__ import annotations

import hashlib
import hmac
from uuid import UUID

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class KeyedPseudonyms:
    def __init__(self, master_key: bytes) -> None:
        self._key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"picasse pseudonyms"
        ).derive(master_key)

    def pseudonym(self, purpose: str, text: str) -> UUID:
        message = purpose.encode() + b"\0" + text.encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return UUID(bytes=digest[:16], version=4)
