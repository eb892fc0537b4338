"""Key files beside each other in one directory, 0600, read by every process, never logged.

- The master key file (`master.key`): created once. It derives pseudonyms and
  acknowledgement-link keys; it wraps no tenant key (only tenant keys written before key
  epochs existed, which the first epoch re-wraps on start), so it can reopen nothing
  that a destroyed epoch wrapped.
- Key-encryption-key epochs (`epoch-<uuid>.key`): independent random keys, each wrapping
  the tenant keys of its time. They live outside PostgreSQL so no database backup holds
  them; after a key is destroyed a new epoch replaces the current one and the old file is
  destroyed, so an old backup's wrapped keys no longer open (docs/privacy.md).
"""

from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path
from uuid import UUID

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from picasse.adapters.archive import TargetExists, move_into_place, write_atomically

MASTER_KEY_SIZE = 32
EPOCH_KEY_SIZE = 32


class MasterKeyError(Exception):
    """The master key file is missing, unreadable or not a key."""


class EpochKeyMissing(MasterKeyError):
    """An epoch the database still uses has no key file: restore it from the key backup."""


def create_master_key(path: Path) -> bool:
    """Create the key file if it does not exist; True when this call created it.

    Processes starting at once (compose's services on a fresh volume) may all get here:
    each writes a whole key to a file of its own (0600) and links it into place; the first
    link wins, and a process that loses reads the winner's complete file, never a
    half-written one."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists():
        return False
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    partial = Path(name)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(base64.b64encode(AESGCM.generate_key(bit_length=256)) + b"\n")
            file.flush()
            os.fsync(file.fileno())
        move_into_place(partial, path, replace=False)
    except TargetExists:
        return False
    finally:
        partial.unlink(missing_ok=True)
    return True


def read_master_key(path: Path) -> bytes:
    return _read_key(path, "master key file", MASTER_KEY_SIZE)


def _read_key(path: Path, what: str, size: int) -> bytes:
    try:
        text = path.read_bytes().strip()
    except FileNotFoundError:
        raise MasterKeyError(f"{what} {path} does not exist") from None
    except OSError as error:
        raise MasterKeyError(f"{what} {path} cannot be read: {error.strerror}") from None
    try:
        key = base64.b64decode(text, validate=True)
    except ValueError:
        key = b""
    if len(key) != size:
        raise MasterKeyError(f"{what} {path} does not hold a 256-bit base64 key")
    if path.stat().st_mode & 0o077:
        raise MasterKeyError(f"{what} {path} is readable by others; chmod 600 it")
    return key


# Key-encryption-key epochs


def epoch_key_path(key_dir: Path, epoch_id: UUID) -> Path:
    return key_dir / f"epoch-{epoch_id}.key"


def create_epoch_key(key_dir: Path, epoch_id: UUID) -> bytes:
    """Write a new epoch's key file whole or not at all (0600, fsynced, then moved into
    place and the directory fsynced), and return the key."""
    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = AESGCM.generate_key(bit_length=256)
    write_atomically(
        epoch_key_path(key_dir, epoch_id),
        lambda file: file.write(base64.b64encode(key) + b"\n"),
        replace=False,
    )
    _sync_dir(key_dir)
    return key


def read_epoch_key(key_dir: Path, epoch_id: UUID) -> bytes:
    path = epoch_key_path(key_dir, epoch_id)
    if not path.exists():
        raise EpochKeyMissing(
            f"key epoch {epoch_id} wraps live tenant keys, but its key file {path} is missing:"
            " restore it from the key backup (docs/operations.md)"
        )
    return _read_key(path, "epoch key file", EPOCH_KEY_SIZE)


def destroy_epoch_key(key_dir: Path, epoch_id: UUID) -> None:
    """Move the file out of its name (a reader then finds it gone, never half-overwritten),
    overwrite its bytes, unlink it and fsync the directory. The overwrite is best effort:
    on copy-on-write or journalling file systems and on SSDs the old blocks may survive;
    the unlink is what is guaranteed (docs/operations.md)."""
    path = epoch_key_path(key_dir, epoch_id)
    doomed = path.with_name(f".{path.name}.destroying")
    try:
        os.rename(path, doomed)
    except FileNotFoundError:
        if not doomed.exists():  # a destruction cut short goes on below
            return
    fd = os.open(doomed, os.O_WRONLY | os.O_NOFOLLOW)
    try:
        size = os.fstat(fd).st_size
        os.write(fd, bytes(size))
        os.fsync(fd)
    finally:
        os.close(fd)
    doomed.unlink(missing_ok=True)
    _sync_dir(key_dir)


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
