"""The events' hash chain: the one computation of `chain_hash`, for the recorder that
writes it and the audit that checks it.

An event's hash is sha256 over its predecessor's hash (GENESIS for an aggregate's first
event) and exactly what is stored of it: originator id (16 bytes), version (8 bytes,
big-endian, signed), the topic's length in UTF-8 bytes (4 bytes, big-endian, signed), the
topic in UTF-8 and the stored state, ciphertext included. So erasure (destroying keys)
changes no hash, and any edit, insertion or deletion of a stored event breaks the chain.
The bytes are those PostgreSQL's `uuid_send`, `int8send` and `int4send` give: the insert
trigger that computed the hashes before (until December 2026) wrote the same values.
"""

from __future__ import annotations

import struct
from hashlib import sha256
from uuid import UUID

GENESIS = bytes(32)  # the "predecessor" hash of every aggregate's first event

_VERSION_AND_TOPIC_LENGTH = struct.Struct(">qi").pack


def chain_hash(
    previous: bytes, originator_id: UUID, version: int, topic: str, state: bytes
) -> bytes:
    """The hash of one stored event, chained onto its predecessor's hash."""
    topic_bytes = topic.encode()
    hashed = sha256(previous)
    hashed.update(originator_id.bytes)
    hashed.update(_VERSION_AND_TOPIC_LENGTH(version, len(topic_bytes)))
    hashed.update(topic_bytes)
    hashed.update(state)
    return hashed.digest()
