"""Audits of the stored log: hash chains recomputed from raw rows, replays compared with the views."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import msgspec
import psycopg
from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresDatastore
from eventsourcing.projection import Projection
from psycopg import sql
from psycopg.rows import tuple_row

from picasse.adapters.postgres.chain import GENESIS, chain_hash
from picasse.adapters.postgres.notices import connection_kwargs
from picasse.adapters.postgres.views import PageBatching, page_batched
from picasse.domain.personal import required_view_columns, sealed_view_columns


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


# Replay: the whole log into scratch copies of the views, compared with the live views.
#
# A scratch view is the live view's own class under another tracking table name
# (`audit_<run>_accounts_view_tracking`), so it gets tables of its own. The live views are
# read in one REPEATABLE READ snapshot taken before the replay starts, and each scratch
# view replays exactly up to its live view's position in that snapshot: a platform that
# keeps running meanwhile cannot cause a false mismatch. Scratch tables hold plaintext as
# views do; they are UNLOGGED (never in the WAL, never on a replica) and dropped at the
# end, and the tables of a run that was killed are dropped by the next run.

SCRATCH_PREFIX = "audit_"
# Events per page (read, then written in one transaction). Not more: the counts the views
# keep are rows every delivery updates, and each update in a transaction leaves a version
# the next one's ON CONFLICT check walks past (1,000 a page: a third of the server's time).
REPLAY_PAGE_SIZE = 250
LISTED_MISMATCHES = 100  # the report lists this many; it counts them all
RUN_LOCKS = 0x70617564  # advisory lock class of audit runs: one lock per run id
LOCK_TIMEOUT = "10s"  # how long to wait for a view rebuild (TRUNCATE) to finish

# Columns whose values a report may show: enumerations, flags and counters. Any other
# value is described only as set, null or erased, so no report carries personal data.
SHOWN_COLUMNS = frozenset(
    {"subscription", "role", "disabled", "erased", "channel", "priority", "month", "status",
     "attempts", "acknowledged", "idx", "kind", "revoked", "scopes"}
)  # fmt: skip
# Per view table: the column naming its customer, and the time that places a row in a period.
SCOPE_COLUMNS: dict[str, tuple[str | None, str | None]] = {
    "customers": ("id", "registered_at"),
    "users": ("customer_id", "added_at"),
    "api_keys": ("customer_id", "created_at"),
    "messages": ("customer_id", "requested_at"),
    "deliveries": ("customer_id", "queued_at"),
    "entries": ("customer_id", "at"),
    "invoices": ("customer_id", "issued_at"),
    # Counts the projections keep: a customer's in its scope, all of them in any period;
    # counts over every customer are no customer's, so outside any customer's scope.
    "daily": ("customer_id", None),
    "user_counts": ("customer_id", None),
    "daily_all": (None, None),
    "customer_counts": (None, None),
}

ViewClasses = Mapping[str, tuple[type[Projection[Any]], type[Any]]]


class AuditCannotRun(Exception):
    """The replay cannot be done here: no live views to compare with, or one is being rebuilt."""


class Scope(msgspec.Struct, frozen=True):
    """Which rows to compare: one customer's, and/or those of the period [start, end)."""

    customer: UUID | None = None
    start: datetime | None = None
    end: datetime | None = None


EVERYTHING = Scope()


class Mismatch(msgspec.Struct, frozen=True):
    """One difference between a live view and the replay. Values are described, not shown,
    except for enumerations, flags and counters (`SHOWN_COLUMNS`)."""

    view: str
    table: str
    row: str  # the row's primary key
    column: str | None  # None: the row exists on one side only
    live: str  # "erased", "null", "set", "present", "missing", or a shown value
    replayed: str


class TableComparison(msgspec.Struct, frozen=True):
    view: str
    table: str
    rows: int  # distinct rows compared (present on either side)
    erased: int  # personal columns that hold nothing (erased) in the replayed rows
    mismatches: int


