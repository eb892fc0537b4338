"""The views in PostgreSQL: each write and its tracking record commit in one transaction."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

import msgspec
from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresDatastore
from msgspec import Meta
from psycopg import sql

from picasse.adapters.crypto import (
    ViewKeys,
    blind_index,
    open_view_value,
    seal_view_value,
)
from picasse.adapters.postgres.roles import TrackingTable, serialize_schema_changes
from picasse.domain.messages import FailureReason
from picasse.domain.messaging import recipient_lookup_form
from picasse.domain.personal import sealed_view_columns, subject_name
from picasse.domain.users import PLATFORM_TENANT
from picasse.projections.accounts import (
    PAGE_SIZE,
    AccountsView,
    ApiKeyRow,
    CustomerRow,
    UserRow,
)
from picasse.projections.invoices import InvoiceRow, InvoicesView
from picasse.projections.ledger import LedgerEntry, LedgerView
from picasse.projections.traffic import (
    Change,
    DailyCount,
    DeliveryRow,
    MessageQuery,
    MessageRow,
    TrafficRow,
    TrafficView,
)


class ViewWithoutKeys(RuntimeError):
    """A view holding personal columns was built without the key store to seal and open them."""


class _View(TrackingTable):
    """Common plumbing: named tables in the datastore's schema, one transaction per write.

    Personal columns (the registry's `HeldIn`) hold ciphertext only: each value sealed
    under its data subject's key, the key the events hold it under (adapters/crypto.py).
    Reads open them; a value whose key is destroyed reads as erased (None). Erasure is
    therefore the key's destruction alone: no personal row is updated."""

    tables: tuple[str, ...] = ()
    indexes: tuple[str, ...] = ()
    retired_indexes: tuple[str, ...] = ()  # indexes of earlier versions, dropped at start

    def __init__(
        self, datastore: PostgresDatastore, *, keys: ViewKeys | None = None, **kwargs: Any
    ) -> None:
        super().__init__(datastore, **kwargs)
        self.keys = keys
        prefix = self.tracking_table_name.removesuffix("_tracking")
        self.t = {
            name: sql.Identifier(datastore.schema, f"{prefix}_{name}") for name in self.tables
        }
        self._table_names = {name: f"{prefix}_{name}" for name in self.tables}
        # Index names follow the tables' prefix, so a second copy of a view (an audit's
        # scratch view) in the same schema gets indexes of its own.
        index_names = {
            f"{name}_idx": sql.Identifier(f"{prefix}_{name}_idx") for name in self.indexes
        }
        self.sql_create_statements += [
            sql.SQL(s).format(**self.t, **index_names) for s in self.schema_statements()
        ] + [
            sql.SQL("DROP INDEX IF EXISTS {}").format(
                sql.Identifier(datastore.schema, f"{prefix}_{name}_idx")
            )
            for name in self.retired_indexes
        ]

    def schema_statements(self) -> list[str]:
        return []

    def _create_table(self, curs: Any) -> None:
        serialize_schema_changes(curs)
        self._drop_if_outdated(curs)
        super()._create_table(curs)  # takes the schema lock again: it is held already

    def _drop_if_outdated(self, curs: Any) -> None:
        """A view written before its personal columns were sealed, or before one of its
        tables existed (a new table has none of the rows of the events already taken), is
        dropped with its position, so it is rebuilt from the log; DROP unlinks old files."""
        stale = False
        schema = self.datastore.schema or "public"
        for table in self.tables:
            for column in sealed_view_columns(table):
                curs.execute(
                    "SELECT data_type FROM information_schema.columns WHERE table_schema = %s"
                    " AND table_name = %s AND column_name = %s",
                    (schema, self._table_names[table], column),
                )
                row = curs.fetchone()
                stale |= row is not None and row["data_type"] != "bytea"
        tracking = sql.Identifier(self.datastore.schema, self.tracking_table_name)
        curs.execute("SELECT to_regclass(%s) AS t", (tracking.as_string(curs),))
        found = curs.fetchone()
        has_tracking = found is not None and found["t"] is not None
        if not stale and has_tracking:
            missing = False
            for table in self.tables:
                curs.execute("SELECT to_regclass(%s) AS t", (self.t[table].as_string(curs),))
                exists = curs.fetchone()
                missing |= exists is None or exists["t"] is None
            if missing:
                curs.execute(
                    sql.SQL("SELECT 1 FROM {} WHERE application_name <> %s LIMIT 1").format(
                        tracking
                    ),
                    (self.table_migration_identifier,),
                )
                stale = curs.fetchone() is not None  # it has taken events: start again
        if not stale:
            return
        curs.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.SQL(", ").join(self.t.values())))
        if has_tracking:
            curs.execute(
                sql.SQL("DELETE FROM {} WHERE application_name <> %s").format(tracking),
                (self.table_migration_identifier,),
            )

    def _write(
        self, tracking: Tracking, statements: str | list[str] | list[sql.Composed], params: Any
    ) -> None:
        with self.datastore.transaction(commit=True) as curs:
            for statement in [statements] if isinstance(statements, str) else statements:
                if isinstance(statement, str):
                    statement = sql.SQL(statement).format(**self.t)
                curs.execute(statement, params)
            self._insert_tracking(curs, tracking)

    # Sealing and opening: the registry says which columns of which table hold which
    # kind, and which column names the subject; the view knows which names the tenant.

    tenant_columns: dict[str, str] = {}  # per table: the column naming the row's customer
    blind_indexes: dict[str, tuple[str, ...]] = {}  # per table: its blind index columns
    on_termination: tuple[str, ...] = ()  # the view's own bookkeeping when a customer goes

    def _keys(self) -> ViewKeys:
        if self.keys is None:
            raise ViewWithoutKeys(f"{type(self).__name__} needs the key store (keys=...)")
        return self.keys

    @staticmethod
    def _binding(table: str, column: str, row_id: UUID) -> bytes:
        """What a sealed value is bound to: its table, column and row (not the copy of the
        view, so a rebuilt or scratch view holds the same bytes)."""
        return b"view\0" + table.encode() + b"\0" + column.encode() + b"\0" + row_id.bytes

    def subject_key(self, table: str, row: dict[str, Any], kind: str, subject_column: str) -> Any:
        tenant = row[self.tenant_columns[table]] or PLATFORM_TENANT  # staff: the platform's
        return self._keys().subject_key(tenant, subject_name(kind, row[subject_column]))

    def _sealed(self, table: str, row: dict[str, Any]) -> dict[str, Any]:
        """The row with its personal columns sealed; a value whose key is already gone
        (or that reads as erased) is stored as NULL."""
        sealed = dict(row)
        for column, (kind, subject_column) in sealed_view_columns(table).items():
            if row.get(column) is None:
                continue
            key = self.subject_key(table, row, kind, subject_column)
            sealed[column] = key and seal_view_value(
                key, row[column], self._binding(table, column, row["id"])
            )
        return sealed

    def _opened(self, table: str, row: dict[str, Any], row_id: UUID) -> dict[str, Any]:
        """The row with its personal columns of `table` opened (None once erased)."""
        opened = dict(row)
        for column in sealed_view_columns(table):
            if opened.get(column) is not None:
                opened[column] = open_view_value(
                    self._keys(), opened[column], self._binding(table, column, row_id)
                )
        return opened

    def erased(self, tenant_id: UUID, subject: str | None, tracking: Tracking) -> None:
        """Erasure is the destruction of keys, which has happened: the sealed values now
        read as erased, so no personal row is touched. A termination (subject None) runs
        only the view's own bookkeeping, a constant cost whatever the history."""
        if subject is None and self.on_termination:
            statements = [sql.SQL(s).format(**self.t) for s in self.on_termination]
            self._write(tracking, statements, {"tenant": tenant_id})
        else:
            self.insert_tracking(tracking)

    def _read(self, statement: str | sql.Composed, params: Any = ()) -> list[dict[str, Any]]:
        if isinstance(statement, str):
            statement = sql.SQL(statement).format(**self.t)
        with self.datastore.get_connection() as conn:
            return conn.execute(statement, params).fetchall()

    def _shaped(self, statement: str, conditions: list[str], **parts: str) -> sql.Composed:
        """`statement` with `{where}` the conditions given, and nothing for those not: one
        statement per shape of a query, so each gets plans of its own (a generic plan of
        `$1 IS NULL OR col = $1` uses no index)."""
        where = sql.SQL(" AND ").join(sql.SQL(c).format(**self.t) for c in conditions)
        return sql.SQL(statement).format(
            **self.t,
            where=sql.SQL(" WHERE ") + where if conditions else sql.SQL(""),
            **{name: sql.SQL(part) for name, part in parts.items()},
        )

    def tables_with_tracking(self) -> list[tuple[sql.Identifier, str]]:
        """The view's tables and its tracking table (last), with their names unqualified."""
        return [
            *((self.t[kind], self._table_names[kind]) for kind in self.tables),
            (
                sql.Identifier(self.datastore.schema, self.tracking_table_name),
                self.tracking_table_name,
            ),
        ]

    def drop(self) -> None:
        """Drop the view's tables and its position (a shadow copy left by a rebuild cut short)."""
        tables = [table for table, _ in self.tables_with_tracking()]
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.SQL(", ").join(tables)))

    def replace_with(self, shadow: _View) -> None:
        """Swap `shadow`, a copy of this view built beside it (same class, other table
        names), in for this view's tables, in one transaction: readers see the old tables
        until it commits and the new ones after it (a reader waiting on the lock meanwhile
        finds the new table by its name), never a view part-built. The shadow's tables,
        indexes, keys and position take this view's names."""
        live_prefix = self.tracking_table_name.removesuffix("_tracking")
        shadow_prefix = shadow.tracking_table_name.removesuffix("_tracking")
        schema = self.datastore.schema
        # Tables filled moments ago have no statistics until autovacuum gets to them: the
        # planner should know them before the first reader does.
        with self.datastore.transaction(commit=True) as curs:
            for table, _ in shadow.tables_with_tracking():
                curs.execute(sql.SQL("ANALYZE {}").format(table))
        with self.datastore.transaction(commit=True) as curs:
            serialize_schema_changes(curs)
            old = [table for table, _ in self.tables_with_tracking()]
            curs.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.SQL(", ").join(old)))
            for (table, _), (_, live_name) in zip(
                shadow.tables_with_tracking(), self.tables_with_tracking(), strict=True
            ):
                curs.execute(
                    sql.SQL("ALTER TABLE {} RENAME TO {}").format(table, sql.Identifier(live_name))
                )
                # Its primary key's and indexes' names follow: a later start's
                # CREATE INDEX IF NOT EXISTS finds them under the view's own names.
                indexes = curs.execute(
                    "SELECT c.relname AS name FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                    " WHERE i.indrelid = %s::regclass",
                    (sql.Identifier(schema, live_name).as_string(curs),),
                ).fetchall()
                for index in indexes:
                    if index["name"].startswith(shadow_prefix):
                        renamed = live_prefix + index["name"].removeprefix(shadow_prefix)
                        curs.execute(
                            sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                                sql.Identifier(schema, index["name"]), sql.Identifier(renamed)
                            )
                        )

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


