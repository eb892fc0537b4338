"""The event store on PostgreSQL: sealing mapper, hash-chained events table, key store.

Selected by the eventsourcing environment: PERSISTENCE_MODULE=picasse.adapters.postgres.store:Factory
plus the library's POSTGRES_* settings and PICASSE_MASTER_KEY_FILE.

The factory refuses, when it is made, each of the library's settings it does not
honour, rather than ignore it: a cipher or compressor (we seal field by field), other
mappers, transcoders or recorders, database functions and process or aggregate
recorders (they would skip writing new keys), and snapshots (a snapshot's state is
typed Any, so nothing could seal it, and it would outlive erasure).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID, SafeUUID

import psycopg
from eventsourcing.application import Application
from eventsourcing.persistence import (
    EventStore,
    IntegrityError,
    InterfaceError,
    InternalError,
    Mapper,
    Notification,
    OperationalError,
    Recording,
    StoredEvent,
    Transcoder,
)
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore, PostgresFactory
from eventsourcing.utils import Environment, retry, strtobool
from psycopg import Error as DatabaseError
from psycopg import sql
from psycopg.abc import Loader
from psycopg.pq import Format
from psycopg.rows import tuple_row

from picasse.adapters.crypto import SealingMapper
from picasse.adapters.master_key import read_master_key
from picasse.adapters.postgres.arrays import bytea_array, int8_array, text_array, uuid_array
from picasse.adapters.postgres.chain import GENESIS, chain_hash
from picasse.adapters.postgres.keystore import KeyRace, PostgresKeyStore
from picasse.adapters.postgres.notices import ACCOUNTS_CHANGED
from picasse.adapters.postgres.roles import serialize_schema_changes
from picasse.domain.api_keys import ACCOUNT_SOURCES
from picasse.domain.billing import BILLING_ACCOUNT_TOPICS
from picasse.domain.termination import DestroyedEpoch
from picasse.domain.webhooks import ENDPOINT_TOPICS

KEY_RACE_ATTEMPTS = 3
# Aggregates whose latest hash a recorder keeps (about 300 bytes each). Full, it forgets
# them all before it keeps more (one save or read may go past it by its own aggregates),
# and reads the predecessors' hashes again until it has seen them.
LATEST_HASHES_KEPT = 20_000
Versioned = tuple[int, bytes]  # an event's version and its chain hash


# Topics whose events are read across the whole log, each set with a partial index of just
# its rows (by the index's name, after the events table's): reading them costs their rows,
# however long the log has grown. Their events are few; an index over every topic would
# slow every save. The webhook endpoints' life, which the relay reads when it starts; the
# billing accounts' (plans and openings), which each invoicing and overdue run reads.
INDEXED_TOPICS: dict[str, tuple[str, ...]] = {
    "endpoint_events": ENDPOINT_TOPICS,
    "billing_accounts": BILLING_ACCOUNT_TOPICS,
}


def topics_literal(topics: Sequence[str]) -> sql.Composable:
    """Topics as one SQL literal, written alike in a partial index and in the queries that
    read it: PostgreSQL uses a partial index only where it can prove the query's condition
    implies the index's, which it cannot for a parameter's value in a generic plan."""
    return sql.Literal(list(topics))


_INDEXED_SETS = tuple(frozenset(indexed) for indexed in INDEXED_TOPICS.values())


def within_an_indexed_set(topics: Sequence[str]) -> bool:
    """Whether the topics all belong to one indexed set: its partial index holds their rows."""
    wanted = set(topics)
    return any(wanted <= indexed for indexed in _INDEXED_SETS)


def _composed(statement: object) -> sql.Composable:
    """One of the library's lock statements, which it declares as any query but composes
    (eventsourcing 9.5: SQL.format); a plain one could not be turned into bytes here."""
    if not isinstance(statement, sql.Composable):
        raise TypeError(f"the library's lock statement is not composed SQL: {statement!r}")
    return statement


class MissingPredecessor(InternalError):
    """An event with a version after the first whose predecessor is neither stored nor
    saved with it: its chain would have no link to hang from, so it is refused."""


class ChainedRecorder(PostgresApplicationRecorder):
    """Adds `chain_hash` to each event: sha256 over its predecessor's hash and its stored bytes.

    Computed here, at insert, over exactly what is stored (ciphertext included), so erasure
    never breaks the chain and any edit does (`chain.chain_hash`, which the audit checks
    with). Events of one aggregate saved together chain from each other here; the others
    chain from their stored predecessors' hashes, which the recorder remembers for the
    aggregates it last read or saved, and reads in one query (at the start of the saving
    transaction) for the rest. The column is NOT NULL: a writer that forgets the hash is
    refused by the database. (Until December 2026 a trigger computed it, row by row, with the same
    formula: most of the insert's time on the server, docs/architecture.md.)
    """

    def __init__(
        self, datastore: PostgresDatastore, *, events_table_name: str, keys: PostgresKeyStore
    ) -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        self.keys = keys
        schema = sql.Identifier(self.datastore.schema)
        table = sql.Identifier(self.events_table_name)
        id_type = sql.Identifier(self.datastore.originator_id_type)
        # In the given order: the notification ids come back in it (as the library's do).
        self._insert_columns_statement = sql.SQL(
            "INSERT INTO {}.{} (originator_id, originator_version, topic, state, chain_hash)"
            " SELECT * FROM unnest(%b::{}[], %b::bigint[], %b::text[], %b::bytea[], %b::bytea[])"
            " RETURNING notification_id"
        ).format(schema, table, id_type)
        # A join rather than `(originator_id, originator_version) IN (...)`: PostgreSQL
        # plans it in a fifth of the time and skips the semi join's hash aggregate.
        self._predecessors_statement = sql.SQL(
            "SELECT e.originator_id, e.originator_version, e.chain_hash"
            " FROM unnest(%b::{}[], %b::bigint[]) AS p (originator_id, originator_version)"
            " JOIN {}.{} AS e USING (originator_id, originator_version)"
        ).format(id_type, schema, table)
        self._saving_statements: tuple[list[bytes], bytes] | None = None
        # Per aggregate, the version and hash of its latest event this recorder read or
        # committed: its next save needs no query for them. A stored event never changes,
        # so what is kept here stays true; only committed events are kept.
        self._latest_hashes: dict[UUID, Versioned] = {}
        self.sql_create_statements += [
            sql.SQL(
                "ALTER TABLE {}.{} ADD COLUMN IF NOT EXISTS chain_hash bytea,"
                " ALTER COLUMN chain_hash SET NOT NULL"  # a scan only while still nullable
            ).format(schema, table),
            # The trigger that computed the hash before, and its function.
            sql.SQL("DROP TRIGGER IF EXISTS {} ON {}.{}").format(
                sql.Identifier(f"{self.events_table_name}_chain"), schema, table
            ),
            sql.SQL("DROP FUNCTION IF EXISTS {}.{}()").format(
                schema, sql.Identifier(f"{self.events_table_name}_chain")
            ),
        ]

        # Built once each; on a big log that already exists, the first start after an
        # upgrade waits for them (the relay's start, say, would otherwise scan the table).
        for name, topics in INDEXED_TOPICS.items():
            self.sql_create_statements.append(
                sql.SQL(
                    "CREATE INDEX IF NOT EXISTS {index} ON {schema}.{table} (notification_id)"
                    " WHERE topic = ANY({topics})"
                ).format(
                    index=sql.Identifier(f"{self.events_table_name}_{name}"),
                    schema=schema,
                    table=table,
                    topics=topics_literal(topics),
                )
            )

    def _create_table(self, curs: Any) -> None:
        serialize_schema_changes(curs)
        super()._create_table(curs)

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """The library's insert in one round trip, rather than five, and such that a
        failing statement fails the save with its own error.

        The library's (which ours followed until December 2026) runs psycopg's transaction
        block inside a pipeline: it syncs after the events' insert, so that a violation is
        raised inside the block, and the block's end and the pipeline's sync three more
        times, the COMMIT among them: five Syncs a save, each a wait for the server. Here
        the connection (autocommit) sends BEGIN, the statements and COMMIT as plain
        statements, and the pipeline's end syncs once. A statement that fails makes the
        server skip the rest until the Sync, the COMMIT too, and its error is the first
        one raised; the transaction, left open and failed, is rolled back then. (The
        library's version also caught that error inside the transaction block, so the
        block committed: the commit met the aborted pipeline and its "pipeline aborted",
        an OperationalError retried ten times, replaced the real error, so a lost race for
        a key or a version came out as an outage.)"""
        notification_ids: Sequence[int] | None = None
        ids = [_as_uuid(e.originator_id) for e in stored_events]
        hashes: list[bytes] = []
        accounts_changed = _accounts_changed(stored_events)
        with self.datastore.get_connection() as conn:  # autocommit: BEGIN and COMMIT are ours
            try:
                with conn.cursor() as curs, conn.cursor() as inserting:
                    with conn.pipeline():
                        curs.execute(b"BEGIN")
                        # Before the lock: the round trip then holds nobody up.
                        predecessors = self._stored_predecessors(curs, ids, stored_events)
                        self._insert_events(curs, stored_events, **kwargs)
                        if accounts_changed:  # delivered at the commit, not before
                            curs.execute(
                                "SELECT pg_notify(%s, %s)",
                                (self.keys.notices.channel, ACCOUNTS_CHANGED),
                            )
                        if stored_events:
                            hashes = _chain_hashes(ids, stored_events, predecessors)
                            self._insert_stored_events(
                                inserting, stored_events, chain_hashes=hashes, **kwargs
                            )
                        curs.execute(b"COMMIT")
                    # The pipeline's end synced: a violation was raised there at the latest.
                    if stored_events:
                        notification_ids = self._fetch_ids_after_insert_events(
                            inserting, stored_events, **kwargs
                        )
            except BaseException:
                # A statement that failed made the server skip the rest until the sync,
                # the COMMIT too: the transaction is still open (and so it is if the
                # client failed). Its error is the one raised, not one of the skipped
                # statements' "pipeline aborted" (which the pipeline's exit only logs).
                with contextlib.suppress(DatabaseError):  # a broken connection: its own
                    conn.rollback()
                raise  # the datastore's connection maps it to the library's errors
        if stored_events:  # committed
            self._keep_latest(
                ids, zip([e.originator_version for e in stored_events], hashes, strict=True)
            )
        if accounts_changed:
            self.keys.notices.tell(ACCOUNTS_CHANGED)  # this process's own caches: now
        return notification_ids

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        """The library's selection, except that it reads the five columns a notification
        holds (not `chain_hash` too), in binary, as tuples: the library's text rows carry
        each state escaped into hex, which PostgreSQL writes and psycopg parses back, and
        that cost a replay more than decoding the events themselves. Topics within an
        indexed set are read through its partial index (`selection_statement`). The rows
        become notifications in `_notifications`."""
        statement, params = self.selection_statement(
            start, limit, stop, topics, inclusive_of_start=inclusive_of_start
        )
        with self.datastore.get_connection() as conn:
            curs = conn.cursor(row_factory=tuple_row, binary=True)
            # The originator id as its 16 bytes (`_notifications` makes one UUID an
            # aggregate): a binary uuid is those bytes, read as bytea's are.
            curs.adapters.register_loader("uuid", _BYTES_LOADER)
            curs.execute(statement, params, prepare=True)
            return _notifications(curs.fetchall())

    def selection_statement(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> tuple[sql.Composed, list[Any]]:
        """`select_notifications`' query and its parameters. Topics that all belong to an
        indexed set are written as a literal, so PostgreSQL can prove its partial index
        holds their rows (a parameter's topics it cannot, once it plans the prepared query
        generically); other topics are a parameter, one prepared query for them all."""
        conditions: list[sql.Composable] = []
        params: list[Any] = []
        if start is not None:
            conditions.append(
                sql.SQL("notification_id >= %s" if inclusive_of_start else "notification_id > %s")
            )
            params.append(start)
        if stop is not None:
            conditions.append(sql.SQL("notification_id <= %s"))
            params.append(stop)
        if topics and within_an_indexed_set(topics):
            conditions.append(sql.SQL("topic = ANY({})").format(topics_literal(sorted(topics))))
        elif topics:
            conditions.append(sql.SQL("topic = ANY(%s)"))
            params.append(list(topics))
        params.append(limit)
        statement = sql.SQL(
            # The originator id (a uuid column: the factory refuses ORIGINATOR_ID_TYPE=text),
            # read as its 16 bytes (`select_notifications`). (Not `uuid_send(...)` as bytea:
            # that cost the server a quarter of the selection, 1.08 → 0.81 µs of its CPU an
            # event, for the same 16 bytes.)
            "SELECT notification_id, originator_id, originator_version, topic,"
            " state FROM {}.{}{} ORDER BY notification_id LIMIT %s"
        ).format(
            sql.Identifier(self.datastore.schema),
            sql.Identifier(self.events_table_name),
            sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conditions) if conditions else sql.SQL(""),
        )
        return statement, params

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def select_events_of(self, originator_ids: Sequence[UUID]) -> list[StoredEvent]:
        """The events of all these aggregates in one query, each aggregate's in order."""
        if not originator_ids:
            return []
        statement = sql.SQL(
            "SELECT originator_id, originator_version, topic, state, chain_hash FROM {}.{}"
            " WHERE originator_id = ANY(%s) ORDER BY originator_id, originator_version"
        ).format(sql.Identifier(self.datastore.schema), sql.Identifier(self.events_table_name))
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, (list(originator_ids),), prepare=True)
            rows = curs.fetchall()
        self._keep_latest(
            [row["originator_id"] for row in rows],
            [(row["originator_version"], bytes(row["chain_hash"])) for row in rows],
        )
        return _stored_events(rows)

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        """The library's selection (its statement reads every column), except that the
        latest hash read is kept for the aggregate's next save."""
        statement = self.select_events_statement
        params: list[Any] = [originator_id]
        if gt is not None:
            params.append(gt)
            statement += sql.SQL(" AND originator_version > %s")
        if lte is not None:
            params.append(lte)
            statement += sql.SQL(" AND originator_version <= %s")
        statement += sql.SQL(
            " ORDER BY originator_version DESC" if desc else " ORDER BY originator_version ASC"
        )
        if limit is not None:
            params.append(limit)
            statement += sql.SQL(" LIMIT %s")
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, params, prepare=True)
            rows = curs.fetchall()
        if rows:
            latest = rows[0] if desc else rows[-1]
            self._keep_latest(
                [latest["originator_id"]],
                [(latest["originator_version"], bytes(latest["chain_hash"]))],
            )
        return _stored_events(rows)

    def _keep_latest(self, ids: Iterable[UUID], versions_and_hashes: Iterable[Versioned]) -> None:
        """Keeps, for each aggregate, the version and hash of the event given last for it
        (its latest: events read or saved come in order). An older one replacing a newer
        one costs no more than a query at the next save: any stored event's hash is true."""
        latest = self._latest_hashes
        if len(latest) >= LATEST_HASHES_KEPT:
            latest.clear()
        latest.update(zip(ids, versions_and_hashes, strict=True))

    def _insert_stored_events(
        self,
        curs: Any,
        stored_events: Sequence[StoredEvent],
        *,
        chain_hashes: Sequence[bytes] = (),
        **_: Any,
    ) -> None:
        """The library's insert, except that the table is not locked again (`_insert_events`
        locked it in this very transaction: two statements fewer per save), the events go
        as binary arrays, one per column, rather than an array of the library's composite
        type in text (that text escaped each event's state into hex, and PostgreSQL parsed
        it back: a 1,000-recipient message is 1,001 events), built here in their binary
        form (`arrays`: psycopg's list dumpers cost a one-customer save 36 µs more), and
        each carries its hash
        (`chain_hashes`, in the same order: without them the database refuses the rows)."""
        self._notify_channel(curs)
        curs.execute(
            self._insert_columns_statement,
            (
                uuid_array([_as_uuid(e.originator_id) for e in stored_events]),
                int8_array([e.originator_version for e in stored_events]),
                text_array([e.topic for e in stored_events]),
                bytea_array([e.state for e in stored_events]),
                bytea_array(chain_hashes),
            ),
            binary=True,
        )

    def _stored_predecessors(
        self, curs: Any, ids: Sequence[UUID], stored_events: Sequence[StoredEvent]
    ) -> dict[tuple[UUID, int], bytes]:
        """The stored hashes, by aggregate and version, of the predecessors of those
        events that are not their aggregate's first and whose predecessor is not saved
        with them: those this recorder last read or committed from memory, the others in
        one query (none when there are none). Read before the table lock is taken, and
        safely so: a stored event never changes, and the event that follows it is refused
        by the key (originator_id, originator_version) if another process saves one first."""
        saved_here = {(i, e.originator_version) for i, e in zip(ids, stored_events, strict=True)}
        known: dict[tuple[UUID, int], bytes] = {}
        wanted = []
        for originator_id, version in saved_here:
            if version > 1 and (originator_id, version - 1) not in saved_here:
                kept = self._latest_hashes.get(originator_id)
                if kept is not None and kept[0] == version - 1:
                    known[originator_id, version - 1] = kept[1]
                else:
                    wanted.append((originator_id, version - 1))
        if not wanted:
            return known
        with curs.connection.cursor(row_factory=tuple_row) as rows:
            rows.execute(
                self._predecessors_statement,
                ([i for i, _ in wanted], [version for _, version in wanted]),
                binary=True,
                prepare=True,
            )
            known.update(
                ((originator_id, version), hashed)
                for originator_id, version, hashed in rows.fetchall()
            )
        return known

    def _lock_table(self, curs: Any) -> None:
        """The library's statements (its lock timeout, then the table lock), composed into
        bytes once rather than at every save."""
        for statement in self._composed_saving_statements(curs)[0]:
            curs.execute(statement, prepare=True)

    def _notify_channel(self, curs: Any) -> None:
        """The library's NOTIFY, composed once."""
        curs.execute(self._composed_saving_statements(curs)[1])

    def _composed_saving_statements(self, curs: Any) -> tuple[list[bytes], bytes]:
        if self._saving_statements is None:
            notify = sql.SQL("NOTIFY {0}").format(sql.Identifier(self.channel_name))
            self._saving_statements = (
                [_composed(statement).as_bytes(curs) for statement in self.lock_table_statements],
                notify.as_bytes(curs),
            )
        return self._saving_statements

    def _insert_events(self, curs: Any, stored_events: Sequence[StoredEvent], **_: Any) -> None:
        # The events table's lock first, then the key rows: every saving transaction takes
        # its locks in this one order, so two saves (say a send beside a termination)
        # never wait on each other in a cycle. The library locks the table again later;
        # a lock already held is granted at once.
        if stored_events:
            self._lock_table(curs)
        # Keys created while sealing these events commit with them, or not at all.
        self.keys.write_pending(curs)