class ReplayCounts(msgspec.Struct, frozen=True):
    events: int  # events read and decoded
    applied: int  # (event, view) pairs processed
    erased_values: int  # values that read as erased, their key destroyed
    seconds: float


class ReplayReport(msgspec.Struct, frozen=True):
    ok: bool
    head: int  # the log's last notification id in the snapshot
    positions: dict[str, int]  # per view: the notification id it was compared at
    events: int  # events replayed
    replay_seconds: float
    erased_values: int  # values met while replaying that read as erased
    erased_columns: int  # personal columns erased (NULL) in the replayed rows compared
    tables: list[TableComparison]
    mismatch_count: int
    mismatches: list[Mismatch]  # the first LISTED_MISMATCHES of them


# Replaying


class _Committer:
    """Commits each page's writes in a thread of its own while the caller reads, decodes
    and projects the next page: PostgreSQL executes one page while Python works on the
    next. Pages commit one after another, in their order, at most one in flight; leaving
    waits for it (an error in it is raised here, or at the next page)."""

    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="replay-commit")
        self._pending: Future[None] | None = None

    def __enter__(self) -> _Committer:
        return self

    def commit(self, writes: list[Callable[[], None]]) -> None:
        self.wait()
        if writes:
            self._pending = self._thread.submit(_each, writes)

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def __exit__(self, kind: object, *exc: object) -> None:
        try:
            if kind is None:
                self.wait()
        finally:
            self._thread.shutdown(wait=True)  # a page in flight ends before anything else


def _each(calls: list[Callable[[], None]]) -> None:
    for call in calls:
        call()


def view_keys(view_class: type[Any], keys: Any) -> dict[str, Any]:
    """The key store, for views built on our plumbing (they seal their personal columns)."""
    return {"keys": keys} if hasattr(view_class, "_sealed") else {}


def replay_into_views(
    recorder: Any,
    mapper: Any,
    application_name: str,
    targets: Mapping[str, tuple[Projection[Any], int]],
    *,
    only_topics: bool = False,
    page_size: int = REPLAY_PAGE_SIZE,
    progress: Callable[[int, int], None] | None = None,
    after: int = 0,
) -> ReplayCounts:
    """Replay the log synchronously into projections, each from just after the position
    its view has recorded up to and including the stop position given with it. Every
    event in that stretch is read and decoded a page at a time (the page's keys fetched in
    one round trip), or with `only_topics` just those of the projections' topics, as the
    projection runner reads them; a projection processes those of its topics.
    `progress(events done, events in all)` is called after each page."""
    plans = [
        (projection, projection.view.max_tracking_id(application_name) or 0, last, frozenset(projection.topics))
        for projection, last in targets.values()
    ]  # fmt: skip
    # `after`: every projection has taken its events up to there already.
    start = max(after, min((first for _, first, _, _ in plans), default=0)) + 1
    stop = max((last for _, _, last, _ in plans), default=0)
    topics = sorted({t for *_, of in plans for t in of}) if only_topics else []
    total = _events_between(recorder, start, stop, topics)
    batched = [p.view for p, _ in targets.values() if isinstance(p.view, PageBatching)]
    erased_count = mapper.erased_count
    events = applied = erased = 0
    position = start
    started = time.perf_counter()
    if progress is not None:
        progress(0, total)
    with _Committer() as committer:
        while position <= stop:
            page = recorder.select_notifications(
                position, limit=page_size, stop=stop, topics=topics
            )
            if not page:
                break
            decoded = mapper.to_domain_events(page)  # the page's keys in one query
            for notification, domain_event in zip(page, decoded, strict=True):
                erased += erased_count(domain_event)
                tracking = Tracking(application_name, notification.id)
                for projection, first, last, subscribed in plans:
                    if first < notification.id <= last and notification.topic in subscribed:
                        projection.process_event(domain_event, tracking)
                        applied += 1
            committer.commit([w for w in (view.taken() for view in batched) if w is not None])
            events += len(page)
            position = page[-1].id + 1
            if progress is not None:
                progress(events, total)
    return ReplayCounts(events, applied, erased, time.perf_counter() - started)


