"""Roles that exactly one process may play at a time (advance a view, relay, retention,
reconcile), claimed with PostgreSQL advisory locks.

A claim is a session-level advisory lock on a connection of its own, so it ends when its
holder ends, even by SIGKILL or a lost connection: no stale claim outlives a process.
Locks are keyed by schema and role, so platforms sharing one database do not collide.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import psycopg
from eventsourcing.postgres import PostgresTrackingRecorder
from psycopg import sql

log = logging.getLogger(__name__)


def role_key(schema: str, role: str) -> str:
    """The text whose hash is the lock's key ("" and "public" name the same schema)."""
    return f"picasse:{schema or 'public'}:{role}"


class RoleClaims:
    """The roles this process plays, all held on one connection.

    `claim` never blocks: it answers whether this process now plays the role. If the
    connection is lost, every claim is lost with it: `holds` answers False from then on,
    and the holder must stop playing the role (another process may have claimed it).
    """

    def __init__(self, conninfo: dict[str, Any], schema: str) -> None:
        self.conninfo = {k: v for k, v in conninfo.items() if k != "row_factory"}
        self.schema = schema
        self._conn: psycopg.Connection[Any] | None = None
        self._held: set[str] = set()
        self._lock = threading.Lock()

    def claim(self, role: str) -> bool:
        """Take the role if nobody plays it; True if this process plays it now."""
        with self._lock:
            if role in self._held and self._alive():
                return True
            if not self._alive():
                self._reconnect()
            assert self._conn is not None
            row = self._conn.execute(
                "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))",
                (role_key(self.schema, role),),
            ).fetchone()
            if row and row[0]:
                self._held.add(role)
                return True
            return False

    def holds(self, role: str) -> bool:
        """Whether this process still plays the role (its claim's connection is alive)."""
        with self._lock:
            return role in self._held and self._alive()

    def release(self, role: str) -> None:
        with self._lock:
            if role not in self._held:
                return
            self._held.discard(role)
            if self._alive():
                assert self._conn is not None
                self._conn.execute(
                    "SELECT pg_advisory_unlock(hashtextextended(%s, 0))",
                    (role_key(self.schema, role),),
                )

    def close(self) -> None:
        with self._lock:
            self._held.clear()
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _alive(self) -> bool:
        if self._conn is None or self._conn.closed:
            return False
        try:
            self._conn.execute("SELECT 1")
        except psycopg.Error:
            self._conn.close()
            return False
        return True

    def _reconnect(self) -> None:
        if self._held:
            log.warning("lost the claims on %s with the database connection", sorted(self._held))
        self._held.clear()
        if self._conn is not None:
            self._conn.close()
        self._conn = psycopg.connect(**self.conninfo, autocommit=True)


def role_is_played(conninfo: dict[str, Any], schema: str, role: str) -> bool:
    """Whether some process holds the role now (a snapshot: it may change at once)."""
    params = {k: v for k, v in conninfo.items() if k != "row_factory"}
    with psycopg.connect(**params, autocommit=True) as conn:
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND ((classid::bigint << 32) | objid::bigint) = hashtextextended(%s, 0))",
            (role_key(schema, role),),
        ).fetchone()
    return bool(row and row[0])


# Processes that start together (a CLI command beside `picasse up`, two workers) each
# create the tables they need; PostgreSQL's DDL on one table from two transactions can
# deadlock, so every table-creating transaction first takes this one lock.
_SCHEMA_CHANGES = 7401


def serialize_schema_changes(curs: Any) -> None:
    """Inside a transaction that creates or alters tables: wait for any other one first."""
    curs.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_CHANGES,))


class TrackingTable(PostgresTrackingRecorder):
    """A tracking table that processes starting together create once.

    The library reads whether the table and its `__migration__` record exist before its
    creating transaction; two processes starting on a fresh database then both believe
    they made the table, and the second fails to write the migration record ("Failed to
    record tracking for __migration__ 1"). Here the creating transaction takes the schema
    lock first and reads both again under it."""

    def _create_table(self, curs: Any) -> None:
        serialize_schema_changes(curs)
        table = sql.Identifier(self.datastore.schema or "public", self.tracking_table_name)
        curs.execute("SELECT to_regclass(%s) AS t", (table.as_string(curs),))
        found = curs.fetchone()
        if found is not None and found["t"] is not None:  # made by now, perhaps by another
            self.tracking_table_exists = True
            migrated = self._max_tracking_id(self.table_migration_identifier, curs)
            self.tracking_migration_previous = self.tracking_migration_current = migrated
        super()._create_table(curs)