def _bytes_loader() -> type[Loader]:
    """bytea's binary loader (psycopg's C one where installed): a value's bytes as they are."""
    loader = psycopg.adapters.get_loader(psycopg.adapters.types["bytea"].oid, Format.BINARY)
    if loader is None:
        raise TypeError("psycopg has no binary loader for bytea")
    return loader


_BYTES_LOADER = _bytes_loader()


def _notifications(rows: Sequence[tuple[int, bytes, int, str, bytes]]) -> list[Notification]:
    """The notifications of `select_notifications`' rows, each originator id read as its
    16 bytes. An aggregate's events sit together in the log, so each id's UUID is made
    once (psycopg's loader made one an event, a third of the selection's time), and a
    notification is made without the frozen dataclass's __init__, which set its five
    fields one by one through `object.__setattr__` (another third): its state is set
    whole, the dict `__init__` would have filled."""
    uuids: dict[bytes, UUID] = {}
    notifications = []
    new, set_state, from_bytes = object.__new__, object.__setattr__, int.from_bytes
    for notification_id, raw_id, originator_version, topic, state in rows:
        originator_id = uuids.get(raw_id)
        if originator_id is None:
            # What `UUID(bytes=…)` makes, without its checks of arguments it was not given:
            # half its time, which a log whose aggregates' events lie apart (a delivery's
            # are queued, attempted and delivered among others') pays for nearly every event.
            originator_id = new(UUID)
            set_state(originator_id, "int", from_bytes(raw_id))
            set_state(originator_id, "is_safe", SafeUUID.unknown)
            uuids[raw_id] = originator_id
        notification = new(Notification)
        set_state(
            notification,
            "__dict__",
            {
                "originator_id": originator_id,
                "originator_version": originator_version,
                "topic": topic,
                "state": state,
                "id": notification_id,
            },
        )
        notifications.append(notification)
    return notifications