def _events_between(recorder: Any, start: int, stop: int, topics: list[str]) -> int:
    statement = sql.SQL(
        "SELECT count(*) AS n FROM {} WHERE notification_id BETWEEN %s AND %s"
        " AND (cardinality(%s::text[]) = 0 OR topic = ANY(%s))"
    ).format(sql.Identifier(recorder.datastore.schema, recorder.events_table_name))
    with recorder.datastore.get_connection() as conn:
        row = conn.execute(statement, (start, stop, topics, topics)).fetchone()
    return int(row["n"]) if row else 0


def live_tracking_table(projection_class: type[Projection[Any]]) -> str:
    """The live view's tracking table, named as eventsourcing's PostgresFactory names it."""
    return f"{projection_class.name.lower()}_tracking"


@contextmanager
def scratch_views(
    datastore: PostgresDatastore, views: ViewClasses, *, run: str | None = None, keys: Any = None
) -> Iterator[dict[str, Projection[Any]]]:
    """Empty scratch copies of the views (their own classes, committing a page of writes
    per transaction) in `audit_<run>_…` tables, dropped on the way out whatever happens."""
    run = run or uuid4().hex[:8]
    made: list[Any] = []
    projections: dict[str, Projection[Any]] = {}
    try:
        for name, (projection_class, view_class) in views.items():
            tracking_table = f"{SCRATCH_PREFIX}{run}_{live_tracking_table(projection_class)}"
            view = page_batched(view_class)(
                datastore, tracking_table_name=tracking_table, **view_keys(view_class, keys)
            )
            made.append(view)
            view.create_table()
            with datastore.transaction(commit=True) as curs:
                for table in _tables_of(view):
                    curs.execute(sql.SQL("ALTER TABLE {} SET UNLOGGED").format(table))
            projections[name] = projection_class(view)
        yield projections
    finally:
        tables = [table for view in made for table in _tables_of(view)]
        if tables:
            with datastore.transaction(commit=True) as curs:
                curs.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.SQL(", ").join(tables)))


def _tables_of(view: Any) -> list[sql.Identifier]:
    """A view's tables, its tracking table last."""
    tracking = sql.Identifier(view.datastore.schema, view.tracking_table_name)
    return [*getattr(view, "t", {}).values(), tracking]


def _index_like(
    datastore: PostgresDatastore, live: Mapping[str, Any], scratch: Mapping[str, Any]
) -> None:
    """Give the scratch tables the live tables' indexes they lack. A view names its indexes
    without its table prefix, so in the same schema a scratch copy finds the names taken
    and gets none; without them every replayed erasure (UPDATE … WHERE customer_id = …)
    would scan a whole table."""
    indexes = (
        "SELECT i.indisunique AS is_unique,"
        " substring(pg_get_indexdef(i.indexrelid) from ' USING .*$') AS method"
        " FROM pg_index i WHERE i.indrelid = %s::regclass AND NOT i.indisprimary ORDER BY 2"
    )
    with datastore.transaction(commit=True) as curs:
        for name, live_view in live.items():
            scratch_view = scratch[name]
            prefix = scratch_view.tracking_table_name.removesuffix("_tracking")
            for kind, live_table in live_view.t.items():
                table = scratch_view.t[kind]
                has = {r["method"] for r in curs.execute(indexes, (table.as_string(curs),))}
                wanted = curs.execute(indexes, (live_table.as_string(curs),)).fetchall()
                for n, index in enumerate(wanted):
                    if index["method"] in has:
                        continue
                    curs.execute(
                        sql.SQL("CREATE {unique}INDEX {name} ON {table}{method}").format(
                            unique=sql.SQL("UNIQUE " if index["is_unique"] else ""),
                            name=sql.Identifier(f"{prefix}_{kind}_{n}"),
                            table=table,
                            method=sql.SQL(index["method"]),  # the live index's own definition
                        )
                    )


