"""Keyed pseudonyms: stable ids for logins that reveal nothing without the master key."""

from __future__ import annotations

import hashlib
import hmac
from uuid import UUID

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class LoginPseudonyms:
    def __init__(self, master_key: bytes) -> None:
        self._key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"picasse login pseudonyms"
        ).derive(master_key)

    def login_id(self, login: str) -> UUID:
        digest = hmac.new(self._key, login.encode(), hashlib.sha256).digest()
        return UUID(bytes=digest[:16], version=4)