def _stored_events(rows: Sequence[Any]) -> list[StoredEvent]:
    """The library's stored events of rows read as dicts (the hash chain is the recorder's)."""
    return [
        StoredEvent(
            originator_id=row["originator_id"],
            originator_version=row["originator_version"],
            topic=row["topic"],
            state=bytes(row["state"]),
        )
        for row in rows
    ]


def _chain_hashes(
    ids: Sequence[UUID],
    stored_events: Sequence[StoredEvent],
    predecessors: Mapping[tuple[UUID, int], bytes],
) -> list[bytes]:
    """Each event's hash, in order: an aggregate's first event chains from GENESIS, one
    whose predecessor is saved with it (an aggregate's events come in order) from that
    one's hash, any other from its stored predecessor's; without one, it is refused."""
    known = dict(predecessors)
    hashes = []
    for originator_id, e in zip(ids, stored_events, strict=True):
        version = e.originator_version
        previous = GENESIS if version == 1 else known.get((originator_id, version - 1))
        if previous is None:
            raise MissingPredecessor(f"event {originator_id} v{version} has no predecessor")
        hashed = chain_hash(previous, originator_id, version, e.topic, e.state)
        known[originator_id, version] = hashed
        hashes.append(hashed)
    return hashes


def _as_uuid(originator_id: UUID | str) -> UUID:
    """The library types an originator id as either; this store's table holds uuids."""
    return originator_id if isinstance(originator_id, UUID) else UUID(originator_id)