# The audit's own session: the run's lock and the live views' snapshot


def _run_lock(run: str) -> tuple[int, int]:
    return RUN_LOCKS, int(run, 16) - 2**31  # the run id's 32 bits as a signed int4


class _AuditSession:
    """A connection of the audit's own. It holds the run's advisory lock as long as the
    run lives (its scratch tables are in use), drops the tables of runs whose lock nobody
    holds any more (killed before they could clean up), then reads the live views in one
    REPEATABLE READ snapshot, opened by `snapshot` and closed with the connection."""

    def __init__(self, datastore: PostgresDatastore, events_table: str = "") -> None:
        self.schema = datastore.schema
        self.events_table = events_table
        self.run = uuid4().hex[:8]
        self.conn = psycopg.connect(**connection_kwargs(datastore), autocommit=True)

    def __enter__(self) -> _AuditSession:
        try:
            self.conn.execute("SELECT pg_advisory_lock(%s::int4, %s::int4)", _run_lock(self.run))
            self._drop_abandoned_runs()
        except BaseException:
            self.conn.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()  # ends the snapshot and lets go of the run's lock

    def _scratch_tables(self, run: str = "") -> list[str]:
        pattern = f"{SCRATCH_PREFIX}{run}".replace("_", r"\_") + "%"
        rows = self.conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename LIKE %s",
            (self.schema, pattern),
        ).fetchall()
        return [name for (name,) in rows]

    def _drop_abandoned_runs(self) -> None:
        runs = {name[len(SCRATCH_PREFIX) :].partition("_")[0] for name in self._scratch_tables()}
        for run in sorted(runs - {self.run}):
            if len(run) != 8 or any(c not in "0123456789abcdef" for c in run):
                continue  # not a table of ours
            taken = self.conn.execute(
                "SELECT pg_try_advisory_lock(%s::int4, %s::int4)", _run_lock(run)
            )
            row = taken.fetchone()
            if row is None or not row[0]:
                continue  # that run is still going
            try:
                tables = self._scratch_tables(run + "_")
                if tables:
                    self.conn.execute(
                        sql.SQL("DROP TABLE IF EXISTS {}").format(
                            sql.SQL(", ").join(sql.Identifier(self.schema, t) for t in tables)
                        )
                    )
            finally:
                self.conn.execute("SELECT pg_advisory_unlock(%s::int4, %s::int4)", _run_lock(run))

    def check_built(self, live: Mapping[str, Any]) -> None:
        """AuditCannotRun unless every live view's tables exist."""
        for name, view in live.items():
            for table in _tables_of(view):
                found = self.conn.execute(
                    "SELECT to_regclass(%s) IS NOT NULL", (table.as_string(self.conn),)
                ).fetchone()
                if not (found and found[0]):
                    raise AuditCannotRun(
                        f"the live {name} view has not been built in schema {self.schema!r}:"
                        " run `picasse project` (or `picasse up`) first"
                    )

    def settled(self, live: Mapping[str, Any], views: ViewClasses, application_name: str) -> int:
        """A log position every live view has taken in all of its events up to (now, no
        snapshot held): the least, over the views, of the event before the first of its
        topics it has yet to take (the head, for a view that has taken all of them)."""
        head = self._number(
            sql.SQL("SELECT max(notification_id) FROM {}").format(
                sql.Identifier(self.schema, self.events_table)
            ),
            (),
        )
        settled = head
        for name, view in live.items():
            statement = sql.SQL(
                "SELECT min(notification_id) FROM {} WHERE notification_id > %s AND topic = ANY(%s)"
            ).format(sql.Identifier(self.schema, self.events_table))
            position = self._number(
                sql.SQL("SELECT max(notification_id) FROM {} WHERE application_name = %s").format(
                    sql.Identifier(self.schema, view.tracking_table_name)
                ),
                (application_name,),
            )
            next_one = self._number(statement, (position, list(views[name][0].topics)))
            if next_one:
                settled = min(settled, next_one - 1)
        return settled

    def snapshot(
        self, live: Mapping[str, Any], application_name: str, events_table: str
    ) -> tuple[dict[str, int], int]:
        """Open the snapshot the live views are compared in; return each view's position
        and the log's head. A view rebuild (its swap) waits for the audit to finish."""
        self.check_built(live)
        self.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        self.conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
        tables = [table for view in live.values() for table in _tables_of(view)]
        try:
            self.conn.execute(
                sql.SQL("LOCK TABLE {} IN ACCESS SHARE MODE").format(sql.SQL(", ").join(tables))
            )
        except psycopg.errors.LockNotAvailable:
            raise AuditCannotRun(
                "a live view is being rebuilt: audit again once it is done"
            ) from None
        positions = {}
        for name, view in live.items():
            statement = sql.SQL(
                "SELECT max(notification_id) FROM {} WHERE application_name = %s"
            ).format(sql.Identifier(self.schema, view.tracking_table_name))
            positions[name] = self._number(statement, (application_name,))
        head = sql.SQL("SELECT max(notification_id) FROM {}").format(
            sql.Identifier(self.schema, events_table)
        )
        return positions, self._number(head, ())

    def _number(self, statement: sql.Composed, params: tuple[Any, ...]) -> int:
        row = self.conn.execute(statement, params).fetchone()
        return int(row[0]) if row and row[0] is not None else 0


