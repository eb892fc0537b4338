"""The views in PostgreSQL: each write and its tracking record commit in one transaction."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from psycopg import sql

from picasse.adapters.postgres.roles import serialize_schema_changes
from picasse.domain.messages import FailureReason
from picasse.domain.personal import (
    HeldIn,
    Trigger,
    kinds_erased_on,
    personal_data_kind,
    view_columns,
)
from picasse.projections.accounts import AccountsView, CustomerRow, UserRow
from picasse.projections.ledger import LedgerEntry, LedgerView
from picasse.projections.traffic import Change, DailyCount, TrafficRow, TrafficView


class _View(PostgresTrackingRecorder):
    """Common plumbing: named tables in the datastore's schema, one transaction per write."""

    tables: tuple[str, ...] = ()
    indexes: tuple[str, ...] = ()

    def __init__(self, datastore: PostgresDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        prefix = self.tracking_table_name.removesuffix("_tracking")
        self.t = {
            name: sql.Identifier(datastore.schema, f"{prefix}_{name}") for name in self.tables
        }
        # Index names follow the tables' prefix, so a second copy of a view (an audit's
        # scratch view) in the same schema gets indexes of its own.
        index_names = {
            f"{name}_idx": sql.Identifier(f"{prefix}_{name}_idx") for name in self.indexes
        }
        self.sql_create_statements += [
            sql.SQL(s).format(**self.t, **index_names) for s in self.schema_statements()
        ]

    def schema_statements(self) -> list[str]:
        return []

    def _create_table(self, curs: Any) -> None:
        serialize_schema_changes(curs)
        super()._create_table(curs)

    def _write(
        self, tracking: Tracking, statements: str | list[str] | list[sql.Composed], params: Any
    ) -> None:
        with self.datastore.transaction(commit=True) as curs:
            for statement in [statements] if isinstance(statements, str) else statements:
                if isinstance(statement, str):
                    statement = sql.SQL(statement).format(**self.t)
                curs.execute(statement, params)
            self._insert_tracking(curs, tracking)

    # Erasure: the registry of personal data says which columns of which table hold each
    # kind; the view knows only which column names a row's customer.

    tenant_columns: dict[str, str] = {}  # per table: the column naming the row's customer
    on_termination: tuple[str, ...] = ()  # the view's own bookkeeping when a customer goes

    def erased(self, tenant_id: UUID, subject: str | None, tracking: Tracking) -> None:
        """Blank what an erasure made unreadable: every kind a termination erases (subject
        None), or the subject's kind in that subject's rows."""
        statements = self._purges(subject)
        if not statements:
            self.insert_tracking(tracking)
            return
        self._write(
            tracking, statements, {"tenant": tenant_id, "of": (subject or "").partition("/")[2]}
        )

    def _purges(self, subject: str | None) -> list[sql.Composed]:
        if subject is None:
            where = sql.SQL("{tenant} = %(tenant)s")
            held = [
                HeldIn(table=table, columns=tuple(sorted(columns)), subject_column="")
                for table, columns in view_columns(kinds_erased_on(Trigger.TERMINATION)).items()
            ]
        else:
            where = sql.SQL(
                "{subject}::text = %(of)s AND ({tenant} = %(tenant)s OR {tenant} IS NULL)"
            )
            held = list(personal_data_kind(subject).held_in)
        statements = [
            sql.SQL("UPDATE {table} SET {blanks} WHERE {where}").format(
                table=self.t[h.table],
                blanks=sql.SQL(", ").join(
                    sql.SQL("{} = NULL").format(sql.Identifier(c)) for c in h.columns
                ),
                where=where.format(
                    tenant=sql.Identifier(self.tenant_columns[h.table]),
                    subject=sql.Identifier(h.subject_column or self.tenant_columns[h.table]),
                ),
            )
            for h in held
            if h.table in self.t
        ]
        if subject is None:
            statements += [sql.SQL(s).format(**self.t) for s in self.on_termination]
        return statements

    def _read(self, statement: str, params: Any = ()) -> list[dict[str, Any]]:
        with self.datastore.get_connection() as conn:
            return conn.execute(sql.SQL(statement).format(**self.t), params).fetchall()  # type: ignore[return-value]

    def reset(self) -> None:
        """Empty the view and its position, so it is rebuilt from the start of the log."""
        with self.datastore.transaction(commit=True) as curs:
            for table in self.t.values():
                curs.execute(sql.SQL("TRUNCATE {}").format(table))
            curs.execute(
                sql.SQL("DELETE FROM {} WHERE application_name <> %s").format(
                    sql.Identifier(self.datastore.schema, self.tracking_table_name)
                ),
                (self.table_migration_identifier,),
            )


class PostgresAccountsView(_View, AccountsView):
    tables = ("customers", "users")
    tenant_columns = {"customers": "id", "users": "customer_id"}
    on_termination = ("UPDATE {customers} SET erased = true WHERE id = %(tenant)s",)
    indexes = ("users_customer",)

    def schema_statements(self) -> list[str]:
        return [
            "CREATE TABLE IF NOT EXISTS {customers} (id uuid PRIMARY KEY, organisation text,"
            " contact_name text, contact_email text, contact_phone text, billing_address text,"
            " subscription text NOT NULL, plan text, registered_at timestamptz NOT NULL,"
            " erased boolean NOT NULL DEFAULT false)",
            "CREATE TABLE IF NOT EXISTS {users} (id uuid PRIMARY KEY, customer_id uuid,"
            " login text, role text NOT NULL, disabled boolean NOT NULL DEFAULT false,"
            " added_at timestamptz NOT NULL, email text)",
            # Views made before users had an e-mail address get the column (NULL: none).
            "ALTER TABLE {users} ADD COLUMN IF NOT EXISTS email text",
            "CREATE INDEX IF NOT EXISTS {users_customer_idx} ON {users} (customer_id)",
        ]

    def customer_registered(
        self, customer_id: UUID, organisation: str | None, contact: tuple[str | None, str | None, str | None],
        billing_address: str | None, registered_at: datetime, tracking: Tracking,
    ) -> None:  # fmt: skip
        self._write(
            tracking,
            "INSERT INTO {customers} (id, organisation, contact_name, contact_email, contact_phone,"
            " billing_address, subscription, registered_at) VALUES (%s, %s, %s, %s, %s, %s,"
            " 'registered', %s) ON CONFLICT (id) DO NOTHING",
            (customer_id, organisation, *contact, billing_address, registered_at),
        )

    def contact_changed(
        self,
        customer_id: UUID,
        contact: tuple[str | None, str | None, str | None],
        tracking: Tracking,
    ) -> None:
        self._write(
            tracking,
            "UPDATE {customers} SET contact_name = %s, contact_email = %s, contact_phone = %s"
            " WHERE id = %s AND NOT erased",
            (*contact, customer_id),
        )

    def billing_address_changed(
        self, customer_id: UUID, billing_address: str | None, tracking: Tracking
    ) -> None:
        self._write(
            tracking,
            "UPDATE {customers} SET billing_address = %s WHERE id = %s AND NOT erased",
            (billing_address, customer_id),
        )

    def subscription_changed(
        self, customer_id: UUID, subscription: str, plan: str | None, tracking: Tracking
    ) -> None:
        self._write(
            tracking,
            "UPDATE {customers} SET subscription = %s, plan = coalesce(%s, plan) WHERE id = %s",
            (subscription, plan, customer_id),
        )

    def user_added(
        self,
        user_id: UUID,
        customer_id: UUID | None,
        login: str | None,
        role: str,
        added_at: datetime,
        tracking: Tracking,
        email: str | None = None,
    ) -> None:
        self._write(
            tracking,
            "INSERT INTO {users} (id, customer_id, login, role, added_at, email)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
            (user_id, customer_id, login, role, added_at, email),
        )

    def user_disabled(self, user_id: UUID, disabled: bool, tracking: Tracking) -> None:
        self._write(tracking, "UPDATE {users} SET disabled = %s WHERE id = %s", (disabled, user_id))

    def customers(self, *, customer_id: UUID | None = None) -> list[CustomerRow]:
        rows = self._read(
            "SELECT id, organisation, contact_name, contact_email, contact_phone, billing_address,"
            " subscription, plan, registered_at, erased FROM {customers}"
            " WHERE %(id)s::uuid IS NULL OR id = %(id)s ORDER BY registered_at",
            {"id": customer_id},
        )
        return [CustomerRow(**row) for row in rows]

    def users(self, *, customer_id: UUID | None = None, platform: bool = False) -> list[UserRow]:
        rows = self._read(
            "SELECT id, customer_id, login, role, disabled, added_at, email FROM {users}"
            " WHERE (%(platform)s AND customer_id IS NULL)"
            " OR (NOT %(platform)s AND (%(id)s::uuid IS NULL OR customer_id = %(id)s))"
            " ORDER BY added_at",
            {"id": customer_id, "platform": platform},
        )
        return [UserRow(**row) for row in rows]


class PostgresTrafficView(_View, TrafficView):
    tables = ("messages", "deliveries")
    tenant_columns = {"messages": "customer_id", "deliveries": "customer_id"}
    indexes = ("customer_time", "time", "message")

    def schema_statements(self) -> list[str]:
        return [
            "CREATE TABLE IF NOT EXISTS {messages} (id uuid PRIMARY KEY, customer_id uuid NOT NULL,"
            " channel text NOT NULL, priority text NOT NULL, month text NOT NULL,"
            " requested_at timestamptz NOT NULL, requested_by uuid, client_ip text)",
            "CREATE TABLE IF NOT EXISTS {deliveries} (id uuid PRIMARY KEY, message_id uuid NOT NULL,"
            " customer_id uuid NOT NULL, idx integer NOT NULL, channel text NOT NULL,"
            " month text NOT NULL, recipient text, status text NOT NULL, attempts integer NOT NULL DEFAULT 0,"
            " reason text, provider text, acknowledged boolean NOT NULL DEFAULT false,"
            " queued_at timestamptz NOT NULL, updated_at timestamptz NOT NULL)",
            "CREATE INDEX IF NOT EXISTS {customer_time_idx} ON {deliveries} (customer_id, queued_at)",
            "CREATE INDEX IF NOT EXISTS {time_idx} ON {deliveries} (queued_at)",
            "CREATE INDEX IF NOT EXISTS {message_idx} ON {deliveries} (message_id)",
        ]

    def message_requested(
        self, message_id: UUID, customer_id: UUID, channel: str, priority: str, month: str,
        requested_at: datetime, requested_by: UUID | None, client_ip: str | None, tracking: Tracking,
    ) -> None:  # fmt: skip
        self._write(
            tracking,
            "INSERT INTO {messages} (id, customer_id, channel, priority, month, requested_at,"
            " requested_by, client_ip) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
            (
                message_id,
                customer_id,
                channel,
                priority,
                month,
                requested_at,
                requested_by,
                client_ip,
            ),
        )

    def delivery_queued(
        self, delivery_id: UUID, message_id: UUID, customer_id: UUID, index: int, channel: str,
        month: str, recipient: str | None, queued_at: datetime, tracking: Tracking,
    ) -> None:  # fmt: skip
        self._write(
            tracking,
            "INSERT INTO {deliveries} (id, message_id, customer_id, idx, channel, month, recipient,"
            " status, queued_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, 'queued', %s, %s)"
            " ON CONFLICT (id) DO NOTHING",
            (
                delivery_id,
                message_id,
                customer_id,
                index,
                channel,
                month,
                recipient,
                queued_at,
                queued_at,
            ),
        )

    def delivery_changed(
        self, delivery_id: UUID, change: Change, at: datetime, tracking: Tracking
    ) -> None:
        self._write(
            tracking,
            "UPDATE {deliveries} SET status = coalesce(%(status)s, status),"
            " attempts = coalesce(%(attempts)s, attempts), reason = CASE WHEN %(status)s::text IS NULL"
            " THEN reason ELSE %(reason)s END, provider = coalesce(%(provider)s, provider),"
            " acknowledged = coalesce(%(acknowledged)s, acknowledged), updated_at = %(at)s"
            " WHERE id = %(id)s",
            {
                "status": change.status,
                "attempts": change.attempts,
                "reason": change.reason,
                "provider": change.provider,
                "acknowledged": change.acknowledged,
                "at": at,
                "id": delivery_id,
            },
        )

    def traffic(
        self, customer_id: UUID | None, start: datetime, end: datetime, *, limit: int = 1000
    ) -> list[TrafficRow]:
        rows = self._read(
            "SELECT d.id AS delivery_id, d.message_id, d.customer_id, m.requested_at, m.requested_by,"
            " m.client_ip, d.channel, d.recipient, d.status, d.attempts, d.reason, d.updated_at"
            " FROM {deliveries} d JOIN {messages} m ON m.id = d.message_id"
            " WHERE (%(customer)s::uuid IS NULL OR d.customer_id = %(customer)s)"
            " AND d.queued_at >= %(start)s AND d.queued_at < %(end)s"
            " ORDER BY d.queued_at DESC, d.idx LIMIT %(limit)s",
            {"customer": customer_id, "start": start, "end": end, "limit": limit},
        )
        return [
            TrafficRow(**{**row, "reason": row["reason"] and FailureReason.read(row["reason"])})
            for row in rows
        ]

    def daily_counts(self, customer_id: UUID | None, start: date, end: date) -> list[DailyCount]:
        rows = self._read(
            "SELECT (queued_at AT TIME ZONE 'UTC')::date AS day, customer_id, channel, status,"
            " count(*)::int AS count FROM {deliveries}"
            " WHERE (%(customer)s::uuid IS NULL OR customer_id = %(customer)s)"
            " AND queued_at >= %(start)s AND queued_at < %(end)s + 1"
            " GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
            {"customer": customer_id, "start": start, "end": end},
        )
        return [DailyCount(**row) for row in rows]


def events_after(recorder: Any, position: int, topics: tuple[str, ...]) -> int:
    """How many events of these topics the log holds after `position`: a view's lag."""
    statement = sql.SQL(
        "SELECT count(*) AS n FROM {}.{} WHERE notification_id > %s AND topic = ANY(%s)"
    ).format(sql.Identifier(recorder.datastore.schema), sql.Identifier(recorder.events_table_name))
    with recorder.datastore.get_connection() as conn:
        row = conn.execute(statement, (position, list(topics))).fetchone()
    return int(row["n"]) if row else 0


class PostgresLedgerView(_View, LedgerView):
    tables = ("entries",)
    indexes = ("customer",)

    def schema_statements(self) -> list[str]:
        return [
            "CREATE TABLE IF NOT EXISTS {entries} (notification_id bigint PRIMARY KEY,"
            " at timestamptz NOT NULL, kind text NOT NULL, customer_id uuid, summary text NOT NULL)",
            "CREATE INDEX IF NOT EXISTS {customer_idx} ON {entries} (customer_id, at)",
        ]

    def record(self, entry: LedgerEntry, tracking: Tracking) -> None:
        self._write(
            tracking,
            "INSERT INTO {entries} (notification_id, at, kind, customer_id, summary)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (notification_id) DO NOTHING",
            (tracking.notification_id, entry.at, entry.kind, entry.customer_id, entry.summary),
        )

    def entries(self, *, customer_id: UUID | None = None, limit: int = 500) -> list[LedgerEntry]:
        rows = self._read(
            "SELECT at, kind, customer_id, summary FROM {entries}"
            " WHERE %(customer)s::uuid IS NULL OR customer_id = %(customer)s"
            " ORDER BY notification_id DESC LIMIT %(limit)s",
            {"customer": customer_id, "limit": limit},
        )
        return [LedgerEntry(**row) for row in rows]


def last_notification_in(recorder: Any, upto: int, topics: tuple[str, ...]) -> int:
    """The last notification up to `upto` of these topics (0: none): what a view must have
    taken in to be up to date with `upto`, since a view only tracks events of its topics."""
    statement = sql.SQL(
        "SELECT max(notification_id) AS n FROM {}.{} WHERE notification_id <= %s AND topic = ANY(%s)"
    ).format(sql.Identifier(recorder.datastore.schema), sql.Identifier(recorder.events_table_name))
    with recorder.datastore.get_connection() as conn:
        row = conn.execute(statement, (upto, list(topics))).fetchone()
    return int(row["n"]) if row and row["n"] is not None else 0


class ViewFailure(msgspec.Struct, frozen=True):
    """A view stopped at an event it cannot take: what `/health` and the dashboard show.

    Only the error's type is kept, never its text: the text may quote the value."""

    view: str
    failing_at: int  # the notification id of the event the view cannot take
    error_type: str
    since: datetime  # the first failed attempt at this event
    attempts: int
    seen: int  # the log's head at the last attempt: a later event may unblock it


class ViewStatusTable:
    """`picasse_view_status`: one row per stopped view, written by whoever advances it."""

    def __init__(self, datastore: PostgresDatastore) -> None:
        self.datastore = datastore
        self.table = sql.Identifier(datastore.schema, "picasse_view_status")

    def create_table(self) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (view text PRIMARY KEY, failing_at bigint NOT NULL,"
                    " error_type text NOT NULL, since timestamptz NOT NULL, attempts integer NOT NULL,"
                    " seen bigint NOT NULL)"
                ).format(self.table)
            )

    def stopped(self, failure: ViewFailure) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                sql.SQL(
                    "INSERT INTO {} (view, failing_at, error_type, since, attempts, seen)"
                    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (view) DO UPDATE SET"
                    " failing_at = excluded.failing_at, error_type = excluded.error_type,"
                    " since = excluded.since, attempts = excluded.attempts, seen = excluded.seen"
                ).format(self.table),
                (
                    failure.view,
                    failure.failing_at,
                    failure.error_type,
                    failure.since,
                    failure.attempts,
                    failure.seen,
                ),
            )

    def cleared(self, view: str) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(sql.SQL("DELETE FROM {} WHERE view = %s").format(self.table), (view,))

    def failures(self) -> list[ViewFailure]:
        """The stopped views; none while the table does not exist yet (no projector ran)."""
        with self.datastore.get_connection() as conn:
            exists = conn.execute("SELECT to_regclass(%s) AS t", (self._qualified(),)).fetchone()
            if not exists or exists["t"] is None:
                return []
            rows = conn.execute(
                sql.SQL(
                    "SELECT view, failing_at, error_type, since, attempts, seen FROM {} ORDER BY view"
                ).format(self.table)
            ).fetchall()
        return [ViewFailure(**row) for row in rows]  # type: ignore[arg-type]

    def failure_of(self, view: str) -> ViewFailure | None:
        return next((f for f in self.failures() if f.view == view), None)

    def _qualified(self) -> str:
        schema = self.datastore.schema.replace('"', '""')
        return f'"{schema}".picasse_view_status'
