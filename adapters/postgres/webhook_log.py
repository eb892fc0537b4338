"""The webhook senders' record: each event owed to an endpoint, each attempt, each endpoint's
failing streak. Ids, event types, statuses, status codes and times only (the payloads are
ids, statuses and times too): nothing here is personal data or content.

Not an event-sourced view: these rows are the senders' working state and a short history
for the customer's admins (`GET /v1/webhooks/{id}/attempts`), pruned after PRUNE_AFTER.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec
import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from picasse.adapters.postgres.roles import serialize_schema_changes
from picasse.domain.webhooks import failing_too_long, next_attempt_at

PRUNE_AFTER = timedelta(days=7)
MAX_LISTED_ATTEMPTS = 100

Transaction = Callable[[], AbstractContextManager[Any]]  # a context yielding a dict-row cursor


class PostRow(msgspec.Struct, frozen=True):
    """One event owed to one endpoint."""

    endpoint_id: UUID
    event_id: str
    tenant_id: UUID
    event_type: str
    payload: bytes
    attempts: int
    state: str  # pending, delivered, given-up, cancelled
    first_failure_at: datetime | None
    next_attempt_at: datetime | None


class AttemptRow(msgspec.Struct, frozen=True):
    """One post, as the customer's admins see it."""

    event_id: str
    event_type: str
    attempt: int
    attempted_at: datetime
    status_code: int | None  # None when nothing answered (refused, unreachable, timed out)
    outcome: str


class Recorded(msgspec.Struct, frozen=True):
    """What recording an attempt settled: the event's next try, and whether the endpoint
    has now failed long enough to be disabled."""

    next_attempt_at: datetime | None
    failing_since: datetime | None
    failing_too_long: bool


def transaction_on(conninfo: dict[str, Any]) -> Transaction:
    """Transactions on a connection of their own each (for a process without a pool)."""
    conninfo = {k: v for k, v in conninfo.items() if k != "row_factory"}

    @contextmanager
    def transaction() -> Iterator[Any]:
        with (
            psycopg.connect(**conninfo, autocommit=True, row_factory=dict_row) as conn,
            conn.transaction(),
        ):
            yield conn.cursor()

    return transaction