class PageBatching:
    """Mixed into a view (`page_batched`): its writes for a page of events commit in one
    transaction with the page's tracking records, when its driver says (`flush`, or
    `taken` to commit elsewhere). The SQL is the view's own, run in the same order, so the
    rows are those the view writes one event at a time. The live projector, a rebuild and
    the audit's replay drive views this way.

    The page's first tracking record goes in before its last: the tracking table takes a
    record only past the one it holds, so a page any of whose events another process has
    taken in (a projector whose claim was being lost: events are taken in their order, so
    it took the first) is refused whole, with IntegrityError, as one event would be."""

    datastore: PostgresDatastore
    t: dict[str, sql.Identifier]

    if TYPE_CHECKING:  # the view's own, from the library's tracking recorder

        def _insert_tracking(self, curs: Any, tracking: Tracking) -> None: ...

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._batch: list[tuple[str | list[str] | list[sql.Composed], Any]] = []
        self._first: Tracking | None = None
        self._tracked: Tracking | None = None
        self._composed: dict[str, bytes] = {}

    def _write(
        self, tracking: Tracking, statements: str | list[str] | list[sql.Composed], params: Any
    ) -> None:
        self._batch.append((statements, params))
        self._track(tracking)

    def insert_tracking(self, tracking: Tracking) -> None:
        self._track(tracking)

    def _track(self, tracking: Tracking) -> None:
        if self._tracked is None or tracking.notification_id > self._tracked.notification_id:
            self._tracked = tracking
        if self._first is None or tracking.notification_id < self._first.notification_id:
            self._first = tracking

    def taken(self) -> Callable[[], None] | None:
        """The page's writes, taken out of the view: a call that commits them in one
        transaction (from any thread; pages must be committed in their order)."""
        if self._tracked is None or self._first is None:
            return None
        batch, first, tracked = self._batch, self._first, self._tracked
        self.discard()
        return lambda: self._commit(batch, first, tracked)

    def flush(self) -> None:
        """Commit the page's writes now."""
        commit = self.taken()
        if commit is not None:
            commit()

    def discard(self) -> None:
        """Forget the page's writes (a page that failed on the way)."""
        self._batch, self._first, self._tracked = [], None, None

    def _commit(
        self,
        batch: list[tuple[str | list[str] | list[sql.Composed], Any]],
        first: Tracking,
        tracked: Tracking,
    ) -> None:
        composed = self._composed
        with self.datastore.transaction(commit=True) as curs:
            with curs.connection.pipeline():
                # The page's statements go out without waiting for each one's reply.
                for statements, params in batch:
                    for statement in [statements] if isinstance(statements, str) else statements:
                        if isinstance(statement, sql.Composable):  # an erasure's purge
                            curs.execute(statement, params)
                            continue
                        query = composed.get(statement)
                        if query is None:  # rendered once: psycopg caches its parse of bytes
                            query = sql.SQL(statement).format(**self.t).as_bytes(curs)
                            composed[statement] = query
                        curs.execute(query, params)
            if first.notification_id < tracked.notification_id:
                self._insert_tracking(curs, first)
            self._insert_tracking(curs, tracked)


