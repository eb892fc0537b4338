"""Login sessions and failed-login counters in PostgreSQL, shared by every API process.

Both tables hold only what is live: a session until it ends or expires, a counter until
its window and any lock have passed. Neither is a history of who logged in when (R6);
that table exists only when an operator switches login tracking on.

Every decision by time takes `now` from the caller (the process's one clock), never the
database's now(): a test moves the clock, and expiry and throttling follow.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from psycopg import Connection, Rollback, sql
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool


class ThrottleCount:
    """What counting one login attempt against one key gave: its number, or a wait."""

    __slots__ = ("attempt", "retry_after")

    def __init__(self, attempt: int | None, retry_after: float | None) -> None:
        self.attempt = attempt  # the attempt's number within the window; None if blocked
        self.retry_after = retry_after  # seconds until attempts are taken again


class PostgresAuthStore:
    """Sessions keyed by the SHA-256 of their token; counters keyed by keyed pseudonyms."""

    def __init__(self, database_url: str, *, schema: str = "", pool_size: int = 8) -> None:
        self._pool = ConnectionPool(
            database_url,
            min_size=1,
            max_size=pool_size,
            connection_class=Connection[DictRow],  # its rows are dicts, for mypy too
            kwargs={"autocommit": True, "row_factory": dict_row},
            open=True,
            name="picasse-auth",
        )
        self._schema = schema

        def table(name: str) -> sql.Composable:
            return sql.Identifier(schema, name) if schema else sql.Identifier(name)

        self.t = {
            "sessions": table("http_sessions"),
            "throttle": table("login_throttle"),
            "logins": table("login_records"),
        }

    def close(self) -> None:
        self._pool.close()

    def _run(self, statement: str, params: Any = ()) -> list[dict[str, Any]]:
        with self._pool.connection() as conn:
            cursor = conn.execute(sql.SQL(statement).format(**self.t), params)
            return cursor.fetchall() if cursor.description else []

    def create_tables(self, *, login_records: bool = False) -> None:
        statements = [
            "CREATE TABLE IF NOT EXISTS {sessions} (token_hash bytea PRIMARY KEY,"
            " user_id uuid NOT NULL, expires_at timestamptz NOT NULL)",
            "CREATE INDEX IF NOT EXISTS http_sessions_user ON {sessions} (user_id)",
            "CREATE TABLE IF NOT EXISTS {throttle} (key uuid PRIMARY KEY, failures integer NOT NULL,"
            " window_ends timestamptz NOT NULL, blocked_until timestamptz)",
        ]
        if login_records:  # only when an operator switched login tracking on (R6)
            statements.append(
                "CREATE TABLE IF NOT EXISTS {logins} (user_id uuid NOT NULL,"
                " logged_in_at timestamptz NOT NULL, via text NOT NULL)"
            )
        with self._pool.connection() as conn, conn.transaction():
            # Two processes starting at once must not both try to create the tables.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('picasse auth tables'))")
            for statement in statements:
                conn.execute(sql.SQL(statement).format(**self.t))

    # Sessions

    def start_session(self, token_hash: bytes, user_id: UUID, expires_at: datetime) -> None:
        self._run(
            "INSERT INTO {sessions} (token_hash, user_id, expires_at) VALUES (%s, %s, %s)",
            (token_hash, user_id, expires_at),
        )

    def session_user(self, token_hash: bytes, now: datetime) -> UUID | None:
        rows = self._run(
            "SELECT user_id FROM {sessions} WHERE token_hash = %s AND expires_at > %s",
            (token_hash, now),
        )
        return rows[0]["user_id"] if rows else None

    def end_session(self, token_hash: bytes) -> None:
        self._run("DELETE FROM {sessions} WHERE token_hash = %s", (token_hash,))

    def end_sessions_of(self, user_id: UUID, *, keep: bytes | None = None) -> int:
        """End every session of the user (a new password: whoever held the old one is
        out), but `keep`'s, the session that made the change; how many ended."""
        rows = self._run(
            "DELETE FROM {sessions} WHERE user_id = %s AND token_hash IS DISTINCT FROM %s"
            " RETURNING 1",
            (user_id, keep),
        )
        return len(rows)

    def record_login(self, user_id: UUID, via: str, now: datetime) -> None:
        self._run(
            "INSERT INTO {logins} (user_id, logged_in_at, via) VALUES (%s, %s, %s)",
            (user_id, now, via),
        )

    # Failed logins

    def count_attempt(
        self, keys: list[tuple[UUID, timedelta]], now: datetime
    ) -> list[ThrottleCount]:
        """Count one attempt against each (key, window), all or none: while any key is
        blocked nothing is counted, and each blocked key says how long it still is."""
        results: list[ThrottleCount] = []
        with self._pool.connection() as conn, conn.transaction() as tx:
            for key, window in keys:
                statement = sql.SQL(
                    "INSERT INTO {throttle} AS t (key, failures, window_ends)"
                    " VALUES (%(key)s, 1, %(now)s + %(window)s)"
                    " ON CONFLICT (key) DO UPDATE SET"
                    " failures = CASE WHEN t.window_ends <= %(now)s THEN 1 ELSE t.failures + 1 END,"
                    " window_ends = CASE WHEN t.window_ends <= %(now)s THEN %(now)s + %(window)s"
                    " ELSE t.window_ends END"
                    " WHERE t.blocked_until IS NULL OR t.blocked_until <= %(now)s"
                    " RETURNING failures"
                ).format(**self.t)
                row = conn.execute(statement, {"key": key, "window": window, "now": now}).fetchone()
                if row is not None:
                    results.append(ThrottleCount(int(row["failures"]), None))
                    continue
                wait = conn.execute(
                    sql.SQL(
                        "SELECT extract(epoch FROM blocked_until - %s)::float AS wait"
                        " FROM {throttle} WHERE key = %s"
                    ).format(**self.t),
                    (now, key),
                ).fetchone()
                results.append(ThrottleCount(None, float(wait["wait"]) if wait else 1.0))
            if any(r.attempt is None for r in results):
                raise Rollback(tx)  # nothing counted
        return results

    def block(self, key: UUID, until: datetime) -> None:
        """No attempts against `key` until then (a lock, or a slow-down)."""
        self._run(
            "UPDATE {throttle} SET blocked_until = greatest(blocked_until, %s) WHERE key = %s",
            (until, key),
        )

    def forget(self, key: UUID) -> None:
        """A successful login: the account's failures are forgiven."""
        self._run("DELETE FROM {throttle} WHERE key = %s", (key,))

    def uncount(self, key: UUID, now: datetime) -> None:
        """A successful login from an address: its attempt was counted ahead, take it back
        (so an office behind one address is not locked out by its own colleagues)."""
        with self._pool.connection() as conn, conn.transaction():
            conn.execute(
                sql.SQL("UPDATE {throttle} SET failures = failures - 1 WHERE key = %s").format(
                    **self.t
                ),
                (key,),
            )
            # Nothing left against it: the row goes, so no trace of the address remains.
            conn.execute(
                sql.SQL(
                    "DELETE FROM {throttle} WHERE key = %s AND failures <= 0"
                    " AND (blocked_until IS NULL OR blocked_until <= %s)"
                ).format(**self.t),
                (key, now),
            )

    # Housekeeping

    def purge_expired(self, now: datetime) -> None:
        """Drop expired sessions and counters whose window and lock have passed."""
        self._run("DELETE FROM {sessions} WHERE expires_at <= %s", (now,))
        self._run(
            "DELETE FROM {throttle} WHERE window_ends <= %(now)s"
            " AND (blocked_until IS NULL OR blocked_until <= %(now)s)",
            {"now": now},
        )
