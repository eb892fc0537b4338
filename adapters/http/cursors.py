"""Cursors of keyset pages, for every list route and page: opaque to the client, they
name where the previous page ended (base64url of its JSON), so rows arriving meanwhile
move no row from one page to another."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import NamedTuple, TypeVar
from uuid import UUID

import msgspec

from picasse.domain.errors import InvalidInput

T = TypeVar("T")


class Position(NamedTuple):
    """Where a page of rows ordered by time ended: its last row's time and id (a JSON
    array of two, as a plain tuple of them encodes)."""

    at: datetime
    id: UUID


def encode_cursor(position: object) -> str:
    """An opaque cursor: what the page ended on, base64url of its JSON."""
    return base64.urlsafe_b64encode(msgspec.json.encode(position)).decode().rstrip("=")


def decode_cursor(cursor: str, shape: type[T], field: str = "cursor") -> T:
    """The position a cursor of ours names; InvalidInput (422) for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return msgspec.json.decode(raw, type=shape)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise InvalidInput(f"{field}: not a cursor this list gave", field=field) from None