# Comparing


class _Shape(msgspec.Struct, frozen=True):
    columns: list[str]
    key: list[int]  # positions of the primary key's columns
    text_key: list[bool]  # which of them are text (ordered in code point order)


def _shape_of(conn: psycopg.Connection[Any], table: sql.Identifier) -> _Shape:
    regclass = table.as_string(conn)
    columns = [
        name
        for (name,) in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
            " AND NOT attisdropped ORDER BY attnum",
            (regclass,),
        )
    ]
    key = conn.execute(
        "SELECT a.attname, a.atttypid IN ('text'::regtype, 'varchar'::regtype)"
        " FROM pg_index i, unnest(i.indkey) WITH ORDINALITY AS k(attnum, n), pg_attribute a"
        " WHERE i.indrelid = %s::regclass AND i.indisprimary"
        " AND a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.n",
        (regclass,),
    ).fetchall()
    if not key:
        raise AuditCannotRun(f"view table {regclass} has no primary key to compare rows by")
    return _Shape(columns, [columns.index(name) for name, _ in key], [text for _, text in key])


def _rows_in_scope(
    conn: psycopg.Connection[Any], table: sql.Identifier, shape: _Shape, kind: str, scope: Scope
) -> Iterator[tuple[Any, ...]]:
    """The table's rows in scope in key order (text keys in code point order, as Python
    compares them), streamed through a server-side cursor; `conn` must be in a transaction."""
    customer_column, time_column = SCOPE_COLUMNS.get(kind, (_customer_column(shape), None))
    conditions: list[sql.Composable] = []
    if scope.customer is not None and customer_column is not None:
        conditions.append(sql.SQL("{} = %(customer)s").format(sql.Identifier(customer_column)))
    elif scope.customer is not None and kind in SCOPE_COLUMNS:
        conditions.append(sql.SQL("false"))  # no customer's rows
    if scope.start is not None and time_column is not None:
        conditions.append(sql.SQL("{} >= %(start)s").format(sql.Identifier(time_column)))
    if scope.end is not None and time_column is not None:
        conditions.append(sql.SQL("{} < %(end)s").format(sql.Identifier(time_column)))
    order = [
        sql.SQL('{} COLLATE "C"' if text else "{}").format(sql.Identifier(shape.columns[i]))
        for i, text in zip(shape.key, shape.text_key, strict=True)
    ]
    statement = sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY {}").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in shape.columns),
        table,
        sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("true"),
        sql.SQL(", ").join(order),
    )
    params = {"customer": scope.customer, "start": scope.start, "end": scope.end}
    with conn.cursor(name=f"audit_{kind}", row_factory=tuple_row) as curs:
        curs.itersize = 2000
        curs.execute(statement, params)
        yield from curs


