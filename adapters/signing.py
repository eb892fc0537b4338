"""The platform's Ed25519 signing key: signs written statements of erasure, verifies them."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class SigningKeyError(Exception):
    """The signing key file is missing or unreadable."""


class PlatformSigner:
    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key: Ed25519PublicKey = private_key.public_key()

    def __repr__(self) -> str:
        return f"PlatformSigner(key_id={self.key_id!r})"

    @classmethod
    def from_file(cls, path: Path, *, create: bool = False) -> PlatformSigner:
        if create and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process made it first: read theirs
            else:
                with os.fdopen(fd, "wb") as file:
                    file.write(pem)
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except FileNotFoundError:
            raise SigningKeyError(f"signing key file {path} does not exist") from None
        except ValueError:
            raise SigningKeyError(f"signing key file {path} holds no usable key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningKeyError(f"signing key file {path} is not an Ed25519 key")
        return cls(key)

    @property
    def public_key_pem(self) -> str:
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    @property
    def key_id(self) -> str:
        """A short fingerprint naming the key in what it signs."""
        raw = self.public_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]

    def sign(self, document: bytes) -> str:
        return base64.b64encode(self._key.sign(document)).decode()

    def verifies(self, document: bytes, signature: str) -> bool:
        try:
            self.public_key.verify(base64.b64decode(signature, validate=True), document)
        except (InvalidSignature, ValueError):
            return False
        return True
