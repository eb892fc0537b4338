"""Key store in PostgreSQL: epoch → tenant → data subject keys, wrapped at rest.

Data subject keys are wrapped by their tenant key, tenant keys by the current key-encryption
key epoch, whose key lives in a file beside the master key file, never in the database.
Destroying a key deletes its wrapped form and tells every process (LISTEN/NOTIFY) to
drop its cached copy; a process whose listener is down does not cache at all.
New keys are written in the same transaction as the first events sealed under them.

After a key is destroyed the keys that wrapped it are replaced (`replace_wrapping_keys`):
the tenant's live subject keys are re-wrapped under a new tenant key, every tenant key
under a new epoch, and the old epoch's file is destroyed. A backup or WAL segment holding
the destroyed key's wrapped form then holds nothing the current key files open.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID, uuid4

import msgspec
import psycopg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.persistence import PersistenceError
from eventsourcing.postgres import PostgresDatastore
from psycopg import sql
from psycopg.rows import dict_row, tuple_row

from picasse.adapters.crypto import (
    SealingNeed,
    SubjectKey,
    new_key_id_and_material,
    new_subject_key,
)
from picasse.adapters.master_key import (
    EpochKeyMissing,
    create_epoch_key,
    destroy_epoch_key,
    epoch_key_path,
    read_epoch_key,
)
from picasse.adapters.postgres import arrays
from picasse.adapters.postgres.notices import Notices, connection_kwargs
from picasse.adapters.postgres.roles import serialize_schema_changes
from picasse.domain.termination import DestroyedEpoch

_T = TypeVar("_T")

log = logging.getLogger(__name__)

NONCE_SIZE = 12
FIRST_ANALYZE_AFTER = 500  # keys written by a process before it has the key tables analyzed
# Constraints of earlier key stores, dropped on start: the foreign key of each subject key
# to the tenant key wrapping it (and the unique pair it referenced), and before it the two
# foreign keys it replaced. A save locks the tenant keys it wraps under instead
# (`write_pending`): one query a save, rather than one check a new subject key. Last (the
# second of those foreign keys referenced it), the uniqueness of tenant key ids: nothing
# looks a tenant key up by its id, which is random, and its index cost every new tenant
# an entry (December 2026).
OLD_CONSTRAINTS = (
    ("subject_keys", "picasse_subject_keys_wrapped_by"),
    ("subject_keys", "picasse_subject_keys_tenant_id_fkey"),
    ("subject_keys", "picasse_subject_keys_tenant_key_id_fkey"),
    ("tenant_keys", "picasse_tenant_keys_tenant_key"),
    ("tenant_keys", "picasse_tenant_keys_key_id_key"),
)


class KeyRace(Exception):
    """Another process created the same subject key first; sealing must be redone."""


class TenantErased(Exception):
    """The tenant's key was destroyed: nothing new can be sealed for it."""

    def __init__(self, tenant_id: UUID) -> None:
        super().__init__(f"customer {tenant_id} has been erased; no personal data can be recorded")
        self.tenant_id = tenant_id


class DestroyedKey(msgspec.Struct, frozen=True):
    key_id: UUID
    tenant_id: UUID
    subject: str | None  # None: the tenant key itself


TenantKey = tuple[bytes, AESGCM]  # the tenant key's id (its 16 bytes) and the key


class _Pending:
    """This thread's keys for the save under way: found, created, or known absent."""

    def __init__(self, generation: int) -> None:
        self.generation = generation
        # tenant → key id (16 bytes), epoch wrapping it, wrapped, key
        self.new_tenants: dict[UUID, tuple[bytes, UUID, bytes, AESGCM]] = {}
        # (tenant, subject) → key, wrapped, id of the tenant key wrapping it (16 bytes)
        self.new_subjects: dict[tuple[UUID, str], tuple[SubjectKey, bytes, bytes]] = {}
        self.found_subjects: dict[tuple[UUID, str], SubjectKey] = {}
        self.found_tenants: dict[UUID, TenantKey] = {}
        self.absent_subjects: set[tuple[UUID, str]] = set()
        self.absent_tenants: set[UUID] = set()
        self.erased_tenants: set[UUID] = set()
        self.sealed_events: dict[UUID, int] = {}  # tenant → events of this save holding its data
        self.trust_hints = True


def _nothing_to_load() -> dict[bytes, SubjectKey | None]:
    return {}


class _ThisThread(threading.local):
    """Each thread's save under way. The class attribute answers for a thread that has
    none: a replay asks for every sealed value it opens, and a missing attribute (with a
    getattr default) made and dropped an AttributeError each time."""

    pending: _Pending | None = None
    loading: _Loading | None = None  # this thread's key query sent and not yet answered


class _Loading:
    """A page's key query, sent to the server and not yet answered (`load_soon`). It
    holds its pooled connection, in pipeline mode, until it is finished: by calling it,
    or by the thread's next load (so opening a key it lacks cannot wait for the pool)."""

    def __init__(
        self,
        store: PostgresKeyStore,
        held: contextlib.ExitStack,
        pipeline: contextlib.AbstractContextManager[Any],
        curs: Any,
        wanted: list[bytes],
        generation: int,
    ) -> None:
        self.store = store
        self.held = held
        self.pipeline = pipeline
        self.curs = curs
        self.wanted = wanted
        self.generation = generation
        self.done = False

    def __call__(self) -> dict[bytes, SubjectKey | None]:
        """The keys, unwrapped and cached; the connection goes back to the pool."""
        if self.done:
            return {}
        self.done = True
        store = self.store
        if store._local.loading is self:
            store._local.loading = None
        with self.held:  # the connection, back to the pool at the end
            self.pipeline.__exit__(None, None, None)  # sends a sync, fetches the answer
            columns = self.curs.fetchone()
        answers = [columns]  # this answer first; a read after a rotation queries again

        def read() -> dict[bytes, SubjectKey | None]:
            if answers:
                return store._unwrap_loaded(answers.pop(), self.wanted, self.generation)
            return store._load_once(self.wanted)

        return store._across_rotations(read)


def _subject_slot(tenant_id: bytes, subject: str) -> bytes:
    """A subject key's place in the cache: its tenant id's 16 bytes, then its name."""
    return tenant_id + subject.encode()


def _wrap(wrapping: AESGCM, material: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_SIZE)
    return nonce + wrapping.encrypt(nonce, material, aad)


def _unwrap(wrapping: AESGCM, wrapped: bytes, aad: bytes) -> bytes:
    return wrapping.decrypt(wrapped[:NONCE_SIZE], wrapped[NONCE_SIZE:], aad)


def _tenant_aad(tenant_id: bytes, key_id: bytes, epoch_id: UUID | None) -> bytes:
    """Binds a wrapped tenant key to its tenant, its id and the epoch wrapping it (ids as
    their 16 bytes, which the key look-ups read without making UUID objects)."""
    aad = b"tenant" + tenant_id + key_id
    return aad if epoch_id is None else aad + epoch_id.bytes  # None: under the master key


def _subject_aad(key_id: bytes, subject: str) -> bytes:
    return b"subject" + key_id + subject.encode()