class WebhookLog:
    def __init__(self, transaction: Transaction, schema: str) -> None:
        self.transaction = transaction
        schema = schema or "public"
        self.t = {
            name: sql.Identifier(schema, f"picasse_webhook_{name}")
            for name in ("posts", "attempts", "endpoints")
        }

    def _sql(self, text: str) -> sql.Composed:
        return sql.SQL(text).format(**self.t)

    def create_tables(self) -> None:
        with self.transaction() as curs:
            serialize_schema_changes(curs)
            for statement in (
                "CREATE TABLE IF NOT EXISTS {posts} (endpoint_id uuid NOT NULL,"
                " event_id text NOT NULL, tenant_id uuid NOT NULL, event_type text NOT NULL,"
                " payload bytea NOT NULL, created_at timestamptz NOT NULL,"
                " attempts integer NOT NULL DEFAULT 0, state text NOT NULL DEFAULT 'pending',"
                " first_failure_at timestamptz, next_attempt_at timestamptz,"
                " PRIMARY KEY (endpoint_id, event_id))",
                "CREATE INDEX IF NOT EXISTS picasse_webhook_posts_due ON {posts}"
                " (next_attempt_at) WHERE state = 'pending'",
                "CREATE TABLE IF NOT EXISTS {attempts} (endpoint_id uuid NOT NULL,"
                " event_id text NOT NULL, attempt integer NOT NULL, event_type text NOT NULL,"
                " attempted_at timestamptz NOT NULL, status_code integer, outcome text NOT NULL,"
                " PRIMARY KEY (endpoint_id, event_id, attempt))",
                "CREATE INDEX IF NOT EXISTS picasse_webhook_attempts_recent ON {attempts}"
                " (endpoint_id, attempted_at DESC)",
                "CREATE TABLE IF NOT EXISTS {endpoints} (endpoint_id uuid PRIMARY KEY,"
                " failing_since timestamptz)",
            ):
                curs.execute(self._sql(statement))

    # ------------------------------------------------------------ the sender

    def owe(
        self,
        endpoint_id: UUID,
        event_id: str,
        *,
        tenant_id: UUID,
        event_type: str,
        payload: bytes,
        now: datetime,
    ) -> PostRow:
        """The event owed to the endpoint, recorded now unless it already was."""
        with self.transaction() as curs:
            curs.execute(
                self._sql(
                    "INSERT INTO {posts} (endpoint_id, event_id, tenant_id, event_type, payload,"
                    " created_at) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
                ),
                (endpoint_id, event_id, tenant_id, event_type, payload, now),
            )
        post = self.post(endpoint_id, event_id)
        assert post is not None
        return post

    def post(self, endpoint_id: UUID, event_id: str) -> PostRow | None:
        with self.transaction() as curs:
            curs.execute(
                self._sql(
                    "SELECT endpoint_id, event_id, tenant_id, event_type, payload, attempts,"
                    " state, first_failure_at, next_attempt_at FROM {posts}"
                    " WHERE endpoint_id = %s AND event_id = %s"
                ),
                (endpoint_id, event_id),
            )
            row = curs.fetchone()
        return None if row is None else PostRow(**{**row, "payload": bytes(row["payload"])})

    def record(
        self,
        post: PostRow,
        *,
        attempted_at: datetime,
        status_code: int | None,
        outcome: str,
        succeeded: bool,
    ) -> Recorded:
        """One attempt and what follows from it, in one transaction: the event's state
        and next try (the domain's back-off), and the endpoint's failing streak."""
        attempt = post.attempts + 1
        first_failure = None if succeeded else (post.first_failure_at or attempted_at)
        next_at = (
            None if first_failure is None else next_attempt_at(first_failure, attempted_at, attempt)
        )
        state = "delivered" if succeeded else ("pending" if next_at is not None else "given-up")
        with self.transaction() as curs:
            curs.execute(
                self._sql(
                    "INSERT INTO {attempts} (endpoint_id, event_id, attempt, event_type,"
                    " attempted_at, status_code, outcome) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT DO NOTHING"
                ),
                (post.endpoint_id, post.event_id, attempt, post.event_type, attempted_at,
                 status_code, outcome),
            )  # fmt: skip
            curs.execute(
                self._sql(
                    "UPDATE {posts} SET attempts = %s, state = %s, first_failure_at = %s,"
                    " next_attempt_at = %s WHERE endpoint_id = %s AND event_id = %s"
                ),
                (attempt, state, first_failure, next_at, post.endpoint_id, post.event_id),
            )
            curs.execute(
                self._sql(
                    "INSERT INTO {endpoints} AS e (endpoint_id, failing_since) VALUES (%s, %s)"
                    " ON CONFLICT (endpoint_id) DO UPDATE SET failing_since ="
                    " CASE WHEN %s THEN NULL ELSE coalesce(e.failing_since, %s) END"
                    " RETURNING failing_since"
                ),
                (post.endpoint_id, None if succeeded else attempted_at, succeeded, attempted_at),
            )
            row = curs.fetchone()
        failing_since = row["failing_since"] if row else None
        return Recorded(
            next_attempt_at=next_at,
            failing_since=failing_since,
            failing_too_long=failing_too_long(failing_since, attempted_at),
        )

    def cancel(self, endpoint_id: UUID) -> int:
        """Stops the retries of an endpoint that is gone or disabled; how many were pending."""
        with self.transaction() as curs:
            curs.execute(
                self._sql(
                    "UPDATE {posts} SET state = 'cancelled', next_attempt_at = NULL"
                    " WHERE endpoint_id = %s AND state = 'pending'"
                ),
                (endpoint_id,),
            )
            return int(curs.rowcount or 0)

    def forget_failures(self, endpoint_id: UUID) -> None:
        """An endpoint enabled again starts a new failing streak with its next failure."""
        with self.transaction() as curs:
            curs.execute(
                self._sql("DELETE FROM {endpoints} WHERE endpoint_id = %s"), (endpoint_id,)
            )

    # ------------------------------------------------------------ the scheduler's job

    def due(self, now: datetime, limit: int = 1000) -> list[tuple[UUID, str, int]]:
        """(endpoint, event, attempts so far) of the failed posts due again by `now`."""
        with self.transaction() as curs:
            curs.execute(
                self._sql(
                    "SELECT endpoint_id, event_id, attempts FROM {posts}"
                    " WHERE state = 'pending' AND next_attempt_at <= %s"
                    " ORDER BY next_attempt_at LIMIT %s"
                ),
                (now, limit),
            )
            return [(r["endpoint_id"], r["event_id"], r["attempts"]) for r in curs.fetchall()]

    def prune(self, now: datetime) -> int:
        """Forgets settled posts and attempts older than PRUNE_AFTER; how many posts."""
        before = now - PRUNE_AFTER
        with self.transaction() as curs:
            curs.execute(self._sql("DELETE FROM {attempts} WHERE attempted_at < %s"), (before,))
            curs.execute(
                self._sql("DELETE FROM {posts} WHERE state <> 'pending' AND created_at < %s"),
                (before,),
            )
            return int(curs.rowcount or 0)

    # ------------------------------------------------------------ the API

    def attempts(self, endpoint_id: UUID, limit: int = MAX_LISTED_ATTEMPTS) -> list[AttemptRow]:
        """The endpoint's most recent attempts, newest first."""
        with self.transaction() as curs:
            curs.execute(
                self._sql(
                    "SELECT event_id, event_type, attempt, attempted_at, status_code, outcome"
                    " FROM {attempts} WHERE endpoint_id = %s"
                    " ORDER BY attempted_at DESC, attempt DESC LIMIT %s"
                ),
                (endpoint_id, limit),
            )
            return [AttemptRow(**row) for row in curs.fetchall()]