def _accounts_changed(stored_events: Sequence[StoredEvent]) -> bool:
    """Whether a key, a user or a customer that existed before changes: then what every
    process keeps of them is forgotten. One made by this very save (its first event is
    here) cannot be kept anywhere yet, so registering one makes nobody forget anything."""
    made_here = {e.originator_id for e in stored_events if e.originator_version == 1}
    return any(
        e.originator_id not in made_here and e.topic.startswith(ACCOUNT_SOURCES)
        for e in stored_events
    )


class SealingEventStore(EventStore[UUID]):
    """Puts events; if another process created one of our new keys first, seals again."""

    mapper: SealingMapper
    recorder: ChainedRecorder

    def __init__(self, mapper: SealingMapper, recorder: ChainedRecorder, keys: PostgresKeyStore):
        super().__init__(mapper=mapper, recorder=recorder)
        self.keys = keys

    def put(self, domain_events: Sequence[Any], **kwargs: Any) -> list[Recording[UUID]]:
        for attempt in range(1, KEY_RACE_ATTEMPTS + 1):
            try:
                self.keys.prefetch(self.mapper.sealing_needs(domain_events))
                recordings = super().put(domain_events, **kwargs)
            except IntegrityError:
                # Either an ordinary conflict (someone saved this aggregate first), or
                # another process created one of our new keys first: then seal again.
                race = self.keys.pending_conflicts()
                self.keys.settle_pending(committed=False, retrying=race)
                if race and attempt < KEY_RACE_ATTEMPTS:
                    continue
                if race:
                    raise KeyRace("a key was created concurrently, again and again") from None
                raise
            except BaseException:
                self.keys.settle_pending(committed=False)
                raise
            self.keys.settle_pending(committed=True)
            return recordings
        raise AssertionError("unreachable")

    def get_many(self, originator_ids: Sequence[UUID]) -> dict[UUID, list[Any]]:
        """The events of each of these aggregates (those that have any), read in one query
        and opened in one go (their keys fetched together)."""
        stored = self.recorder.select_events_of(originator_ids)
        events: dict[UUID, list[Any]] = {}
        for event in self.mapper.to_domain_events(stored):
            events.setdefault(event.originator_id, []).append(event)
        return events

    def get(
        self,
        originator_id: UUID,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Iterator[Any]:
        stored = self.recorder.select_events(originator_id, gt=gt, lte=lte, desc=desc, limit=limit)
        return iter(self.mapper.to_domain_events(stored))


class StoreSettingRefused(Exception):
    """The library's environment asks for something our event store does not do."""


# Each setting the store refuses, and why, as the one line an operator reads.
REFUSED_SETTINGS = {
    "CIPHER_TOPIC": "events are sealed field by field under data subjects' keys;"
    " a whole-state cipher is not used",
    "CIPHER_KEY": "events are sealed field by field under data subjects' keys;"
    " a whole-state cipher is not used",
    "COMPRESSOR_TOPIC": "stored events are not compressed",
    "MAPPER_TOPIC": "the sealing mapper is the only mapper",
    "TRANSCODER_TOPIC": "events are stored with msgspec from their annotations",
    "APPLICATION_RECORDER_TOPIC": "the hash-chained recorder is the only recorder",
    "PROCESS_RECORDER_TOPIC": "process recorders are not supported",
}
# Settings the store honours at one value only: that value, and why.
ONLY_VALUES = {
    "ORIGINATOR_ID_TYPE": (
        "uuid",
        "aggregate ids are UUIDs: the hash chain, the key rows and the readers take them as such",
    ),
}
REFUSED_FLAGS = {
    "POSTGRES_ENABLE_DB_FUNCTIONS": "inserting through database functions would skip"
    " writing the keys new events are sealed under",
    "IS_SNAPSHOTTING_ENABLED": "snapshots are not supported: a snapshot's state is"
    " typed Any, so it cannot be sealed, and it would outlive erasure",
}


class Factory(PostgresFactory):
    MASTER_KEY_FILE = "MASTER_KEY_FILE"  # read as PICASSE_MASTER_KEY_FILE (the app's name)
    # "off": no listener for destroyed keys (one connection less); the key store then
    # caches no key at all, so it can never use a destroyed one. For processes that
    # open no sealed field, such as the relay.
    KEY_LISTENER = "KEY_LISTENER"
    # Seconds to wait, here, for the pool's first connection. Unset, the pool makes its
    # connections in the background and the first use waits only POSTGRES_CONNECT_TIMEOUT
    # for one. (Not the library's pool_open_timeout: that waits on every use until the pool
    # is full again, so concurrent users queue behind each other; nor a wait for the whole
    # pool, which a server near its max_connections may not grant for a long while.)
    POOL_OPEN_TIMEOUT = "POOL_OPEN_TIMEOUT"

    def __init__(self, env: Any) -> None:
        self.env = env if isinstance(env, Environment) else Environment(env=env)
        self.refuse_unhonoured_settings()  # before connecting to anything
        super().__init__(self.env)
        if open_timeout := self.env.get(self.POOL_OPEN_TIMEOUT):
            self.datastore.pool.open()
            with self.datastore.pool.connection(timeout=float(open_timeout)):
                pass  # one is made; the rest follow in the background
        self._keys: PostgresKeyStore | None = None

    def refuse_unhonoured_settings(self) -> None:
        """Raise StoreSettingRefused for the first setting the store would not honour."""
        for name, why in REFUSED_SETTINGS.items():
            if self.env.get(name):
                raise StoreSettingRefused(f"{name} is set, but {why}: unset it")
        for name, why in REFUSED_FLAGS.items():
            value = self.env.get(name)
            if value and _true(value):
                raise StoreSettingRefused(f"{name}={value} is set, but {why}: unset it")
        for name, (only, why) in ONLY_VALUES.items():
            value = self.env.get(name)
            if value and value.lower() != only:
                raise StoreSettingRefused(f"{name}={value} is set, but {why}: unset it")

    @property
    def keys(self) -> PostgresKeyStore:
        """The key store, made on first use: a view's factory never needs one."""
        if self._keys is None:
            path = self.env.get(self.MASTER_KEY_FILE)
            if not path:
                raise OSError("PICASSE_MASTER_KEY_FILE is not set")
            self._keys = PostgresKeyStore(
                self.datastore,
                read_master_key(Path(path)),
                key_dir=Path(path).parent,  # epoch key files live beside the master key
                listen=self.env.get(self.KEY_LISTENER) != "off",
            )
            if self.env_create_table():
                self._keys.create_tables()
            self._keys.start_epochs()
        return self._keys

    def mapper(
        self, transcoder: Transcoder | None = None, mapper_class: type[Mapper[Any]] | None = None
    ) -> Mapper[Any]:
        self.refuse_unhonoured_settings()  # the environment may have changed since
        if mapper_class is not None and mapper_class is not SealingMapper:
            raise StoreSettingRefused(f"the sealing mapper is the only mapper, not {mapper_class}")
        return SealingMapper(transcoder, keys=self.keys)

    def tracking_recorder(self, tracking_recorder_class: Any = None) -> Any:
        """A view built by the library (its projection runner) gets the key store too:
        our views seal their personal columns under the subjects' keys."""
        if tracking_recorder_class is not None and hasattr(tracking_recorder_class, "_sealed"):
            recorder = tracking_recorder_class(
                datastore=self.datastore,
                tracking_table_name=(self.env.name.lower() or "notification") + "_tracking",
                keys=self.keys,
            )
            if self.env_create_table():
                recorder.create_table()
            return recorder
        return super().tracking_recorder(tracking_recorder_class)

    def aggregate_recorder(self, purpose: str = "events") -> Any:
        raise StoreSettingRefused(
            f"an aggregate recorder ({purpose}) would skip writing the keys new events are"
            " sealed under: use the application recorder"
        )

    def process_recorder(self) -> Any:
        raise StoreSettingRefused(
            "a process recorder would skip writing the keys new events are sealed under:"
            " use the application recorder and a tracking recorder"
        )

    def application_recorder(self) -> ChainedRecorder:
        prefix = self.env.name.lower() or "stored"
        recorder = ChainedRecorder(
            self.datastore, events_table_name=f"{prefix}_events", keys=self.keys
        )
        if self.env_create_table():
            recorder.create_table()
        return recorder

    def event_store(
        self, mapper: Mapper[Any] | None = None, recorder: Any = None
    ) -> EventStore[Any]:
        mapper = mapper or self.mapper()
        recorder = recorder or self.application_recorder()
        if not isinstance(mapper, SealingMapper) or not isinstance(recorder, ChainedRecorder):
            # Only ours seal, chain and write the keys: the library's would store plaintext.
            raise StoreSettingRefused(
                "the event store takes the sealing mapper and the chained recorder,"
                f" not {type(mapper).__name__} and {type(recorder).__name__}"
            )
        return SealingEventStore(mapper=mapper, recorder=recorder, keys=self.keys)

    def close(self) -> None:
        if self._keys is not None:
            self._keys.close()
        super().close()


def _true(value: str) -> bool:
    try:
        return bool(strtobool(value))
    except ValueError:
        return True  # an unreadable value is refused rather than guessed


class KeyStoreShredder:
    """The key store as the domain's `KeyShredder`: the same store the application's
    mapper uses, so its own cache forgets a destroyed key at once."""

    def __init__(self, keys: PostgresKeyStore) -> None:
        self.keys = keys

    def destroy_subject_key(self, tenant_id: UUID, subject: str) -> list[UUID]:
        return [k.key_id for k in self.keys.destroy_subject_key(tenant_id, subject)]

    def destroy_tenant_keys(self, tenant_id: UUID) -> list[UUID]:
        return [k.key_id for k in self.keys.destroy_tenant_keys(tenant_id)]

    def destroyed_key_ids(self, tenant_id: UUID) -> list[UUID]:
        return [k.key_id for k in self.keys.destroyed_keys(tenant_id)]

    def live_subjects(self, tenant_id: UUID, prefix: str) -> list[str]:
        return self.keys.live_subjects(tenant_id, prefix)

    def sealed_event_count(self, tenant_id: UUID) -> int:
        return self.keys.sealed_event_count(tenant_id)

    def destroyed_epoch(self, tenant_id: UUID) -> DestroyedEpoch | None:
        return self.keys.destroyed_epoch(tenant_id)


def shredder_of(application: Any) -> KeyStoreShredder:
    return KeyStoreShredder(application.factory.keys)


def factory_of(application: Application[Any]) -> Factory:
    """The factory of an application on this store, as ours: the library types it as any
    infrastructure factory. Its datastore and key store are what other tables share."""
    factory = application.factory
    if not isinstance(factory, Factory):
        raise StoreSettingRefused(f"{application.name} is not on {__name__}:Factory")
    return factory


def recorder_of(application: Application[Any]) -> ChainedRecorder:
    """The recorder of an application on this store, as ours (the library's type is any
    recorder): the relay reads its table, caches hear its key store's notices."""
    recorder = application.recorder
    if not isinstance(recorder, ChainedRecorder):
        raise StoreSettingRefused(f"{application.name} is not on {__name__}:Factory")
    return recorder


def mapper_of(application: Application[Any]) -> SealingMapper:
    """The mapper of an application on this store, as ours (the library's type is any
    mapper): a page of events is decoded with `to_domain_events`, its keys in one query."""
    mapper = application.mapper
    if not isinstance(mapper, SealingMapper):
        raise StoreSettingRefused(f"{application.name} is not on {__name__}:Factory")
    return mapper