def page_batched(view_class: type[_View]) -> type[Any]:
    """The view class (every view is built on `_View`, whose writes go through `_write`),
    its writes committed a page of events at a time (`PageBatching`)."""
    return type(f"PageBatched{view_class.__name__}", (PageBatching, view_class), {})


class PostgresAccountsView(_View, AccountsView):
    tables = ("customers", "users", "api_keys", "customer_counts", "user_counts")
    tenant_columns = {"customers": "id", "users": "customer_id", "api_keys": "customer_id"}
    on_termination = ("UPDATE {customers} SET erased = true WHERE id = %(tenant)s",)
    indexes = ("users_customer", "api_keys_page", "api_keys_user", "customers_page", "users_page")
    retired_indexes = ("api_keys_customer",)  # (customer_id, user_id): not the list's order

    def schema_statements(self) -> list[str]:
        return [
            "CREATE TABLE IF NOT EXISTS {customers} (id uuid PRIMARY KEY, organisation bytea,"
            " contact_name bytea, contact_email bytea, contact_phone bytea, billing_address bytea,"
            " subscription text NOT NULL, plan text, registered_at timestamptz NOT NULL,"
            " erased boolean NOT NULL DEFAULT false)",
            "CREATE TABLE IF NOT EXISTS {users} (id uuid PRIMARY KEY, customer_id uuid,"
            " login bytea, role text NOT NULL, disabled boolean NOT NULL DEFAULT false,"
            " added_at timestamptz NOT NULL, email bytea)",
            "CREATE INDEX IF NOT EXISTS {users_customer_idx} ON {users} (customer_id)",
            # No time of use, ever (R6): names, scopes and dates only.
            "CREATE TABLE IF NOT EXISTS {api_keys} (id uuid PRIMARY KEY, customer_id uuid,"
            " user_id uuid NOT NULL, name bytea, scopes text[] NOT NULL,"
            " created_at timestamptz NOT NULL, revoked boolean NOT NULL DEFAULT false)",
            "CREATE INDEX IF NOT EXISTS {api_keys_page_idx} ON {api_keys}"
            " (customer_id, created_at, id)",
            "CREATE INDEX IF NOT EXISTS {api_keys_user_idx} ON {api_keys}"
            " (customer_id, user_id, created_at, id)",
            # The lists' orders, for keyset pages.
            "CREATE INDEX IF NOT EXISTS {customers_page_idx} ON {customers} (registered_at, id)",
            "CREATE INDEX IF NOT EXISTS {users_page_idx} ON {users} (customer_id, added_at, id)",
            # Counts the pages show, kept in the transaction of the write that changes them.
            "CREATE TABLE IF NOT EXISTS {customer_counts} (subscription text PRIMARY KEY,"
            " count integer NOT NULL)",
            "CREATE TABLE IF NOT EXISTS {user_counts} (customer_id uuid PRIMARY KEY,"
            " count integer NOT NULL)",
        ]

    def customer_registered(
        self, customer_id: UUID, organisation: str | None, contact: tuple[str | None, str | None, str | None],
        billing_address: str | None, registered_at: datetime, tracking: Tracking,
    ) -> None:  # fmt: skip
        row = self._sealed("customers", {
            "id": customer_id, "organisation": organisation, "contact_name": contact[0],
            "contact_email": contact[1], "contact_phone": contact[2],
            "billing_address": billing_address,
        })  # fmt: skip
        self._write(
            tracking,
            "WITH added AS (INSERT INTO {customers} (id, organisation, contact_name, contact_email,"
            " contact_phone, billing_address, subscription, registered_at) VALUES (%(id)s,"
            " %(organisation)s, %(contact_name)s, %(contact_email)s, %(contact_phone)s,"
            " %(billing_address)s, 'registered', %(at)s) ON CONFLICT (id) DO NOTHING"
            " RETURNING subscription)"
            " INSERT INTO {customer_counts} AS c (subscription, count)"
            " SELECT subscription, 1 FROM added"
            " ON CONFLICT (subscription) DO UPDATE SET count = c.count + 1",
            {**row, "at": registered_at},
        )

    def contact_changed(
        self,
        customer_id: UUID,
        contact: tuple[str | None, str | None, str | None],
        tracking: Tracking,
    ) -> None:
        row = self._sealed("customers", {
            "id": customer_id, "contact_name": contact[0], "contact_email": contact[1],
            "contact_phone": contact[2],
        })  # fmt: skip
        self._write(
            tracking,
            "UPDATE {customers} SET contact_name = %(contact_name)s, contact_email = %(contact_email)s,"
            " contact_phone = %(contact_phone)s WHERE id = %(id)s AND NOT erased",
            row,
        )

    def billing_address_changed(
        self, customer_id: UUID, billing_address: str | None, tracking: Tracking
    ) -> None:
        row = self._sealed("customers", {"id": customer_id, "billing_address": billing_address})
        self._write(
            tracking,
            "UPDATE {customers} SET billing_address = %(billing_address)s"
            " WHERE id = %(id)s AND NOT erased",
            row,
        )

    def subscription_changed(
        self, customer_id: UUID, subscription: str, plan: str | None, tracking: Tracking
    ) -> None:
        self._write(
            tracking,
            "WITH was AS (SELECT subscription FROM {customers} WHERE id = %(id)s),"
            " now AS (UPDATE {customers} SET subscription = %(subscription)s,"
            "  plan = coalesce(%(plan)s, plan) WHERE id = %(id)s RETURNING subscription),"
            " moved AS (SELECT was.subscription, -1 AS n FROM was, now"
            "  WHERE was.subscription <> now.subscription"
            "  UNION ALL SELECT now.subscription, 1 FROM was, now"
            "  WHERE was.subscription <> now.subscription)"
            " INSERT INTO {customer_counts} AS c (subscription, count)"
            " SELECT subscription, n FROM moved"
            " ON CONFLICT (subscription) DO UPDATE SET count = c.count + excluded.count",
            {"subscription": subscription, "plan": plan, "id": customer_id},
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
        row = self._sealed(
            "users", {"id": user_id, "customer_id": customer_id, "login": login, "email": email}
        )
        self._write(
            tracking,
            "WITH added AS (INSERT INTO {users} (id, customer_id, login, role, added_at, email)"
            " VALUES (%(id)s, %(customer_id)s, %(login)s, %(role)s, %(at)s, %(email)s)"
            " ON CONFLICT (id) DO NOTHING RETURNING customer_id)"
            " INSERT INTO {user_counts} AS c (customer_id, count)"
            " SELECT customer_id, 1 FROM added WHERE customer_id IS NOT NULL"
            " ON CONFLICT (customer_id) DO UPDATE SET count = c.count + 1",
            {**row, "role": role, "at": added_at},
        )

    def user_disabled(self, user_id: UUID, disabled: bool, tracking: Tracking) -> None:
        self._write(tracking, "UPDATE {users} SET disabled = %s WHERE id = %s", (disabled, user_id))

    def user_role_changed(self, user_id: UUID, role: str, tracking: Tracking) -> None:
        self._write(tracking, "UPDATE {users} SET role = %s WHERE id = %s", (role, user_id))

    def api_key_issued(
        self, key_id: UUID, customer_id: UUID | None, user_id: UUID, scopes: list[str],
        created_at: datetime, tracking: Tracking,
    ) -> None:  # fmt: skip
        self._write(
            tracking,
            "INSERT INTO {api_keys} (id, customer_id, user_id, scopes, created_at)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
            (key_id, customer_id, user_id, scopes, created_at),
        )

    def api_key_named(
        self, key_id: UUID, customer_id: UUID | None, user_id: UUID, name: str | None,
        tracking: Tracking,
    ) -> None:  # fmt: skip
        row = self._sealed(
            "api_keys", {"id": key_id, "customer_id": customer_id, "user_id": user_id, "name": name}
        )
        self._write(tracking, "UPDATE {api_keys} SET name = %(name)s WHERE id = %(id)s", row)

    def api_key_revoked(self, key_id: UUID, tracking: Tracking) -> None:
        self._write(tracking, "UPDATE {api_keys} SET revoked = true WHERE id = %s", (key_id,))

    def api_keys(
        self, *, customer_id: UUID | None = None, user_id: UUID | None = None
    ) -> list[ApiKeyRow]:
        # One statement per shape (a generic plan of `$1 IS NULL OR …` uses no index).
        conditions = [
            "customer_id IS NULL" if customer_id is None else "customer_id = %(customer)s"
        ]
        if user_id is not None:
            conditions.append("user_id = %(user)s")
        # Newest first; led by the columns held equal, so that it is the index's order even
        # where that equality is `IS NULL` (which the planner does not take for one).
        order = "customer_id DESC, user_id DESC," if user_id is not None else "customer_id DESC,"
        rows = self._read(
            self._shaped(
                "SELECT id, customer_id, user_id, name, scopes, created_at, revoked"
                " FROM {api_keys}{where} ORDER BY {order} created_at DESC, id DESC",
                conditions,
                order=order,
            ),
            {"customer": customer_id, "user": user_id},
        )
        return [ApiKeyRow(**self._opened("api_keys", row, row["id"])) for row in rows]

    CUSTOMER_COLUMNS = (
        "SELECT id, organisation, contact_name, contact_email, contact_phone, billing_address,"
        " subscription, plan, registered_at, erased FROM {customers}"
    )

    def _customer_rows(self, statement: str, params: Any) -> list[CustomerRow]:
        rows = self._read(self.CUSTOMER_COLUMNS + statement, params)
        return [CustomerRow(**self._opened("customers", row, row["id"])) for row in rows]

    def customers(self, *, customer_id: UUID | None = None) -> list[CustomerRow]:
        if customer_id is not None:
            return self._customer_rows(" WHERE id = %(id)s", {"id": customer_id})
        return self._customer_rows(" ORDER BY registered_at, id", {})

    def customer_page(
        self, *, after: tuple[datetime, UUID] | None = None, limit: int = PAGE_SIZE
    ) -> list[CustomerRow]:
        if after is None:
            return self._customer_rows(
                " ORDER BY registered_at, id LIMIT %(limit)s", {"limit": limit}
            )
        return self._customer_rows(
            " WHERE (registered_at, id) > (%(at)s, %(id)s) ORDER BY registered_at, id"
            " LIMIT %(limit)s",
            {"at": after[0], "id": after[1], "limit": limit},
        )

    def customers_by_id(self, ids: list[UUID]) -> list[CustomerRow]:
        if not ids:
            return []
        return self._customer_rows(" WHERE id = ANY(%(ids)s)", {"ids": list(ids)})

    def customer_counts(self) -> dict[str, int]:
        rows = self._read("SELECT subscription, count FROM {customer_counts} WHERE count <> 0")
        return {row["subscription"]: row["count"] for row in rows}

    def user_counts(self, customer_ids: list[UUID]) -> dict[UUID, int]:
        if not customer_ids:
            return {}
        rows = self._read(
            "SELECT customer_id, count FROM {user_counts} WHERE customer_id = ANY(%(ids)s)",
            {"ids": list(customer_ids)},
        )
        return {row["customer_id"]: row["count"] for row in rows}

    def users(
        self, *, customer_id: UUID | None = None, platform: bool = False,
        after: tuple[datetime, UUID] | None = None, limit: int | None = None,
    ) -> list[UserRow]:  # fmt: skip
        # One statement per shape: whose users, from where, how many.
        conditions = []
        if platform:
            conditions.append("customer_id IS NULL")
        elif customer_id is not None:
            conditions.append("customer_id = %(id)s")
        if after is not None:
            conditions.append("(added_at, id) > (%(at)s, %(after)s)")
        # Whose first where the rows are one customer's (or staff's): the index's order.
        order = "customer_id, added_at, id" if platform or customer_id else "added_at, id"
        limited = "" if limit is None else " LIMIT %(limit)s"
        rows = self._read(
            self._shaped(
                "SELECT id, customer_id, login, role, disabled, added_at, email FROM {users}{where}"
                " ORDER BY {order}{limited}",
                conditions,
                order=order,
                limited=limited,
            ),
            {
                "id": customer_id,
                "at": after and after[0],
                "after": after and after[1],
                "limit": limit,
            },
        )
        return [UserRow(**self._opened("users", row, row["id"])) for row in rows]

    def users_by_id(self, ids: list[UUID]) -> list[UserRow]:
        if not ids:
            return []
        rows = self._read(
            "SELECT id, customer_id, login, role, disabled, added_at, email FROM {users}"
            " WHERE id = ANY(%(ids)s)",
            {"ids": list(ids)},
        )
        return [UserRow(**self._opened("users", row, row["id"])) for row in rows]


class PostgresTrafficView(_View, TrafficView):
    tables = ("messages", "deliveries", "daily", "daily_all")
    tenant_columns = {"messages": "customer_id", "deliveries": "customer_id"}
    indexes = ("customer_queued", "queued", "message_position", "recipient", "messages_page")
    retired_indexes = ("customer_time", "time", "message")  # not in the pages' orders
    blind_indexes = {"deliveries": ("recipient_index",)}

    def schema_statements(self) -> list[str]:
        return [
            "CREATE TABLE IF NOT EXISTS {messages} (id uuid PRIMARY KEY, customer_id uuid NOT NULL,"
            " channel text NOT NULL, priority text NOT NULL, month text NOT NULL,"
            " requested_at timestamptz NOT NULL, requested_by uuid, client_ip bytea)",
            "CREATE TABLE IF NOT EXISTS {deliveries} (id uuid PRIMARY KEY, message_id uuid NOT NULL,"
            " customer_id uuid NOT NULL, idx integer NOT NULL, channel text NOT NULL,"
            " month text NOT NULL, recipient bytea, recipient_index bytea, status text NOT NULL, attempts integer NOT NULL DEFAULT 0,"
            " reason text, provider text, acknowledged boolean NOT NULL DEFAULT false,"
            " queued_at timestamptz NOT NULL, updated_at timestamptz NOT NULL)",
            # The traffic pages' order (queued_at, id), newest first: a backward scan.
            "CREATE INDEX IF NOT EXISTS {customer_queued_idx} ON {deliveries}"
            " (customer_id, queued_at, id)",
            "CREATE INDEX IF NOT EXISTS {queued_idx} ON {deliveries} (queued_at, id)",
            "CREATE INDEX IF NOT EXISTS {message_position_idx} ON {deliveries} (message_id, idx)",
            "CREATE INDEX IF NOT EXISTS {recipient_idx} ON {deliveries} (customer_id, recipient_index)",
            "CREATE INDEX IF NOT EXISTS {messages_page_idx} ON {messages}"
            " (customer_id, requested_at DESC, id DESC)",
            # Deliveries per day (of queueing, UTC), channel and status: per customer, and
            # summed over all; kept in the transaction of each delivery's write.
            "CREATE TABLE IF NOT EXISTS {daily} (customer_id uuid NOT NULL, day date NOT NULL,"
            " channel text NOT NULL, status text NOT NULL, count integer NOT NULL,"
            " PRIMARY KEY (customer_id, day, channel, status))",
            "CREATE TABLE IF NOT EXISTS {daily_all} (day date NOT NULL, channel text NOT NULL,"
            " status text NOT NULL, count integer NOT NULL, PRIMARY KEY (day, channel, status))",
        ]

    def message_requested(
        self, message_id: UUID, customer_id: UUID, channel: str, priority: str, month: str,
        requested_at: datetime, requested_by: UUID | None, client_ip: str | None, tracking: Tracking,
    ) -> None:  # fmt: skip
        row = self._sealed("messages", {
            "id": message_id, "customer_id": customer_id, "channel": channel, "priority": priority,
            "month": month, "requested_at": requested_at, "requested_by": requested_by,
            "client_ip": client_ip,
        })  # fmt: skip
        self._write(
            tracking,
            "INSERT INTO {messages} (id, customer_id, channel, priority, month, requested_at,"
            " requested_by, client_ip) VALUES (%(id)s, %(customer_id)s, %(channel)s, %(priority)s,"
            " %(month)s, %(requested_at)s, %(requested_by)s, %(client_ip)s) ON CONFLICT (id) DO NOTHING",
            row,
        )

    def delivery_queued(
        self, delivery_id: UUID, message_id: UUID, customer_id: UUID, index: int, channel: str,
        month: str, recipient: str | None, queued_at: datetime, tracking: Tracking,
    ) -> None:  # fmt: skip
        row = {
            "id": delivery_id,
            "customer_id": customer_id,
            "month": month,
            "recipient": recipient,
        }
        sealed = self._sealed("deliveries", row)
        index_key = sealed["recipient"] and self.subject_key("deliveries", row, *self._recipient)
        self._write(
            tracking,
            "WITH added AS (INSERT INTO {deliveries} (id, message_id, customer_id, idx, channel,"
            " month, recipient, recipient_index, status, queued_at, updated_at) VALUES (%(id)s,"
            " %(message_id)s, %(customer_id)s, %(idx)s, %(channel)s, %(month)s, %(recipient)s,"
            " %(recipient_index)s, 'queued', %(at)s, %(at)s) ON CONFLICT (id) DO NOTHING"
            " RETURNING customer_id, (queued_at AT TIME ZONE 'UTC')::date AS day, channel, status),"
            " moved AS (SELECT customer_id, day, channel, status, 1 AS n FROM added),"
            " per_customer AS (INSERT INTO {daily} AS c (customer_id, day, channel, status, count)"
            "  SELECT customer_id, day, channel, status, n FROM moved ON CONFLICT"
            "  (customer_id, day, channel, status) DO UPDATE SET count = c.count + excluded.count)"
            " INSERT INTO {daily_all} AS c (day, channel, status, count)"
            " SELECT day, channel, status, sum(n) FROM moved GROUP BY day, channel, status"
            " ON CONFLICT (day, channel, status) DO UPDATE SET count = c.count + excluded.count",
            {
                **sealed,
                "message_id": message_id,
                "idx": index,
                "channel": channel,
                "recipient_index": index_key
                and blind_index(index_key, recipient_lookup_form(recipient or "")),
                "at": queued_at,
            },
        )

    @property
    def _recipient(self) -> tuple[str, str]:
        """The kind and subject column of `deliveries.recipient`, as the registry has them."""
        return sealed_view_columns("deliveries")["recipient"]

    def delivery_changed(
        self, delivery_id: UUID, change: Change, at: datetime, tracking: Tracking
    ) -> None:
        self._write(
            tracking,
            "WITH was AS (SELECT customer_id, (queued_at AT TIME ZONE 'UTC')::date AS day, channel,"
            "  status FROM {deliveries} WHERE id = %(id)s),"
            " now AS (UPDATE {deliveries} SET status = coalesce(%(status)s, status),"
            " attempts = coalesce(%(attempts)s, attempts), reason = CASE WHEN %(status)s::text IS NULL"
            " THEN reason ELSE %(reason)s END, provider = coalesce(%(provider)s, provider),"
            " acknowledged = coalesce(%(acknowledged)s, acknowledged), updated_at = %(at)s"
            " WHERE id = %(id)s RETURNING status),"
            " moved AS (SELECT was.customer_id, was.day, was.channel, was.status, -1 AS n"
            "  FROM was, now WHERE was.status <> now.status UNION ALL"
            "  SELECT was.customer_id, was.day, was.channel, now.status, 1"
            "  FROM was, now WHERE was.status <> now.status),"
            " per_customer AS (INSERT INTO {daily} AS c (customer_id, day, channel, status, count)"
            "  SELECT customer_id, day, channel, status, n FROM moved ON CONFLICT"
            "  (customer_id, day, channel, status) DO UPDATE SET count = c.count + excluded.count)"
            " INSERT INTO {daily_all} AS c (day, channel, status, count)"
            " SELECT day, channel, status, sum(n) FROM moved GROUP BY day, channel, status"
            " ON CONFLICT (day, channel, status) DO UPDATE SET count = c.count + excluded.count",
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
        self, customer_id: UUID | None, start: datetime, end: datetime, *, limit: int = 1000,
        recipient: str | None = None, before: tuple[datetime, UUID] | None = None,
    ) -> list[TrafficRow]:  # fmt: skip
        """Newest first; with `recipient` (its look-up form, one customer), only deliveries
        to it: matched by its blind index under each of the customer's live month keys."""
        indexes: list[bytes] | None = None
        if recipient is not None:
            if customer_id is None:
                raise ValueError("a search by recipient names the customer")
            kind, _ = self._recipient
            keys = self._keys()
            indexes = [
                blind_index(key, recipient)
                for subject in keys.live_subjects(customer_id, subject_name(kind, ""))
                if (key := keys.subject_key(customer_id, subject)) is not None
            ]
        # One statement per shape (whose, by recipient or not, from where): a generic plan
        # of `$1 IS NULL OR …` would use none of the indexes.
        conditions = ["d.queued_at >= %(start)s", "d.queued_at < %(end)s"]
        order = "d.queued_at DESC, d.id DESC"
        if customer_id is not None:
            # One customer's rows are read from its own slice of (customer_id, queued_at,
            # id), never by walking every customer's (queued_at, id) newest first and
            # filtering: for a customer with most of the rows the planner prices both
            # alike, but if its traffic is older than the others' that walk passes them
            # all (a million rows, a second). Ordered by customer_id too, the other index
            # would need a sort. `= ANY` of the one id, since `=` would make that order
            # key a constant the planner drops (a first index column's `= ANY` keeps it).
            conditions.append("d.customer_id = ANY(%(customers)s)")
            order = "d.customer_id DESC, " + order
        if indexes is not None:
            conditions.append("d.recipient_index = ANY(%(indexes)s)")
        if before is not None:
            conditions.append("(d.queued_at, d.id) < (%(at)s, %(id)s)")
        rows = self._read(
            self._shaped(
                "SELECT d.id AS delivery_id, d.message_id, d.customer_id, m.requested_at,"
                " m.requested_by, m.client_ip, d.channel, d.recipient, d.status, d.attempts,"
                " d.reason, d.updated_at, d.queued_at"
                " FROM {deliveries} d JOIN {messages} m ON m.id = d.message_id{where}"
                " ORDER BY {order} LIMIT %(limit)s",
                conditions,
                order=order,
            ),
            {
                "customers": [customer_id],
                "start": start,
                "end": end,
                "limit": limit,
                "indexes": indexes,
                "at": before and before[0],
                "id": before and before[1],
            },
        )
        opened = (
            self._opened(
                "deliveries", self._opened("messages", row, row["message_id"]), row["delivery_id"]
            )
            for row in rows
        )
        return [
            TrafficRow(**{**row, "reason": row["reason"] and FailureReason.read(row["reason"])})
            for row in opened
        ]

    def messages(self, query: MessageQuery) -> list[MessageRow]:
        at, after_id = query.before if query.before is not None else (None, None)
        return self._message_rows(
            {
                "id": None,
                "customer": query.customer_id,
                "channel": query.channel,
                "status": query.status,
                "since": query.since,
                "until": query.until,
                "at": at,
                "after": after_id,
                "limit": query.limit,
            }
        )

    def message_row(self, message_id: UUID) -> MessageRow | None:
        rows = self._message_rows({"id": message_id, "limit": 1})
        return rows[0] if rows else None

    def _message_rows(self, params: dict[str, Any]) -> list[MessageRow]:
        """Messages with their deliveries counted per status; newest first. One statement
        per shape: only the conditions given (a generic plan of `$1 IS NULL OR …` would
        use no index)."""
        given = {name for name, value in params.items() if value is not None}
        conditions = [
            condition
            for name, condition in (
                ("id", "m.id = %(id)s"),
                ("customer", "m.customer_id = %(customer)s"),
                ("channel", "m.channel = %(channel)s"),
                ("since", "m.requested_at >= %(since)s"),
                ("until", "m.requested_at < %(until)s"),
                (
                    "status",
                    "EXISTS (SELECT 1 FROM {deliveries} d"
                    " WHERE d.message_id = m.id AND d.status = %(status)s)",
                ),
                ("at", "(m.requested_at, m.id) < (%(at)s, %(after)s)"),
            )
            if name in given
        ]
        rows = self._read(
            self._shaped(
                "SELECT m.id, m.customer_id, m.channel, m.priority, m.requested_at,"
                " m.requested_by, coalesce((SELECT json_object_agg(s.status, s.n) FROM"
                " (SELECT d.status, count(*)::int AS n FROM {deliveries} d"
                "  WHERE d.message_id = m.id GROUP BY d.status) s), '{{}}') AS counts"
                " FROM {messages} m{where}{order} LIMIT %(limit)s",
                conditions,
                # One message by its id needs no order.
                order="" if "id" in given else " ORDER BY m.requested_at DESC, m.id DESC",
            ),
            params,
        )
        return [MessageRow(**row) for row in rows]

    def deliveries_of(
        self, message_id: UUID, *, after_index: int | None = None, limit: int = 50
    ) -> list[DeliveryRow]:
        conditions = ["message_id = %(message)s"]
        if after_index is not None:
            conditions.append("idx > %(after)s")
        rows = self._read(
            self._shaped(
                "SELECT id, message_id, customer_id, idx AS index, channel, recipient, status,"
                " attempts, reason, provider, acknowledged, updated_at FROM {deliveries}{where}"
                " ORDER BY idx LIMIT %(limit)s",
                conditions,
            ),
            {"message": message_id, "after": after_index, "limit": limit},
        )
        opened = (self._opened("deliveries", row, row["id"]) for row in rows)
        return [
            DeliveryRow(**{**row, "reason": row["reason"] and FailureReason.read(row["reason"])})
            for row in opened
        ]

    def daily_counts(self, customer_id: UUID | None, start: date, end: date) -> list[DailyCount]:
        if customer_id is None:
            rows = self._read(
                "SELECT day, NULL::uuid AS customer_id, channel, status, count FROM {daily_all}"
                " WHERE day >= %(start)s AND day <= %(end)s AND count <> 0"
                " ORDER BY day, channel, status",
                {"start": start, "end": end},
            )
        else:
            rows = self._read(
                "SELECT day, customer_id, channel, status, count FROM {daily}"
                " WHERE customer_id = %(customer)s AND day >= %(start)s AND day <= %(end)s"
                " AND count <> 0 ORDER BY day, channel, status",
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
    indexes = ("customer_position",)
    retired_indexes = ("customer",)  # (customer_id, at): not the pages' order

    def schema_statements(self) -> list[str]:
        return [
            "CREATE TABLE IF NOT EXISTS {entries} (notification_id bigint PRIMARY KEY,"
            " at timestamptz NOT NULL, kind text NOT NULL, customer_id uuid, summary text NOT NULL)",
            "CREATE INDEX IF NOT EXISTS {customer_position_idx} ON {entries}"
            " (customer_id, notification_id)",
        ]

    def record(self, entry: LedgerEntry, tracking: Tracking) -> None:
        self._write(
            tracking,
            "INSERT INTO {entries} (notification_id, at, kind, customer_id, summary)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (notification_id) DO NOTHING",
            (tracking.notification_id, entry.at, entry.kind, entry.customer_id, entry.summary),
        )

    def entries(
        self, *, customer_id: UUID | None = None, limit: int = 500, before: int | None = None
    ) -> list[LedgerEntry]:
        # One statement per shape (whose, from where).
        conditions = [] if customer_id is None else ["customer_id = %(customer)s"]
        if before is not None:
            conditions.append("notification_id < %(before)s")
        rows = self._read(
            self._shaped(
                "SELECT notification_id AS position, at, kind, customer_id, summary"
                " FROM {entries}{where} ORDER BY notification_id DESC LIMIT %(limit)s",
                conditions,
            ),
            {"customer": customer_id, "limit": limit, "before": before},
        )
        return [LedgerEntry(**row) for row in rows]


class PostgresInvoicesView(_View, InvoicesView):
    """Every invoice's row, without personal data; listed by number through an index in
    that order, of all customers or of one."""

    tables = ("invoices",)
    indexes = ("number", "customer_number")

    def schema_statements(self) -> list[str]:
        return [
            "CREATE TABLE IF NOT EXISTS {invoices} (id uuid PRIMARY KEY, customer_id uuid NOT NULL,"
            " number bigint NOT NULL, month text NOT NULL, fiscal_year text NOT NULL,"
            " issued_on date NOT NULL, due_on date NOT NULL, issued_at timestamptz NOT NULL,"
            " total_cents bigint NOT NULL, paid_cents bigint NOT NULL DEFAULT 0,"
            " last_paid_on date, overdue boolean NOT NULL DEFAULT false)",
            "CREATE UNIQUE INDEX IF NOT EXISTS {number_idx} ON {invoices} (number)",
            "CREATE INDEX IF NOT EXISTS {customer_number_idx} ON {invoices} (customer_id, number)",
        ]

    def issued(self, row: InvoiceRow, tracking: Tracking) -> None:
        self._write(
            tracking,
            "INSERT INTO {invoices} (id, customer_id, number, month, fiscal_year, issued_on,"
            " due_on, issued_at, total_cents, paid_cents, last_paid_on, overdue)"
            " VALUES (%(id)s, %(customer_id)s, %(number)s, %(month)s, %(fiscal_year)s,"
            " %(issued_on)s, %(due_on)s, %(issued_at)s, %(total_cents)s, %(paid_cents)s,"
            " %(last_paid_on)s, %(overdue)s) ON CONFLICT (id) DO NOTHING",
            msgspec.structs.asdict(row),
        )

    def paid(self, invoice_id: UUID, amount_cents: int, paid_on: date, tracking: Tracking) -> None:
        self._write(
            tracking,
            "UPDATE {invoices} SET paid_cents = paid_cents + %s, last_paid_on = %s WHERE id = %s",
            (amount_cents, paid_on, invoice_id),
        )

    def became_overdue(self, invoice_id: UUID, tracking: Tracking) -> None:
        self._write(tracking, "UPDATE {invoices} SET overdue = true WHERE id = %s", (invoice_id,))

    def invoices(
        self, *, customer_id: UUID | None = None, after: int | None = None, limit: int = PAGE_SIZE
    ) -> list[InvoiceRow]:
        # One statement per shape (whose, from where), each in the order of an index.
        conditions = [] if customer_id is None else ["customer_id = %(customer)s"]
        if after is not None:
            conditions.append("number > %(after)s")
        rows = self._read(
            self._shaped(
                "SELECT id, customer_id, number, month, fiscal_year, issued_on, due_on,"
                " issued_at, total_cents, paid_cents, last_paid_on, overdue"
                " FROM {invoices}{where} ORDER BY number LIMIT %(limit)s",
                conditions,
            ),
            {"customer": customer_id, "after": after, "limit": limit},
        )
        return [InvoiceRow(**row) for row in rows]

    def overdue_of(self, customer_ids: list[UUID]) -> dict[UUID, int]:
        rows = self._read(
            "SELECT customer_id, sum(total_cents - paid_cents) AS outstanding FROM {invoices}"
            " WHERE customer_id = ANY(%s) AND overdue AND total_cents > paid_cents"
            " GROUP BY customer_id",
            (customer_ids,),
        )
        return {row["customer_id"]: int(row["outstanding"]) for row in rows}


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

    view: Annotated[str, Meta(description="the view's name")]
    failing_at: Annotated[
        int, Meta(description="the log position (notification id) of the event it cannot take")
    ]
    error_type: Annotated[str, Meta(description="the error's type (never its text)")]
    since: Annotated[datetime, Meta(description="the first failed attempt at this event")]
    attempts: Annotated[int, Meta(description="attempts at this event so far")]
    seen: Annotated[
        int,
        Meta(description="the log's head at the last attempt: a later event may unblock it"),
    ]


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
        return [ViewFailure(**row) for row in rows]

    def failure_of(self, view: str) -> ViewFailure | None:
        return next((f for f in self.failures() if f.view == view), None)

    def _qualified(self) -> str:
        schema = self.datastore.schema.replace('"', '""')
        return f'"{schema}".picasse_view_status'