class PostgresKeyStore:
    def __init__(
        self,
        datastore: PostgresDatastore,
        master_key: bytes,
        *,
        key_dir: Path,
        listen: bool = True,
    ) -> None:
        self.datastore = datastore
        self._master = AESGCM(master_key)  # only to re-wrap tenant keys from before epochs
        self.key_dir = key_dir
        self._epochs: dict[UUID, AESGCM] = {}
        self._current_epoch: UUID | None = None
        self._batching = 0
        # Keys this process wrote since it last had the key tables analyzed, and how many
        # more it writes before it does so again (see `_keep_statistics`).
        self._keys_written = 0
        self._analyze_after = FIRST_ANALYZE_AFTER
        # Tests: called after each step of a rotation; raising there is a crash there.
        self.fault: Callable[[str], None] = lambda step: None
        schema = datastore.schema
        self._schema = schema
        self.channel = f"{schema}_picasse_keys"
        self._t = {
            name: sql.Identifier(schema, f"picasse_{name}")
            for name in (
                "tenant_keys",
                "subject_keys",
                "destroyed_keys",
                "sealed_events",
                "key_epochs",
                "rewrap_due",
            )
        }
        self._write_statements: tuple[bytes, bytes, bytes] | None = None  # see write_pending
        self._load_statement: bytes | None = None  # see _load_once
        self._lock = threading.Lock()
        self._tenant_keys: dict[UUID, TenantKey] = {}
        # By `_subject_slot`: bytes, which the garbage collector neither tracks nor
        # counts, so a replay's many cached keys do not make it collect more often.
        self._by_subject: dict[bytes, SubjectKey] = {}
        self._by_id: dict[bytes, SubjectKey | None] = {}  # by the key id's 16 bytes
        self._generation = 0
        self._local = _ThisThread()
        # The schema's notices (see adapters/postgres/notices.py): a destroyed key drops
        # out of every process's cache. Not listening: nothing is cached.
        self.notices = Notices(connection_kwargs(self.datastore), self.channel)
        self._listening = self.notices.listening
        if listen:
            # Looked up at each notice, not bound now (tests replace them on one store).
            self.notices.subscribe(
                lambda payload: self._on_notice(payload), lambda: self._forget_everything()
            )
            self.notices.start()

    # Schema

    def create_tables(self) -> None:
        t = self._t
        statements = [
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self._schema)),
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (tenant_id uuid PRIMARY KEY,"
                " key_id uuid NOT NULL, wrapped bytea NOT NULL,"
                " created_at timestamptz NOT NULL DEFAULT now(), epoch_id uuid)"
            ).format(t["tenant_keys"]),
            # tenant_key_id: the tenant key wrapping it, which a save locks while it writes
            # the subject key (`write_pending`) and a replacement re-wraps it under.
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (key_id uuid PRIMARY KEY,"
                " tenant_id uuid NOT NULL, subject text NOT NULL, wrapped bytea NOT NULL,"
                " created_at timestamptz NOT NULL DEFAULT now(), UNIQUE (tenant_id, subject),"
                " tenant_key_id uuid NOT NULL)"
            ).format(t["subject_keys"]),
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (key_id uuid PRIMARY KEY, tenant_id uuid NOT NULL,"
                " subject text, destroyed_at timestamptz NOT NULL DEFAULT now(), epoch_id uuid)"
            ).format(t["destroyed_keys"]),
            # How many events hold each tenant's sealed data: what an erasure makes unreadable,
            # known without reading the log (erasure cost must not grow with history).
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (tenant_id uuid PRIMARY KEY, events bigint NOT NULL)"
            ).format(t["sealed_events"]),
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (tenant_id)").format(
                sql.Identifier("picasse_destroyed_keys_tenant_idx"), t["destroyed_keys"]
            ),
            # Key-encryption-key epochs: their keys are files (key_dir), never rows. One is
            # current; a pending one's file may exist; a retired or destroyed one wraps
            # nothing any more (its file is destroyed, then it is marked destroyed).
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (epoch_id uuid PRIMARY KEY, state text NOT NULL"
                " CHECK (state IN ('pending', 'current', 'retired', 'destroyed')),"
                " created_at timestamptz NOT NULL DEFAULT now(), destroyed_at timestamptz)"
            ).format(t["key_epochs"]),
            sql.SQL(
                "CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} ((true)) WHERE state = 'current'"
            ).format(sql.Identifier("picasse_key_epochs_one_current"), t["key_epochs"]),
            # Tenants whose keys wrapped a destroyed key and are still to be replaced.
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (tenant_id uuid PRIMARY KEY,"
                " since timestamptz NOT NULL DEFAULT now())"
            ).format(t["rewrap_due"]),
        ]
        # Key stores made before epochs get their columns. ALTER TABLE takes an exclusive
        # lock even when the column exists, which deadlocks with other processes reading
        # keys, so it runs only when a column is missing.
        migrations = [
            # NULL: wrapped by the master key (before epochs); re-wrapped by the first epoch.
            sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS epoch_id uuid").format(
                t["tenant_keys"]
            ),
            sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS epoch_id uuid").format(
                t["destroyed_keys"]
            ),
            # Which tenant key wraps each subject key: a save that wrapped under a tenant
            # key replaced meanwhile fails (and seals again) instead of writing a dead key.
            sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS tenant_key_id uuid").format(
                t["subject_keys"]
            ),
        ]
        # Key stores made before lose their foreign keys and the uniqueness of tenant key
        # ids: each subject key's wrapping tenant key known (the oldest had none), then
        # the constraints dropped.
        no_foreign_keys = [
            sql.SQL(
                "UPDATE {} s SET tenant_key_id = k.key_id FROM {} k"
                " WHERE s.tenant_key_id IS NULL AND k.tenant_id = s.tenant_id"
            ).format(t["subject_keys"], t["tenant_keys"]),
            sql.SQL("ALTER TABLE {} ALTER COLUMN tenant_key_id SET NOT NULL").format(
                t["subject_keys"]
            ),
            *(
                sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}").format(
                    t[table], sql.Identifier(name)
                )
                for table, name in OLD_CONSTRAINTS
            ),
        ]
        with self.datastore.transaction(commit=True) as curs:
            serialize_schema_changes(curs)  # concurrent first starts
            for statement in statements:
                curs.execute(statement)
            found = curs.execute(
                "SELECT (SELECT count(*) FROM information_schema.columns"
                "  WHERE table_schema = %s AND (table_name, column_name) IN"
                "  (('picasse_tenant_keys', 'epoch_id'), ('picasse_destroyed_keys', 'epoch_id'),"
                "  ('picasse_subject_keys', 'tenant_key_id'))) AS columns,"
                # The catalog, not information_schema: it shows a constraint whatever the
                # role's privileges on the table.
                " (SELECT count(*) FROM pg_constraint c JOIN pg_namespace n"
                "  ON n.oid = c.connamespace WHERE n.nspname = %s AND c.conname = ANY(%s))"
                " AS old_constraints",
                (self._schema, self._schema, [name for _, name in OLD_CONSTRAINTS]),
            ).fetchone()
            # One row of counts always comes back; none would mean nothing was found.
            columns, old = (found["columns"], found["old_constraints"]) if found else (0, 0)
            if columns < 3:
                for statement in migrations:
                    curs.execute(statement)
            if columns < 3 or old:
                for statement in no_foreign_keys:
                    curs.execute(statement)

    # Sealing: find or create the subject's key

    def prefetch(self, needs: Iterable[SealingNeed]) -> None:
        """Look up, in one round trip, every key a save will need that is not at hand."""
        pending = self._pending()
        cached = self._listening.is_set()
        subjects: set[tuple[UUID, str]] = set()
        tenants: set[UUID] = set()
        for need in needs:
            pair = (need.tenant_id, need.subject)
            if pair in pending.new_subjects or pair in pending.found_subjects:
                continue
            if cached and _subject_slot(need.tenant_id.bytes, need.subject) in self._by_subject:
                continue
            if need.new_subject and pending.trust_hints:
                pending.absent_subjects.add(pair)
            else:
                subjects.add(pair)
            tenant = need.tenant_id
            if tenant in pending.new_tenants or tenant in pending.found_tenants:
                continue
            if cached and tenant in self._tenant_keys:
                continue
            if need.new_tenant and pending.trust_hints:
                pending.absent_tenants.add(tenant)
            else:
                tenants.add(tenant)
        if subjects or tenants:
            self._look_up(pending, subjects, tenants)

    def _look_up(
        self, pending: _Pending, subjects: set[tuple[UUID, str]], tenants: set[UUID]
    ) -> None:
        self._across_rotations(lambda: self._look_up_once(pending, set(subjects), set(tenants)))

    def _across_rotations(self, read: Callable[[], _T]) -> _T:
        """Runs a read of wrapped keys again when its epoch's file went between its query
        and the file's read: a rotation committed the keys' new wrapping first, so the
        query run again finds them under the new epoch."""
        for attempt in range(3):
            try:
                return read()
            except EpochKeyMissing:
                if attempt == 2:
                    raise
                with self._lock:
                    self._current_epoch = None
        raise AssertionError("unreachable")

    def _look_up_once(
        self, pending: _Pending, subjects: set[tuple[UUID, str]], tenants: set[UUID]
    ) -> None:
        t = self._t
        tenants |= {tenant for tenant, _ in subjects}
        query = sql.SQL(
            "SELECT s.tenant_id, s.subject, s.key_id, s.wrapped,"
            " NULL::uuid AS tenant_key_id, NULL::bytea AS tenant_wrapped, NULL::uuid AS epoch_id"
            " FROM {subjects} s"
            " JOIN unnest(%s::uuid[], %s::text[]) AS wanted(tenant_id, subject)"
            " USING (tenant_id, subject)"
            " UNION ALL SELECT k.tenant_id, NULL, NULL, NULL, k.key_id, k.wrapped, k.epoch_id"
            " FROM {tenants} k WHERE k.tenant_id = ANY(%s)"
            " UNION ALL SELECT d.tenant_id, NULL, NULL, NULL, NULL, NULL, NULL FROM {destroyed} d"
            " WHERE d.subject IS NULL AND d.tenant_id = ANY(%s)"
        ).format(
            subjects=t["subject_keys"], tenants=t["tenant_keys"], destroyed=t["destroyed_keys"]
        )
        tenant_list = list(tenants)
        params = (
            [tenant for tenant, _ in subjects],
            [subject for _, subject in subjects],
            tenant_list,
            tenant_list,
        )
        with self.datastore.get_connection() as conn:  # autocommit: one round trip
            rows = conn.cursor().execute(query, params).fetchall()
        wrapped_subjects = []
        for row in rows:
            tenant_id = row["tenant_id"]
            if row["subject"] is not None:
                wrapped_subjects.append(row)
            elif row["tenant_key_id"] is not None:
                tenant_key_id = row["tenant_key_id"].bytes
                pending.found_tenants[tenant_id] = (
                    tenant_key_id,
                    self._unwrap_tenant(
                        tenant_id.bytes,
                        tenant_key_id,
                        row["epoch_id"],
                        bytes(row["tenant_wrapped"]),
                    ),
                )
            else:
                pending.erased_tenants.add(tenant_id)
        found: list[SubjectKey] = []
        for row in wrapped_subjects:
            tenant_id = row["tenant_id"]
            _, tenant_key = pending.found_tenants[tenant_id]
            key = self._unwrap_subject(
                tenant_id.bytes,
                row["subject"],
                row["key_id"].bytes,
                bytes(row["wrapped"]),
                tenant_key,
            )
            pending.found_subjects[(tenant_id, key.subject)] = key
            found.append(key)
        pending.absent_subjects |= subjects - pending.found_subjects.keys()
        pending.absent_tenants |= tenants - pending.found_tenants.keys() - pending.erased_tenants
        self._remember(found, {}, pending.generation)

    def sealing_key(
        self, tenant_id: UUID, subject: str, *, new_subject: bool = False, new_tenant: bool = False
    ) -> SubjectKey:
        pending = self._pending()
        pair = (tenant_id, subject)
        made = pending.new_subjects.get(pair)
        if made is not None:
            return made[0]
        # A first event's own subject (and tenant) has no key yet: nothing to look up. A
        # wrong hint fails the save on the key's unique constraint; the retry trusts none.
        trusted = pending.trust_hints
        if not (new_subject and trusted):
            key = self._existing_key(pending, pair, new_subject, new_tenant)
            if key is not None:
                return key
        tenant_key_id, tenant_key = self._tenant_key(tenant_id, pending, new_tenant and trusted)
        key, material = new_subject_key(tenant_id, subject)
        pending.new_subjects[pair] = (
            key,
            _wrap(tenant_key, material, _subject_aad(key.raw_id, subject)),
            tenant_key_id,
        )
        return key

    def _existing_key(
        self, pending: _Pending, pair: tuple[UUID, str], new_subject: bool, new_tenant: bool
    ) -> SubjectKey | None:
        """The subject's key if it exists: found for this save, cached, or looked up."""
        key = pending.found_subjects.get(pair)
        if key is not None:
            return key
        tenant_id, subject = pair
        if self._listening.is_set():
            key = self._by_subject.get(_subject_slot(tenant_id.bytes, subject))
            if key is not None:
                return key
        if pair not in pending.absent_subjects:
            self.prefetch([SealingNeed(tenant_id, subject, new_subject, new_tenant)])
            return pending.found_subjects.get(pair)
        return None

    def _pending(self) -> _Pending:
        pending: _Pending | None = self._local.pending
        if pending is None:
            pending = self._local.pending = _Pending(self._generation)
        return pending

    def _tenant_key(self, tenant_id: UUID, pending: _Pending, new: bool) -> TenantKey:
        """The tenant's key, found or made; `new`: a trusted hint that it has none yet."""
        made = pending.new_tenants.get(tenant_id)
        if made is not None:
            return made[0], made[3]
        if not new:
            found = self._existing_tenant_key(tenant_id, pending)
            if found is not None:
                return found
        if tenant_id in pending.erased_tenants:
            raise TenantErased(tenant_id)
        key_id, material = new_key_id_and_material()
        epoch_id, epoch = self._current()
        wrapped = _wrap(epoch, material, _tenant_aad(tenant_id.bytes, key_id, epoch_id))
        tenant_key = AESGCM(material)
        pending.new_tenants[tenant_id] = (key_id, epoch_id, wrapped, tenant_key)
        return key_id, tenant_key

    def _existing_tenant_key(self, tenant_id: UUID, pending: _Pending) -> TenantKey | None:
        """The tenant's key if it exists: found for this save, cached, or looked up."""
        found = pending.found_tenants.get(tenant_id)
        if found is not None:
            return found
        if self._listening.is_set():
            cached = self._tenant_keys.get(tenant_id)
            if cached is not None:
                return cached
        if not (tenant_id in pending.absent_tenants or tenant_id in pending.erased_tenants):
            self._look_up(pending, set(), {tenant_id})
            return pending.found_tenants.get(tenant_id)
        return None

    # The event store's transaction writes new keys with the events sealed under them.

    def write_pending(self, curs: Any) -> None:
        """Insert this thread's new keys; a key another process made first fails the
        transaction with a unique violation, which `pending_conflicts` then explains."""
        pending: _Pending | None = self._local.pending
        if pending is None:
            return
        if self._write_statements is None:
            self._write_statements = self._composed_write_statements(curs)
        count, write_keys, write_new_keys = self._write_statements
        counts = sorted(pending.sealed_events.items())  # rows locked in one order
        # Each array goes built in its binary form (`arrays`): psycopg's list dumpers cost
        # some 5-15 µs a list here whatever its length, and the text of array literals
        # (until December 2026) cost the server its parsing: 0.6 ms of hex for 100 new
        # customers.
        if not (pending.new_tenants or pending.new_subjects):
            if counts:
                curs.execute(
                    count,
                    (
                        arrays.uuid_array(tenant for tenant, _ in counts),
                        arrays.int8_array(n for _, n in counts),
                    ),
                )
            return
        tenants = sorted(pending.new_tenants.items(), key=lambda item: item[0])
        subjects = sorted(pending.new_subjects.values(), key=lambda item: item[0].raw_id)
        epochs = sorted({epoch_id for _, (_, epoch_id, _, _) in tenants})
        # The tenant keys, made before this save, that its new subject keys are wrapped
        # under: locked by the statement, so a replacement cannot change them before
        # this transaction ends.
        made_here = {tenant_id.bytes for tenant_id in pending.new_tenants}
        wrapping = sorted({key.tenant_raw for key, _, _ in subjects} - made_here)
        # A tenant's first count is a plain insert (its tenant key is made here: no
        # row can exist), the others add to their rows.
        first = [(tenant, n) for tenant, n in counts if tenant in pending.new_tenants]
        more = [(tenant, n) for tenant, n in counts if tenant not in pending.new_tenants]
        # One statement, sent with the events (no round trip of its own). The epochs new
        # tenant keys are wrapped under stay current until this transaction ends (a
        # rotation waits for the share lock). A tenant key wrapped under an epoch replaced
        # meanwhile gets no wrapped form, and so does a subject key wrapped under a tenant
        # key replaced or destroyed meanwhile: the NOT NULL constraint fails the save, and
        # `pending_conflicts` finds the replaced key or epoch, so the save seals again.
        new_keys = (
            arrays.uuid_array(tenant for tenant, _ in first),
            arrays.int8_array(n for _, n in first),
            arrays.uuid_array(epochs),
            arrays.uuid_array(tenant_id for tenant_id, _ in tenants),
            arrays.raw_uuid_array(key_id for _, (key_id, _, _, _) in tenants),
            arrays.uuid_array(epoch_id for _, (_, epoch_id, _, _) in tenants),
            arrays.bytea_array(wrapped for _, (_, _, wrapped, _) in tenants),
        )
        subject_keys = (
            arrays.raw_uuid_array(key.raw_id for key, _, _ in subjects),
            arrays.raw_uuid_array(key.tenant_raw for key, _, _ in subjects),
            arrays.text_array(key.subject for key, _, _ in subjects),
            arrays.bytea_array(wrapped for _, wrapped, _ in subjects),
            arrays.raw_uuid_array(tenant_key_id for _, _, tenant_key_id in subjects),
        )
        if not (more or wrapping):
            # Every tenant of this save is new (a new customer): no count to add to and
            # no tenant key to lock, so the leaner statement.
            curs.execute(write_new_keys, (*new_keys, *subject_keys))
            return
        curs.execute(
            write_keys,
            (
                arrays.uuid_array(tenant for tenant, _ in more),
                arrays.int8_array(n for _, n in more),
                *new_keys,
                arrays.raw_uuid_array(wrapping),
                *subject_keys,
            ),
        )

    def _composed_write_statements(self, curs: Any) -> tuple[bytes, bytes, bytes]:
        """`write_pending`'s statements, composed once (every save sends one of them):
        the counts alone; the keys with the counts; and the keys of a save whose every
        tenant is new, with their first counts.

        A new subject key is written with its wrapped form only if the tenant key that
        wraps it is made by this very statement or is one of the rows `wrapping` locks
        (FOR KEY SHARE: a replacement's FOR UPDATE waits for this transaction, and this
        lock waits for a replacement under way, then finds the key replaced). Until
        December 2026 a foreign key to the tenant key checked each new subject key
        alone, locking its tenant's row as many times (docs/architecture.md).

        When every tenant of the save is new, each subject key is wrapped under a tenant
        key the same statement inserts, and that insert fails the statement if the key
        is not wrapped (its epoch replaced): the subject keys need no check, and nothing
        is locked but the epochs. Until December 2026 such a save sent the general
        statement, whose empty parts (an upsert of no counts, a lock of no tenant keys,
        the check of each subject key) cost the server some 15 µs of its 60-75."""
        t = self._t
        count = sql.SQL(
            "INSERT INTO {} (tenant_id, events) SELECT * FROM unnest(%b::uuid[], %b::bigint[])"
            " ON CONFLICT (tenant_id) DO UPDATE SET events = {}.events + excluded.events"
        ).format(t["sealed_events"], t["sealed_events"])
        first_counted = sql.SQL(
            " first_counted AS (INSERT INTO {sealed} (tenant_id, events)"
            "  SELECT * FROM unnest(%b::uuid[], %b::bigint[])),"
            " current AS (SELECT epoch_id FROM {epochs} WHERE epoch_id = ANY(%b::uuid[])"
            "  AND state = 'current' FOR SHARE),"
            " t AS (INSERT INTO {tenants} (tenant_id, key_id, epoch_id, wrapped)"
            "  SELECT n.tenant_id, n.key_id, n.epoch_id,"
            "  CASE WHEN c.epoch_id IS NOT NULL THEN n.wrapped END"
            "  FROM unnest(%b::uuid[], %b::uuid[], %b::uuid[], %b::bytea[])"
            "  AS n(tenant_id, key_id, epoch_id, wrapped)"
            "  LEFT JOIN current c ON c.epoch_id = n.epoch_id{returning})"
        )
        subjects = sql.SQL(
            " INSERT INTO {subjects} (key_id, tenant_id, subject, wrapped, tenant_key_id)"
            " SELECT n.key_id, n.tenant_id, n.subject, {wrapped}, n.tenant_key_id"
            " FROM unnest(%b::uuid[], %b::uuid[], %b::text[], %b::bytea[], %b::uuid[])"
            " AS n(key_id, tenant_id, subject, wrapped, tenant_key_id)"
        )
        tables = {
            "sealed": t["sealed_events"],
            "epochs": t["key_epochs"],
            "tenants": t["tenant_keys"],
            "subjects": t["subject_keys"],
        }
        write_keys = sql.SQL(
            "WITH counted AS ({count}),{first_counted},"
            " wrapping AS (SELECT k.tenant_id, k.key_id FROM unnest(%b::uuid[]) AS w(tenant_id)"
            "  JOIN {tenants} k USING (tenant_id) FOR KEY SHARE OF k){subjects}"
        ).format(
            count=count,
            first_counted=first_counted.format(
                returning=sql.SQL(" RETURNING tenant_id, key_id"), **tables
            ),
            tenants=t["tenant_keys"],
            subjects=subjects.format(
                wrapped=sql.SQL(
                    "CASE WHEN (n.tenant_id, n.tenant_key_id) IN (SELECT * FROM t)"
                    " OR (n.tenant_id, n.tenant_key_id) IN (SELECT * FROM wrapping)"
                    " THEN n.wrapped END"
                ),
                **tables,
            ),
        )
        write_new_keys = sql.SQL("WITH{first_counted}{subjects}").format(
            first_counted=first_counted.format(returning=sql.SQL(""), **tables),
            subjects=subjects.format(wrapped=sql.SQL("n.wrapped"), **tables),
        )
        return count.as_bytes(curs), write_keys.as_bytes(curs), write_new_keys.as_bytes(curs)

    def note_sealed(self, tenant_id: UUID) -> None:
        sealed = self._pending().sealed_events
        sealed[tenant_id] = sealed.get(tenant_id, 0) + 1

    def sealed_event_count(self, tenant_id: UUID) -> int:
        with self.datastore.get_connection() as conn:
            row = (
                conn.cursor()
                .execute(
                    sql.SQL("SELECT events FROM {} WHERE tenant_id = %s").format(
                        self._t["sealed_events"]
                    ),
                    (tenant_id,),
                )
                .fetchone()
            )
        return int(row["events"]) if row else 0

    def pending_conflicts(self) -> bool:
        """After a failed save: did another process create one of our new keys first?"""
        pending: _Pending | None = self._local.pending
        if pending is None or not (pending.new_tenants or pending.new_subjects):
            return False
        t = self._t
        pairs = list(pending.new_subjects)
        wrapping = [
            (key.tenant_id, UUID(bytes=tenant_key_id))
            for key, _, tenant_key_id in pending.new_subjects.values()
            if key.tenant_id not in pending.new_tenants
        ]
        with self.datastore.get_connection() as conn:
            row = (
                conn.cursor()
                .execute(
                    sql.SQL(
                        "SELECT EXISTS (SELECT 1 FROM {tenants} WHERE tenant_id = ANY(%s))"
                        " OR EXISTS (SELECT 1 FROM {subjects} s JOIN unnest(%s::uuid[], %s::text[])"
                        " AS mine(tenant_id, subject) USING (tenant_id, subject))"
                        # the tenant key we wrapped under was replaced (or destroyed)
                        " OR EXISTS (SELECT 1 FROM unnest(%s::uuid[], %s::uuid[])"
                        " AS used(tenant_id, key_id) WHERE NOT EXISTS (SELECT 1 FROM {tenants} k"
                        " WHERE k.tenant_id = used.tenant_id AND k.key_id = used.key_id))"
                        # the epoch we wrapped new tenant keys under was replaced
                        " OR EXISTS (SELECT 1 FROM unnest(%s::uuid[]) AS used(epoch_id)"
                        " WHERE NOT EXISTS (SELECT 1 FROM {epochs} e"
                        " WHERE e.epoch_id = used.epoch_id AND e.state = 'current'))"
                        " AS conflict"
                    ).format(
                        tenants=t["tenant_keys"],
                        subjects=t["subject_keys"],
                        epochs=t["key_epochs"],
                    ),
                    (
                        list(pending.new_tenants),
                        [p[0] for p in pairs],
                        [p[1] for p in pairs],
                        [w[0] for w in wrapping],
                        [w[1] for w in wrapping],
                        list({epoch_id for _, epoch_id, _, _ in pending.new_tenants.values()}),
                    ),
                )
                .fetchone()
            )
        return bool(row and row["conflict"])

    def settle_pending(self, *, committed: bool, retrying: bool = False) -> None:
        """After the event transaction: cache what was committed, forget what was not.
        A retry after a key race looks everything up, trusting no "new" hint."""
        pending: _Pending | None = self._local.pending
        self._local.pending = None
        if retrying:
            self._forget_wrapping()  # the race may have been a replaced tenant key or epoch
            self._pending().trust_hints = False
        if pending is None or not committed:
            return
        tenants = {
            tenant_id: (key_id, key)
            for tenant_id, (key_id, _, _, key) in pending.new_tenants.items()
        }
        tenants |= pending.found_tenants
        self._remember(
            [key for key, _, _ in pending.new_subjects.values()], tenants, pending.generation
        )
        self._keep_statistics(len(pending.new_tenants) + len(pending.new_subjects))

    def _keep_statistics(self, written: int) -> None:
        """Have PostgreSQL analyze the key tables each time this process has doubled the
        keys it wrote. A save looks up the tenant keys it wraps under (until December 2026
        a foreign key checked each new subject key), and PostgreSQL keeps the plan of that
        look-up that it chose while the table was small: a scan of the whole table.
        Registering customers into fresh key tables then slowed down with every customer
        (server CPU per 100 new tenants: 61 ms over the first 3,000, 285 ms between 9,000
        and 12,000; 6 ms once analyzed) until autovacuum
        analyzed the tables, which it does at most once a minute. An analysis invalidates
        those plans in every session."""
        with self._lock:
            self._keys_written += written
            if self._keys_written < self._analyze_after:
                return
            self._analyze_after = 2 * self._keys_written
        t = self._t
        with self.datastore.get_connection() as conn:  # autocommit
            conn.execute(sql.SQL("ANALYZE {}, {}").format(t["tenant_keys"], t["subject_keys"]))

    # Opening

    def opening_key(self, key_id: bytes) -> SubjectKey | None:
        """The key whose id is these 16 bytes, or None once it has been destroyed."""
        pending: _Pending | None = self._local.pending
        if pending is not None and pending.new_subjects:
            for key, _, _ in pending.new_subjects.values():
                if key.raw_id == key_id:
                    return key
        if self._listening.is_set():
            try:
                return self._by_id[key_id]  # a plain dict read: no lock needed
            except KeyError:
                pass
        return self.load([key_id]).get(key_id)

    def load(self, key_ids: Iterable[bytes]) -> dict[bytes, SubjectKey | None]:
        """Fetch keys not at hand in one round trip (a replay calls this per page)."""
        ids = list(key_ids)
        self._finish_loading()  # its connection may be the pool's only one
        return self._across_rotations(lambda: self._load_once(ids))

    def load_soon(self, key_ids: Iterable[bytes]) -> Callable[[], object]:
        """Send the query for the keys not at hand and return without waiting for its
        answer; the call returned finishes the load (as `load` would have). Meanwhile the
        caller works (a replay decodes and builds other events) while the server looks
        the keys up: their wait, a tenth of a replay's time, is spent working."""
        self._finish_loading()  # one query in flight per thread
        wanted = self._wanted(key_ids)
        if not wanted:
            return _nothing_to_load
        generation = self._generation
        if self._load_statement is None:
            self._load_statement = self._composed_load_statement()
        held = contextlib.ExitStack()  # the pooled connection, until the answer is in
        with contextlib.ExitStack() as failing:  # let go of both if the query is not sent
            failing.push(held)
            conn = held.enter_context(self.datastore.get_connection())
            pipeline = conn.pipeline()
            pipeline.__enter__()
            failing.push(pipeline)
            curs = conn.cursor(row_factory=tuple_row, binary=True)
            curs.execute(self._load_statement, (arrays.raw_uuid_array(wanted),), prepare=True)
            failing.pop_all()
        loading = _Loading(self, held, pipeline, curs, wanted, generation)
        self._local.loading = loading
        return loading

    def _finish_loading(self) -> None:
        loading = self._local.loading
        if loading is not None:
            loading()

    def _wanted(self, key_ids: Iterable[bytes]) -> list[bytes]:
        """The ids of keys not at hand (when nothing is cached, all of them)."""
        if self._listening.is_set():
            return [k for k in set(key_ids) if k not in self._by_id]
        return list(set(key_ids))

    def _load_once(self, key_ids: list[bytes]) -> dict[bytes, SubjectKey | None]:
        wanted = self._wanted(key_ids)
        if not wanted:
            return {}
        generation = self._generation
        if self._load_statement is None:
            self._load_statement = self._composed_load_statement()
        with self.datastore.get_connection() as conn:  # autocommit: one round trip
            columns = (
                conn.cursor(row_factory=tuple_row, binary=True)
                .execute(self._load_statement, (arrays.raw_uuid_array(wanted),), prepare=True)
                .fetchone()
            )
        return self._unwrap_loaded(columns, wanted, generation)

    def _unwrap_loaded(
        self, columns: tuple[Any, ...] | None, wanted: list[bytes], generation: int
    ) -> dict[bytes, SubjectKey | None]:
        """The keys of the load statement's answer, unwrapped and cached."""
        # Aggregates answer one row, each array NULL when nothing was found.
        tenant_ids, tenant_key_ids, tenant_wrapped, epoch_ids = (columns or (None,) * 8)[:4]
        key_ids, subjects, wrapped, subject_tenants = (columns or (None,) * 8)[4:]
        tenants: dict[bytes, AESGCM] = {}  # by the tenant id's bytes
        # Each epoch's id and key, by its id's bytes: a page's tenants share one or two.
        epochs: dict[bytes | None, tuple[UUID | None, AESGCM]] = {}
        cached = self._tenant_keys  # a replay's store has none: no UUID to look one up
        for tenant_raw, tenant_key_raw, tenant_key_wrapped, epoch_raw in zip(
            tenant_ids or (),
            tenant_key_ids or (),
            tenant_wrapped or (),
            epoch_ids or (),
            strict=True,
        ):
            known = cached.get(UUID(bytes=tenant_raw)) if cached else None
            if known is not None and known[0] == tenant_key_raw:
                tenants[tenant_raw] = known[1]
                continue
            epoch = epochs.get(epoch_raw)
            if epoch is None:
                epoch = epochs[epoch_raw] = self._wrapping_epoch(epoch_raw)
            epoch_id, wrapping = epoch
            tenants[tenant_raw] = AESGCM(
                _unwrap(
                    wrapping,
                    tenant_key_wrapped,
                    _tenant_aad(tenant_raw, tenant_key_raw, epoch_id),
                )
            )
        found: dict[bytes, SubjectKey | None] = dict.fromkeys(wanted)
        unwrapped = []
        for key_id, subject, key_wrapped, tenant_raw in zip(
            key_ids or (), subjects or (), wrapped or (), subject_tenants or (), strict=True
        ):
            tenant_key = tenants.get(tenant_raw)
            if tenant_key is None:
                continue  # its tenant key is gone (erased with it): it reads as erased
            # `_unwrap_subject`, written out: a replay unwraps two keys a customer.
            key = SubjectKey(
                key_id,
                tenant_raw,
                subject,
                AESGCM(_unwrap(tenant_key, key_wrapped, _subject_aad(key_id, subject))),
            )
            found[key_id] = key
            unwrapped.append(key)
        # Tenant keys are not cached here: a replay never uses them again, and a save
        # that needs one looks it up with the subject keys it looks up anyway.
        missing = (
            [raw for raw, k in found.items() if k is None] if len(unwrapped) < len(found) else ()
        )
        self._remember(unwrapped, {}, generation, missing=missing)
        return found

    def _wrapping_epoch(self, epoch_raw: bytes | None) -> tuple[UUID | None, AESGCM]:
        """The id (None: the master key, from before epochs) and key of what wraps the
        tenant keys that name this epoch's id (its 16 bytes)."""
        if epoch_raw is None:
            return None, self._master
        epoch_id = UUID(bytes=epoch_raw)
        return epoch_id, self._epoch(epoch_id)

    def _composed_load_statement(self) -> bytes:
        """`_load_once`'s statement, composed once. Binary both ways: a replay's page asks
        for hundreds of keys, and text uuids and hex bytea, parsed on either side, cost
        more than the query. The ids go as one uuid[] in its binary form, built from their
        16 bytes (`arrays.raw_uuid_array`: psycopg's list dumper cost more than building it,
        and the text of an array literal cost the server a fifth of the query to parse:
        1.21 → 0.97 ms of its CPU for 250 keys of 125 tenants), and come back as their 16 bytes: a UUID object each, made only to be sent or to be turned back
        into bytes, cost more than the query and kept the garbage collector busy. The keys
        come as one row of columns (arrays, in one order per table: the aggregates of one
        query read its rows in one order), not a tuple a key for the collector to count.
        Each tenant's key comes once, found by its primary key (a join scanned the whole
        tenant table for every page)."""
        t = self._t
        statement = sql.SQL(
            "WITH s AS MATERIALIZED (SELECT key_id, subject, wrapped, tenant_id FROM {subjects}"
            "  WHERE key_id = ANY(%b::uuid[]))"
            " SELECT * FROM (SELECT array_agg(uuid_send(tenant_id)), array_agg(uuid_send(key_id)),"
            "  array_agg(wrapped), array_agg(uuid_send(epoch_id)) FROM {tenants}"
            "  WHERE tenant_id = ANY(ARRAY(SELECT DISTINCT tenant_id FROM s))) t,"
            " (SELECT array_agg(uuid_send(key_id)), array_agg(subject), array_agg(wrapped),"
            "  array_agg(uuid_send(tenant_id)) FROM s) k"
        ).format(subjects=t["subject_keys"], tenants=t["tenant_keys"])
        with self.datastore.get_connection() as conn:
            return statement.as_bytes(conn)

    def subject_key(self, tenant_id: UUID, subject: str) -> SubjectKey | None:
        """The subject's live key, or None; never a new one (the views seal under the keys
        the events were sealed under, which exist by the time a view takes the event)."""
        if self._listening.is_set():
            key = self._by_subject.get(_subject_slot(tenant_id.bytes, subject))
            if key is not None:
                return key
        query = sql.SQL("SELECT key_id FROM {} WHERE tenant_id = %s AND subject = %s").format(
            self._t["subject_keys"]
        )
        with self.datastore.get_connection() as conn:
            row = conn.cursor().execute(query, (tenant_id, subject)).fetchone()
        if row is None:
            return None
        raw = row["key_id"].bytes
        if self._listening.is_set() and raw in self._by_id:
            return self._by_id[raw]
        return self.load([raw]).get(raw)

    def was_destroyed(self, key_id: bytes) -> bool:
        """Whether the key with this 16-byte id was destroyed (not merely never made)."""
        if len(key_id) != 16:
            return False
        with self.datastore.get_connection() as conn:
            row = (
                conn.cursor()
                .execute(
                    sql.SQL("SELECT 1 AS found FROM {} WHERE key_id = %s").format(
                        self._t["destroyed_keys"]
                    ),
                    (UUID(bytes=key_id),),
                )
                .fetchone()
            )
        return row is not None

    def live_subjects(self, tenant_id: UUID, prefix: str) -> list[str]:
        """The names of the tenant's live subject keys starting with `prefix`."""
        pattern = prefix.replace("%", r"\%").replace("_", r"\_") + "%"
        with self.datastore.get_connection() as conn:
            rows = (
                conn.cursor()
                .execute(
                    sql.SQL(
                        "SELECT subject FROM {} WHERE tenant_id = %s AND subject LIKE %s ORDER BY 1"
                    ).format(self._t["subject_keys"]),
                    (tenant_id, pattern),
                )
                .fetchall()
            )
        return [row["subject"] for row in rows]

    def _unwrap_tenant(
        self, tenant_id: bytes, key_id: bytes, epoch_id: UUID | None, wrapped: bytes
    ) -> AESGCM:
        return AESGCM(self._unwrap_tenant_material(tenant_id, key_id, epoch_id, wrapped))

    def _unwrap_tenant_material(
        self, tenant_id: bytes, key_id: bytes, epoch_id: UUID | None, wrapped: bytes
    ) -> bytes:
        """A tenant key's material; the ids as their 16 bytes."""
        wrapping = self._master if epoch_id is None else self._epoch(epoch_id)
        return _unwrap(wrapping, wrapped, _tenant_aad(tenant_id, key_id, epoch_id))

    def _epoch(self, epoch_id: UUID) -> AESGCM:
        """An epoch's key, read from its file (cached while destructions are heard of)."""
        cached = self._epochs.get(epoch_id) if self._listening.is_set() else None
        if cached is not None:
            return cached
        epoch = AESGCM(read_epoch_key(self.key_dir, epoch_id))
        if self._listening.is_set():
            self._epochs[epoch_id] = epoch
        return epoch

    def _current(self) -> tuple[UUID, AESGCM]:
        """The epoch new tenant keys are wrapped under."""
        return self._across_rotations(self._current_once)

    def _current_once(self) -> tuple[UUID, AESGCM]:
        epoch_id = self._current_epoch if self._listening.is_set() else None
        if epoch_id is None:
            with self.datastore.get_connection() as conn:
                row = (
                    conn.cursor()
                    .execute(
                        sql.SQL("SELECT epoch_id FROM {} WHERE state = 'current'").format(
                            self._t["key_epochs"]
                        )
                    )
                    .fetchone()
                )
            if row is None:
                raise EpochKeyMissing(
                    "no key epoch is current: the key store was not started (start_epochs)"
                )
            epoch_id = row["epoch_id"]
            if self._listening.is_set():
                self._current_epoch = epoch_id
        return epoch_id, self._epoch(epoch_id)

    @staticmethod
    def _unwrap_subject(
        tenant_raw: bytes, subject: str, key_id: bytes, wrapped: bytes, tenant_key: AESGCM
    ) -> SubjectKey:
        """A subject key; its id and its tenant's as their 16 bytes."""
        material = _unwrap(tenant_key, wrapped, _subject_aad(key_id, subject))
        return SubjectKey(key_id, tenant_raw, subject, AESGCM(material))

    def _remember(
        self,
        keys: Iterable[SubjectKey],
        tenants: dict[UUID, TenantKey],
        generation: int,
        missing: Iterable[bytes] = (),
    ) -> None:
        if not self._listening.is_set():
            return
        with self._lock:
            # A destruction seen since the keys were read may concern them: cache nothing.
            if generation != self._generation:
                return
            self._tenant_keys.update(tenants)
            for key in keys:
                self._by_subject[_subject_slot(key.tenant_raw, key.subject)] = key
                self._by_id[key.raw_id] = key
            for raw in missing:
                self._by_id[raw] = None  # destroyed keys never come back

    # Destroying: the erasure

    def destroy_subject_key(self, tenant_id: UUID, subject: str) -> list[DestroyedKey]:
        t = self._t
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                sql.SQL(
                    "WITH gone AS (DELETE FROM {} WHERE tenant_id = %s AND subject = %s"
                    " RETURNING key_id, tenant_id, subject)"
                    " INSERT INTO {} (key_id, tenant_id, subject, epoch_id)"
                    " SELECT gone.*, (SELECT epoch_id FROM {} WHERE tenant_id = %s) FROM gone"
                    " RETURNING key_id, tenant_id, subject"
                ).format(t["subject_keys"], t["destroyed_keys"], t["tenant_keys"]),
                (tenant_id, subject, tenant_id),
            )
            destroyed = [
                DestroyedKey(r["key_id"], r["tenant_id"], r["subject"]) for r in curs.fetchall()
            ]
            for key in destroyed:
                curs.execute("SELECT pg_notify(%s, %s)", (self.channel, f"key:{key.key_id}"))
            if destroyed:
                self._rewrap_due(curs, tenant_id)
        self._forget(key_ids=[k.key_id for k in destroyed], tenant_id=None)
        self._vacuum()
        self._replace_unless_batching()
        return destroyed

    def destroy_tenant_keys(self, tenant_id: UUID) -> list[DestroyedKey]:
        t = self._t
        with self.datastore.transaction(commit=True) as curs:
            # The tenant key first: its deletion waits for any save still writing a subject
            # key under it (that save locks it, `write_pending`), so the subject keys'
            # deletion, a statement later, sees every one committed; a save after it finds
            # the tenant key gone and writes nothing.
            curs.execute(
                sql.SQL(
                    "WITH gone AS (DELETE FROM {} WHERE tenant_id = %s"
                    " RETURNING key_id, tenant_id, epoch_id)"
                    " INSERT INTO {} (key_id, tenant_id, subject, epoch_id)"
                    " SELECT key_id, tenant_id, NULL, epoch_id FROM gone RETURNING key_id"
                ).format(t["tenant_keys"], t["destroyed_keys"]),
                (tenant_id,),
            )
            tenant_key = [DestroyedKey(r["key_id"], tenant_id, None) for r in curs.fetchall()]
            curs.execute(
                sql.SQL(
                    "WITH gone AS (DELETE FROM {} WHERE tenant_id = %s"
                    " RETURNING key_id, tenant_id, subject)"
                    " INSERT INTO {} (key_id, tenant_id, subject) SELECT * FROM gone"
                    " RETURNING key_id, tenant_id, subject"
                ).format(t["subject_keys"], t["destroyed_keys"]),
                (tenant_id,),
            )
            destroyed = [
                DestroyedKey(r["key_id"], r["tenant_id"], r["subject"]) for r in curs.fetchall()
            ]
            destroyed += tenant_key
            curs.execute("SELECT pg_notify(%s, %s)", (self.channel, f"tenant:{tenant_id}"))
            if destroyed:
                self._rewrap_due(curs, tenant_id)
        self._forget(key_ids=[k.key_id for k in destroyed], tenant_id=tenant_id)
        self._vacuum()
        self._replace_unless_batching()
        return destroyed

    def _rewrap_due(self, curs: Any, tenant_id: UUID) -> None:
        """Recorded with the destruction, so a crash before the replacement only delays it
        (the next start, or the next replacement, does it)."""
        curs.execute(
            sql.SQL("INSERT INTO {} (tenant_id) VALUES (%s) ON CONFLICT DO NOTHING").format(
                self._t["rewrap_due"]
            ),
            (tenant_id,),
        )

    def _replace_unless_batching(self) -> None:
        if not self._batching:
            self.replace_wrapping_keys()

    @contextlib.contextmanager
    def batched_replacement(self) -> Iterator[None]:
        """Destroy many keys, then replace the wrapping keys once (a retention run)."""
        self._batching += 1
        try:
            yield
        finally:
            self._batching -= 1
        if not self._batching:
            self.replace_wrapping_keys()

    # Key-encryption-key epochs

    @contextlib.contextmanager
    def _epoch_lock(self) -> Iterator[psycopg.Connection[Any]]:
        """One process at a time starts, rotates or cleans up epochs (a session advisory
        lock, on a connection of its own, held across the file and database steps)."""
        with psycopg.connect(**connection_kwargs(self.datastore), autocommit=True) as conn:
            conn.row_factory = dict_row
            conn.execute(
                "SELECT pg_advisory_lock(hashtextextended(%s, 0))",
                (f"{self._schema}.picasse_key_epochs",),
            )
            yield conn  # closing the session releases the lock (also on a crash)

    def start_epochs(self) -> None:
        """On start: finish what a crash interrupted. Epoch files no longer current are
        destroyed; a current epoch whose file is missing is a clear error; the first
        start makes the first epoch (re-wrapping tenant keys from before epochs); key
        replacements still due are done."""
        with self._epoch_lock() as conn:
            self._destroy_retired(conn)
            row = conn.execute(
                sql.SQL("SELECT epoch_id FROM {} WHERE state = 'current'").format(
                    self._t["key_epochs"]
                )
            ).fetchone()
            if row is not None:
                read_epoch_key(self.key_dir, row["epoch_id"])  # EpochKeyMissing, said clearly
            due = conn.execute(
                sql.SQL("SELECT EXISTS (SELECT 1 FROM {}) AS due").format(self._t["rewrap_due"])
            ).fetchone()
            if row is None or (due and due["due"]):
                self._rotate(conn)

    def replace_wrapping_keys(self) -> DestroyedEpoch | None:
        """After keys were destroyed: new tenant keys for the tenants they belonged to,
        every tenant key under a new epoch, the old epoch's file destroyed. Nothing to
        do (None) when no destruction is waiting for it."""
        with self._epoch_lock() as conn:
            self._destroy_retired(conn)
            return self._rotate(conn, only_if_due=True)

    def _rotate(
        self, conn: psycopg.Connection[Any], *, only_if_due: bool = False
    ) -> DestroyedEpoch | None:
        t = self._t
        due = [
            r["tenant_id"]
            for r in conn.execute(sql.SQL("SELECT tenant_id FROM {}").format(t["rewrap_due"]))
        ]
        if only_if_due and not due:
            return None
        new_id = uuid4()
        # 1. The new epoch is recorded as pending, then its file written: a crash now
        #    leaves a pending epoch, whose file the next start destroys.
        conn.execute(
            sql.SQL("INSERT INTO {} (epoch_id, state) VALUES (%s, 'pending')").format(
                t["key_epochs"]
            ),
            (new_id,),
        )
        new_epoch = AESGCM(create_epoch_key(self.key_dir, new_id))
        self.fault("epoch-written")
        # 2. One transaction re-wraps everything: live keys are under the old epoch or the
        #    new one, never neither.
        with conn.transaction():
            old = conn.execute(
                sql.SQL(
                    "UPDATE {} SET state = 'retired' WHERE state = 'current' RETURNING epoch_id"
                ).format(t["key_epochs"])
            ).fetchone()  # waits for saves holding the old epoch (FOR SHARE) to end
            conn.execute(
                sql.SQL("UPDATE {} SET state = 'current' WHERE epoch_id = %s").format(
                    t["key_epochs"]
                ),
                (new_id,),
            )
            tenants = conn.execute(
                sql.SQL(
                    "SELECT tenant_id, key_id, epoch_id, wrapped FROM {} ORDER BY tenant_id"
                    " FOR UPDATE"
                ).format(t["tenant_keys"])
            ).fetchall()
            due_set = set(due)
            rewrapped: list[tuple[UUID, UUID, bytes]] = []  # tenant, key id, wrapped
            for row in tenants:
                tenant_id, key_id = row["tenant_id"], row["key_id"]
                material = self._unwrap_tenant_material(
                    tenant_id.bytes, key_id.bytes, row["epoch_id"], bytes(row["wrapped"])
                )
                if tenant_id in due_set:
                    key_id, material = self._replace_tenant_key(conn, tenant_id, material)
                wrapped = _wrap(
                    new_epoch, material, _tenant_aad(tenant_id.bytes, key_id.bytes, new_id)
                )
                rewrapped.append((tenant_id, key_id, wrapped))
            if rewrapped:
                conn.execute(
                    sql.SQL(
                        "UPDATE {} k SET key_id = n.key_id, epoch_id = %s, wrapped = n.wrapped"
                        " FROM unnest(%s::uuid[], %s::uuid[], %s::bytea[]) AS n(tenant_id, key_id, wrapped)"
                        " WHERE k.tenant_id = n.tenant_id"
                    ).format(t["tenant_keys"]),
                    (new_id, *(list(column) for column in zip(*rewrapped, strict=True))),
                )
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE tenant_id = ANY(%s)").format(t["rewrap_due"]), (due,)
            )
            conn.execute("SELECT pg_notify(%s, %s)", (self.channel, f"epoch:{new_id}"))
        self._forget_wrapping()
        self.fault("rewrapped")
        # 3. The old epoch wraps nothing any more: its file goes.
        destroyed = self._destroy_retired(conn)
        self._vacuum()
        if old is None:
            return None
        return next((d for d in destroyed if d.epoch_id == old["epoch_id"]), None)

    def _replace_tenant_key(
        self, conn: psycopg.Connection[Any], tenant_id: UUID, old_material: bytes
    ) -> tuple[UUID, bytes]:
        """A new tenant key for a tenant one of whose keys was destroyed; its live subject
        keys are re-wrapped under it. Returns its id and material."""
        old_key = AESGCM(old_material)
        key_id = uuid4()
        material = AESGCM.generate_key(bit_length=256)
        tenant_key = AESGCM(material)
        subjects = conn.execute(
            sql.SQL(
                "SELECT key_id, subject, wrapped FROM {} WHERE tenant_id = %s FOR UPDATE"
            ).format(self._t["subject_keys"]),
            (tenant_id,),
        ).fetchall()
        ids, wrapped = [], []
        for row in subjects:
            aad = _subject_aad(row["key_id"].bytes, row["subject"])
            ids.append(row["key_id"])
            wrapped.append(_wrap(tenant_key, _unwrap(old_key, bytes(row["wrapped"]), aad), aad))
        conn.execute(
            sql.SQL(
                "UPDATE {} s SET wrapped = n.wrapped, tenant_key_id = %s"
                " FROM unnest(%s::uuid[], %s::bytea[]) AS n(key_id, wrapped)"
                " WHERE s.key_id = n.key_id"
            ).format(self._t["subject_keys"]),
            (key_id, ids, wrapped),
        )
        return key_id, material

    def _destroy_retired(self, conn: psycopg.Connection[Any]) -> list[DestroyedEpoch]:
        """Destroy the files of epochs that wrap nothing (retired, or pending from an
        interrupted rotation), then record them destroyed, at a time no earlier."""
        rows = conn.execute(
            sql.SQL("SELECT epoch_id FROM {} WHERE state IN ('pending', 'retired')").format(
                self._t["key_epochs"]
            )
        ).fetchall()
        for row in rows:
            destroy_epoch_key(self.key_dir, row["epoch_id"])
        if not rows:
            return []
        done = conn.execute(
            sql.SQL(
                "UPDATE {} SET state = 'destroyed', destroyed_at = now()"
                " WHERE epoch_id = ANY(%s) RETURNING epoch_id, destroyed_at"
            ).format(self._t["key_epochs"]),
            ([r["epoch_id"] for r in rows],),
        ).fetchall()
        return [DestroyedEpoch(r["epoch_id"], r["destroyed_at"]) for r in done]

    def destroyed_epoch(self, tenant_id: UUID) -> DestroyedEpoch | None:
        """The epoch that wrapped this tenant's key when it was destroyed, once its file is
        destroyed (a replacement still due is done first); None for a tenant key
        destroyed before epochs existed."""
        self.replace_wrapping_keys()
        with self.datastore.get_connection() as conn:
            row = (
                conn.cursor()
                .execute(
                    sql.SQL(
                        "SELECT e.epoch_id, e.destroyed_at FROM {} d JOIN {} e USING (epoch_id)"
                        " WHERE d.tenant_id = %s AND d.subject IS NULL AND e.state = 'destroyed'"
                    ).format(self._t["destroyed_keys"], self._t["key_epochs"]),
                    (tenant_id,),
                )
                .fetchone()
            )
        return None if row is None else DestroyedEpoch(row["epoch_id"], row["destroyed_at"])

    def epoch_is_gone(self, epoch_id: UUID) -> bool:
        """No key file for this epoch, and no tenant key wrapped under it."""
        if epoch_key_path(self.key_dir, epoch_id).exists():
            return False
        with self.datastore.get_connection() as conn:
            row = (
                conn.cursor()
                .execute(
                    sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE epoch_id = %s) AS used").format(
                        self._t["tenant_keys"]
                    ),
                    (epoch_id,),
                )
                .fetchone()
            )
        return not (row and row["used"])

    def destroyed_keys(self, tenant_id: UUID) -> list[DestroyedKey]:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                sql.SQL(
                    "SELECT key_id, tenant_id, subject FROM {} WHERE tenant_id = %s"
                    " ORDER BY destroyed_at, subject NULLS LAST"
                ).format(self._t["destroyed_keys"]),
                (tenant_id,),
            )
            return [
                DestroyedKey(r["key_id"], r["tenant_id"], r["subject"]) for r in curs.fetchall()
            ]

    def live_key_count(self, tenant_id: UUID) -> int:
        """Keys of this tenant that still exist (none after its erasure)."""
        t = self._t
        with self.datastore.get_connection() as conn:
            row = (
                conn.cursor()
                .execute(
                    sql.SQL(
                        "SELECT (SELECT count(*) FROM {} WHERE tenant_id = %(t)s)"
                        " + (SELECT count(*) FROM {} WHERE tenant_id = %(t)s) AS n"
                    ).format(t["tenant_keys"], t["subject_keys"]),
                    {"t": tenant_id},
                )
                .fetchone()
            )
        return int(row["n"]) if row else 0

    def subjects_with_prefix(self, prefixes: Iterable[str]) -> list[tuple[UUID, str]]:
        """(tenant, subject) of the live subject keys whose names start with a prefix."""
        patterns = [prefix.replace("%", r"\%").replace("_", r"\_") + "%" for prefix in prefixes]
        with self.datastore.get_connection() as conn:
            rows = (
                conn.cursor()
                .execute(
                    sql.SQL(
                        "SELECT tenant_id, subject FROM {} WHERE subject LIKE ANY(%s) ORDER BY 1, 2"
                    ).format(self._t["subject_keys"]),
                    (patterns,),
                )
                .fetchall()
            )
        return [(row["tenant_id"], row["subject"]) for row in rows]

    def _vacuum(self) -> None:
        # Deleted rows linger in table pages until vacuumed; wrapped keys should not.
        with (
            contextlib.suppress(psycopg.Error, PersistenceError),
            self.datastore.get_connection() as conn,
        ):
            for table in ("subject_keys", "tenant_keys"):
                conn.execute(sql.SQL("VACUUM {}").format(self._t[table]))

    def _forget(self, *, key_ids: Iterable[UUID], tenant_id: UUID | None) -> None:
        with self._lock:
            self._generation += 1
            for key_id in key_ids:
                key = self._by_id.pop(key_id.bytes, None)
                if key is not None:
                    self._by_subject.pop(_subject_slot(key.tenant_raw, key.subject), None)
                self._by_id[key_id.bytes] = None
            if tenant_id is not None:
                self._tenant_keys.pop(tenant_id, None)
                tenant_raw = tenant_id.bytes
                for raw, key in list(self._by_id.items()):
                    if key is not None and key.tenant_raw == tenant_raw:
                        self._by_id[raw] = None
                        self._by_subject.pop(_subject_slot(tenant_raw, key.subject), None)

    def _forget_wrapping(self) -> None:
        """Tenant and epoch keys were replaced; subject keys themselves are unchanged."""
        with self._lock:
            self._generation += 1
            self._tenant_keys.clear()
            self._epochs.clear()
            self._current_epoch = None

    def _forget_everything(self) -> None:
        with self._lock:
            self._generation += 1
            self._epochs.clear()
            self._current_epoch = None
            self._tenant_keys.clear()
            self._by_subject.clear()
            self._by_id.clear()

    # Listening for destructions by other processes

    def _on_notice(self, payload: str) -> None:
        what, _, ident = payload.partition(":")
        try:
            uuid = UUID(ident)
        except ValueError:
            return
        if what == "epoch":
            self._forget_wrapping()
        elif what == "tenant":
            self._forget(key_ids=(), tenant_id=uuid)
        elif what == "key":
            self._forget(key_ids=(uuid,), tenant_id=None)

    def close(self) -> None:
        self.notices.close()


def tenant_has_keys(database_url: str, schema: str, tenant_id: UUID) -> bool:
    """Whether any data subject of this tenant has a key: for staff (the platform tenant),
    whether any staff account exists, without reading the log."""
    table = sql.Identifier(schema or "public", "picasse_subject_keys")
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            row = conn.execute(
                sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE tenant_id = %s)").format(table),
                (tenant_id,),
            ).fetchone()
    except psycopg.errors.UndefinedTable:
        return False
    return bool(row and row[0])