def _customer_column(shape: _Shape) -> str | None:
    return next((c for c in ("customer_id", "tenant_id") if c in shape.columns), None)


def _describe(kind: str, column: str, value: Any) -> str:
    if value is None:
        return "erased" if column in required_view_columns(kind) else "null"
    if column in SHOWN_COLUMNS:
        return str(value).lower() if isinstance(value, bool) else str(value)
    return "set"


def _row_label(key: tuple[Any, ...]) -> str:
    if all(isinstance(part, UUID | int) for part in key):
        return "/".join(str(part) for part in key)
    return "(a row whose key is not shown)"


class _Findings:
    def __init__(self) -> None:
        self.tables: list[TableComparison] = []
        self.listed: list[Mismatch] = []
        self.count = 0

    def note(self, mismatch: Mismatch) -> None:
        self.count += 1
        if len(self.listed) < LISTED_MISMATCHES:
            self.listed.append(mismatch)


def compare_views(
    live_conn: psycopg.Connection[Any],
    live: Mapping[str, Any],
    replayed: Mapping[str, Any],
    scope: Scope = EVERYTHING,
) -> tuple[list[TableComparison], list[Mismatch], int]:
    """Compare every table of every view row by row, column by column: the live rows as
    `live_conn`'s transaction sees them, the replayed rows as committed. Returns the
    tables compared, the first mismatches, and how many mismatches there are in all."""
    findings = _Findings()
    for name, live_view in live.items():
        replayed_view = replayed[name]
        for kind, live_table in live_view.t.items():
            shape = _shape_of(live_conn, live_table)
            with replayed_view.datastore.get_connection() as conn, conn.transaction():
                _compare_table(
                    findings,
                    name,
                    kind,
                    shape,
                    _rows_in_scope(live_conn, live_table, shape, kind, scope),
                    _rows_in_scope(conn, replayed_view.t[kind], shape, kind, scope),
                    getattr(live_view, "keys", None),
                    getattr(live_view, "blind_indexes", {}).get(kind, ()),
                )
    return findings.tables, findings.listed, findings.count


