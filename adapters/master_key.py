"""The master key file: created once (0600), read by every process, never logged."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MASTER_KEY_SIZE = 32


class MasterKeyError(Exception):
    """The master key file is missing, unreadable or not a key."""


def create_master_key(path: Path) -> bool:
    """Create the key file if it does not exist; True when this call created it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        # O_EXCL: two processes starting at once cannot both write a key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as file:
        file.write(base64.b64encode(AESGCM.generate_key(bit_length=256)) + b"\n")
        file.flush()
        os.fsync(file.fileno())
    return True


def read_master_key(path: Path) -> bytes:
    try:
        text = path.read_bytes().strip()
    except FileNotFoundError:
        raise MasterKeyError(f"master key file {path} does not exist") from None
    except OSError as error:
        raise MasterKeyError(f"master key file {path} cannot be read: {error.strerror}") from None
    try:
        key = base64.b64decode(text, validate=True)
    except ValueError:
        key = b""
    if len(key) != MASTER_KEY_SIZE:
        raise MasterKeyError(f"master key file {path} does not hold a 256-bit base64 key")
    if path.stat().st_mode & 0o077:
        raise MasterKeyError(f"master key file {path} is readable by others; chmod 600 it")
    return key
