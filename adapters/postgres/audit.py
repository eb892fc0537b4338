"""Hash-chain verification of the stored events, recomputed from the raw rows."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.postgres import PostgresDatastore
from psycopg import sql

from picasse.adapters.postgres.store import GENESIS


class BrokenLink(msgspec.Struct, frozen=True):
    notification_id: int
    originator_id: UUID
    originator_version: int
    reason: str


class ChainReport(msgspec.Struct, frozen=True):
    events: int
    aggregates: int
    broken: BrokenLink | None

    @property
    def ok(self) -> bool:
        return self.broken is None


def chain_hash(
    previous: bytes, originator_id: UUID, version: int, topic: str, state: bytes
) -> bytes:
    """The same computation as the insert trigger, done independently here."""
    topic_bytes = topic.encode()
    return hashlib.sha256(
        previous
        + originator_id.bytes
        + version.to_bytes(8, "big", signed=True)
        + len(topic_bytes).to_bytes(4, "big", signed=True)
        + topic_bytes
        + state
    ).digest()


def _problem(row: dict[str, Any], computed: bytes, expected_version: int) -> str | None:
    if row["originator_version"] != expected_version:
        return f"expected version {expected_version}: an event is missing"
    if row["chain_hash"] is None:
        return "event carries no chain hash"
    if computed != bytes(row["chain_hash"]):
        return "hash does not match the stored bytes: changed after it was written"
    return None


def verify_chains(
    datastore: PostgresDatastore,
    events_table: str,
    *,
    progress: Callable[[int], None] | None = None,
    batch: int = 5000,
) -> ChainReport:
    """Walk every aggregate's sequence in order; stop at the first broken link."""
    query = sql.SQL(
        "SELECT notification_id, originator_id, originator_version, topic, state, chain_hash"
        " FROM {}.{} ORDER BY originator_id, originator_version"
    ).format(sql.Identifier(datastore.schema), sql.Identifier(events_table))
    events = aggregates = 0
    current: UUID | None = None
    previous = GENESIS
    expected_version = 1
    with datastore.get_connection() as conn, conn.transaction(), conn.cursor(name="audit") as curs:
        curs.itersize = batch
        curs.execute(query)
        for row in curs:
            originator_id = row["originator_id"]
            version = row["originator_version"]
            if originator_id != current:
                current, previous, expected_version = originator_id, GENESIS, 1
                aggregates += 1

            computed = chain_hash(
                previous, originator_id, version, row["topic"], bytes(row["state"])
            )
            reason = _problem(row, computed, expected_version)
            if reason is not None:
                link = BrokenLink(row["notification_id"], originator_id, version, reason)
                return ChainReport(events, aggregates, link)
            previous = computed
            expected_version += 1
            events += 1
            if progress is not None and events % batch == 0:
                progress(events)
    return ChainReport(events, aggregates, None)