def _compare_table(
    findings: _Findings,
    view: str,
    kind: str,
    shape: _Shape,
    live_rows: Iterator[tuple[Any, ...]],
    replayed_rows: Iterator[tuple[Any, ...]],
    keys: Any = None,
    blind_indexes: tuple[str, ...] = (),
) -> None:
    """A merge join of two key-ordered row streams. Personal columns hold values sealed
    deterministically, so equal values are equal bytes; one whose key is destroyed reads as
    erased (NULL), as the replay, which saw it erased, wrote it."""
    # The registry's personal columns of this table that are NULL only once erased.
    personal = required_view_columns(kind)
    personal_at = [i for i, column in enumerate(shape.columns) if column in personal]
    rows = erased = 0
    before = findings.count

    def key(row: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(row[i] for i in shape.key)

    keyed = {*sealed_view_columns(kind), *blind_indexes}  # values that start with a key id
    sealed_at = [i for i, column in enumerate(shape.columns) if column in keyed]

    gone: dict[bytes, bool] = {}  # per key id: destroyed (its values read as erased)

    def reads_erased(value: bytes) -> bool:
        key_id = bytes(value[:16])
        if len(value) <= 16:
            return False  # not a value any key of ours sealed: compared as it is
        if key_id not in gone:
            gone[key_id] = keys.opening_key(key_id) is None and keys.was_destroyed(key_id)
        return gone[key_id]

    def opened(rows: Iterator[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
        for row in rows:
            if keys is None or not sealed_at:
                yield row
                continue
            values = list(row)
            for i in sealed_at:
                if values[i] is not None and reads_erased(values[i]):
                    values[i] = None
            yield tuple(values)

    live_rows, replayed_rows = opened(live_rows), opened(replayed_rows)
    live_row, replayed_row = next(live_rows, None), next(replayed_rows, None)
    while live_row is not None or replayed_row is not None:
        rows += 1
        if replayed_row is None or (live_row is not None and key(live_row) < key(replayed_row)):
            # The loop's condition: with no replayed row left, a live one is (mypy cannot tell).
            row = _row_label(key(live_row))  # type: ignore[arg-type]
            findings.note(Mismatch(view, kind, row, None, "present", "missing"))
            live_row = next(live_rows, None)
            continue
        erased += sum(1 for i in personal_at if replayed_row[i] is None)
        if live_row is None or key(replayed_row) < key(live_row):
            row = _row_label(key(replayed_row))
            findings.note(Mismatch(view, kind, row, None, "missing", "present"))
            replayed_row = next(replayed_rows, None)
            continue
        for i, column in enumerate(shape.columns):
            if live_row[i] != replayed_row[i]:
                findings.note(
                    Mismatch(
                        view,
                        kind,
                        _row_label(key(live_row)),
                        column,
                        _describe(kind, column, live_row[i]),
                        _describe(kind, column, replayed_row[i]),
                    )
                )
        live_row, replayed_row = next(live_rows, None), next(replayed_rows, None)
    findings.tables.append(TableComparison(view, kind, rows, erased, findings.count - before))


def audit_replay(
    recorder: Any,
    mapper: Any,
    application_name: str,
    views: ViewClasses,
    scope: Scope = EVERYTHING,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayReport:
    """Replay the whole log into scratch views and compare them with the live ones, each at
    its live view's position in one snapshot. No scratch table outlives the call."""
    datastore: PostgresDatastore = recorder.datastore
    live = {
        name: view_class(
            datastore,
            tracking_table_name=live_tracking_table(projection_class),
            **view_keys(view_class, mapper.keys),
        )
        for name, (projection_class, view_class) in views.items()
    }
    with _AuditSession(datastore, recorder.events_table_name) as session:
        session.check_built(live)
        with scratch_views(datastore, views, run=session.run, keys=mapper.keys) as scratch:
            _index_like(datastore, live, {name: p.view for name, p in scratch.items()})
            # Most of the log is replayed before the snapshot is opened: a snapshot held
            # that long keeps every dead row version in the database, and the counts the
            # views keep are rows updated by each delivery, so each update would walk a
            # longer chain of versions than the one before.
            settled = session.settled(live, views, application_name)
            first = replay_into_views(
                recorder,
                mapper,
                application_name,
                {name: (scratch[name], settled) for name in views},
                progress=progress,
            )
            positions, head = session.snapshot(live, application_name, recorder.events_table_name)
            rest = replay_into_views(
                recorder,
                mapper,
                application_name,
                {name: (scratch[name], positions[name]) for name in views},
                after=settled,
                progress=progress,
            )
            counts = ReplayCounts(
                first.events + rest.events,
                first.applied + rest.applied,
                first.erased_values + rest.erased_values,
                first.seconds + rest.seconds,
            )
            replayed = {name: projection.view for name, projection in scratch.items()}
            tables, mismatches, count = compare_views(session.conn, live, replayed, scope)
    return ReplayReport(
        ok=count == 0,
        head=head,
        positions=positions,
        events=counts.events,
        replay_seconds=counts.seconds,
        erased_values=counts.erased_values,
        erased_columns=sum(t.erased for t in tables),
        tables=tables,
        mismatch_count=count,
        mismatches=mismatches,
    )
