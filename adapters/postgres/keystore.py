"""Key store in PostgreSQL: master → tenant → data subject keys, wrapped at rest.

Destroying a key deletes its wrapped form and tells every process (LISTEN/NOTIFY) to
drop its cached copy; a process whose listener is down does not cache at all.
New keys are written in the same transaction as the first events sealed under them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterable
from typing import Any
from uuid import UUID, uuid4

import msgspec
import psycopg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.persistence import PersistenceError
from eventsourcing.postgres import PostgresDatastore
from psycopg import sql

from picasse.adapters.crypto import SealingNeed, SubjectKey, new_subject_key
from picasse.adapters.postgres.roles import serialize_schema_changes

log = logging.getLogger(__name__)

NONCE_SIZE = 12


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


class _Pending:
    """This thread's keys for the save under way: found, created, or known absent."""

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.new_tenants: dict[UUID, tuple[UUID, bytes, AESGCM]] = {}  # key id, wrapped, key
        self.new_subjects: dict[tuple[UUID, str], tuple[SubjectKey, bytes]] = {}
        self.found_subjects: dict[tuple[UUID, str], SubjectKey] = {}
        self.found_tenants: dict[UUID, AESGCM] = {}
        self.absent_subjects: set[tuple[UUID, str]] = set()
        self.absent_tenants: set[UUID] = set()
        self.erased_tenants: set[UUID] = set()
        self.sealed_events: dict[UUID, int] = {}  # tenant → events of this save holding its data
        self.trust_hints = True


def _wrap(wrapping: AESGCM, material: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_SIZE)
    return nonce + wrapping.encrypt(nonce, material, aad)


def _unwrap(wrapping: AESGCM, wrapped: bytes, aad: bytes) -> bytes:
    return wrapping.decrypt(wrapped[:NONCE_SIZE], wrapped[NONCE_SIZE:], aad)


def _tenant_aad(tenant_id: UUID, key_id: UUID) -> bytes:
    return b"tenant" + tenant_id.bytes + key_id.bytes


def _subject_aad(key_id: UUID, subject: str) -> bytes:
    return b"subject" + key_id.bytes + subject.encode()


class PostgresKeyStore:
    def __init__(
        self, datastore: PostgresDatastore, master_key: bytes, *, listen: bool = True
    ) -> None:
        self.datastore = datastore
        self._master = AESGCM(master_key)
        schema = datastore.schema
        self._schema = schema
        self.channel = f"{schema}_picasse_keys"
        self._t = {
            name: sql.Identifier(schema, f"picasse_{name}")
            for name in ("tenant_keys", "subject_keys", "destroyed_keys", "sealed_events")
        }
        self._lock = threading.Lock()
        self._tenant_keys: dict[UUID, AESGCM] = {}
        self._by_subject: dict[tuple[UUID, str], SubjectKey] = {}
        self._by_id: dict[bytes, SubjectKey | None] = {}  # by the key id's 16 bytes
        self._generation = 0
        self._local = threading.local()
        self._listening = threading.Event()
        self._stopping = threading.Event()
        self._listener: threading.Thread | None = None
        if listen:
            self._listener = threading.Thread(target=self._listen, name="key-listener", daemon=True)
            self._listener.start()
            self._listening.wait(timeout=10)

    # Schema

    def create_tables(self) -> None:
        t = self._t
        statements = [
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self._schema)),
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (tenant_id uuid PRIMARY KEY,"
                " key_id uuid NOT NULL UNIQUE, wrapped bytea NOT NULL,"
                " created_at timestamptz NOT NULL DEFAULT now())"
            ).format(t["tenant_keys"]),
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (key_id uuid PRIMARY KEY,"
                " tenant_id uuid NOT NULL REFERENCES {} ON DELETE CASCADE,"
                " subject text NOT NULL, wrapped bytea NOT NULL,"
                " created_at timestamptz NOT NULL DEFAULT now(), UNIQUE (tenant_id, subject))"
            ).format(t["subject_keys"], t["tenant_keys"]),
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (key_id uuid PRIMARY KEY, tenant_id uuid NOT NULL,"
                " subject text, destroyed_at timestamptz NOT NULL DEFAULT now())"
            ).format(t["destroyed_keys"]),
            # How many events hold each tenant's sealed data: what an erasure makes unreadable,
            # known without reading the log (erasure cost must not grow with history).
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (tenant_id uuid PRIMARY KEY, events bigint NOT NULL)"
            ).format(t["sealed_events"]),
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (tenant_id)").format(
                sql.Identifier("picasse_destroyed_keys_tenant_idx"), t["destroyed_keys"]
            ),
        ]
        with self.datastore.transaction(commit=True) as curs:
            serialize_schema_changes(curs)  # concurrent first starts
            for statement in statements:
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
            if cached and pair in self._by_subject:
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
        t = self._t
        tenants |= {tenant for tenant, _ in subjects}
        query = sql.SQL(
            "SELECT s.tenant_id, s.subject, s.key_id, s.wrapped,"
            " NULL::uuid AS tenant_key_id, NULL::bytea AS tenant_wrapped FROM {subjects} s"
            " JOIN unnest(%s::uuid[], %s::text[]) AS wanted(tenant_id, subject)"
            " USING (tenant_id, subject)"
            " UNION ALL SELECT k.tenant_id, NULL, NULL, NULL, k.key_id, k.wrapped"
            " FROM {tenants} k WHERE k.tenant_id = ANY(%s)"
            " UNION ALL SELECT d.tenant_id, NULL, NULL, NULL, NULL, NULL FROM {destroyed} d"
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
                pending.found_tenants[tenant_id] = self._unwrap_tenant(
                    tenant_id, row["tenant_key_id"], bytes(row["tenant_wrapped"])
                )
            else:
                pending.erased_tenants.add(tenant_id)
        found: list[SubjectKey] = []
        for row in wrapped_subjects:
            tenant_key = pending.found_tenants[row["tenant_id"]]
            key = self._unwrap_subject(
                row["tenant_id"], row["subject"], row["key_id"], bytes(row["wrapped"]), tenant_key
            )
            pending.found_subjects[(key.tenant_id, key.subject)] = key
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
        key = pending.found_subjects.get(pair)
        if key is not None:
            return key
        if self._listening.is_set():
            key = self._by_subject.get(pair)
            if key is not None:
                return key
        if pair not in pending.absent_subjects:
            self.prefetch([SealingNeed(tenant_id, subject, new_subject, new_tenant)])
            key = pending.found_subjects.get(pair)
            if key is not None:
                return key
        tenant_key = self._tenant_key(tenant_id, pending, new_tenant)
        key, material = new_subject_key(tenant_id, subject)
        pending.new_subjects[pair] = (
            key,
            _wrap(tenant_key, material, _subject_aad(key.key_id, subject)),
        )
        return key

    def _pending(self) -> _Pending:
        pending: _Pending | None = getattr(self._local, "pending", None)
        if pending is None:
            pending = self._local.pending = _Pending(self._generation)
        return pending

    def _tenant_key(self, tenant_id: UUID, pending: _Pending, new_tenant: bool) -> AESGCM:
        made = pending.new_tenants.get(tenant_id)
        if made is not None:
            return made[2]
        found = pending.found_tenants.get(tenant_id)
        if found is not None:
            return found
        if self._listening.is_set():
            cached = self._tenant_keys.get(tenant_id)
            if cached is not None:
                return cached
        if tenant_id not in pending.absent_tenants and tenant_id not in pending.erased_tenants:
            self._look_up(pending, set(), {tenant_id})
            found = pending.found_tenants.get(tenant_id)
            if found is not None:
                return found
        if tenant_id in pending.erased_tenants:
            raise TenantErased(tenant_id)
        key_id = uuid4()
        material = AESGCM.generate_key(bit_length=256)
        wrapped = _wrap(self._master, material, _tenant_aad(tenant_id, key_id))
        tenant_key = AESGCM(material)
        pending.new_tenants[tenant_id] = (key_id, wrapped, tenant_key)
        return tenant_key

    # The event store's transaction writes new keys with the events sealed under them.

    def write_pending(self, curs: Any) -> None:
        """Insert this thread's new keys; a key another process made first fails the
        transaction with a unique violation, which `pending_conflicts` then explains."""
        pending: _Pending | None = getattr(self._local, "pending", None)
        if pending is None:
            return
        t = self._t
        if pending.sealed_events:
            counts = sorted(pending.sealed_events.items())  # rows locked in one order
            curs.execute(
                sql.SQL(
                    "INSERT INTO {} (tenant_id, events) SELECT * FROM unnest(%s::uuid[], %s::bigint[])"
                    " ON CONFLICT (tenant_id) DO UPDATE SET events = {}.events + excluded.events"
                ).format(t["sealed_events"], t["sealed_events"]),
                ([tenant for tenant, _ in counts], [n for _, n in counts]),
            )
        if not (pending.new_tenants or pending.new_subjects):
            return
        tenants = sorted(pending.new_tenants.items(), key=lambda item: item[0])
        subjects = sorted(pending.new_subjects.values(), key=lambda item: item[0].key_id)
        curs.execute(
            sql.SQL(
                "WITH t AS (INSERT INTO {tenants} (tenant_id, key_id, wrapped)"
                " SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::bytea[]))"
                " INSERT INTO {subjects} (key_id, tenant_id, subject, wrapped)"
                " SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::text[], %s::bytea[])"
            ).format(tenants=t["tenant_keys"], subjects=t["subject_keys"]),
            (
                [tenant_id for tenant_id, _ in tenants],
                [key_id for _, (key_id, _, _) in tenants],
                [wrapped for _, (_, wrapped, _) in tenants],
                [key.key_id for key, _ in subjects],
                [key.tenant_id for key, _ in subjects],
                [key.subject for key, _ in subjects],
                [wrapped for _, wrapped in subjects],
            ),
        )

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
        pending: _Pending | None = getattr(self._local, "pending", None)
        if pending is None or not (pending.new_tenants or pending.new_subjects):
            return False
        t = self._t
        pairs = list(pending.new_subjects)
        with self.datastore.get_connection() as conn:
            row = (
                conn.cursor()
                .execute(
                    sql.SQL(
                        "SELECT EXISTS (SELECT 1 FROM {tenants} WHERE tenant_id = ANY(%s))"
                        " OR EXISTS (SELECT 1 FROM {subjects} s JOIN unnest(%s::uuid[], %s::text[])"
                        " AS mine(tenant_id, subject) USING (tenant_id, subject)) AS conflict"
                    ).format(tenants=t["tenant_keys"], subjects=t["subject_keys"]),
                    (list(pending.new_tenants), [p[0] for p in pairs], [p[1] for p in pairs]),
                )
                .fetchone()
            )
        return bool(row and row["conflict"])

    def settle_pending(self, *, committed: bool, retrying: bool = False) -> None:
        """After the event transaction: cache what was committed, forget what was not.
        A retry after a key race looks everything up, trusting no "new" hint."""
        pending: _Pending | None = getattr(self._local, "pending", None)
        self._local.pending = None
        if retrying:
            self._pending().trust_hints = False
        if pending is None or not committed:
            return
        tenants = {tenant_id: key for tenant_id, (_, _, key) in pending.new_tenants.items()}
        tenants |= pending.found_tenants
        self._remember(
            [key for key, _ in pending.new_subjects.values()], tenants, pending.generation
        )

    # Opening

    def opening_key(self, key_id: bytes) -> SubjectKey | None:
        """The key whose id is these 16 bytes, or None once it has been destroyed."""
        pending: _Pending | None = getattr(self._local, "pending", None)
        if pending is not None and pending.new_subjects:
            for key, _ in pending.new_subjects.values():
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
        if self._listening.is_set():
            wanted = [k for k in set(key_ids) if k not in self._by_id]
        else:
            wanted = list(set(key_ids))
        if not wanted:
            return {}
        generation = self._generation
        t = self._t
        query = sql.SQL(
            "SELECT s.key_id, s.subject, s.wrapped, s.tenant_id,"
            " k.key_id AS tenant_key_id, k.wrapped AS tenant_wrapped"
            " FROM {} s JOIN {} k USING (tenant_id) WHERE s.key_id = ANY(%s)"
        ).format(t["subject_keys"], t["tenant_keys"])
        with self.datastore.get_connection() as conn:  # autocommit: one round trip
            rows = conn.cursor().execute(query, ([UUID(bytes=k) for k in wanted],)).fetchall()
        tenants: dict[UUID, AESGCM] = {}
        found: dict[bytes, SubjectKey | None] = dict.fromkeys(wanted)
        for row in rows:
            tenant_id = row["tenant_id"]
            tenant_key = tenants.get(tenant_id) or self._tenant_keys.get(tenant_id)
            if tenant_key is None:
                tenant_key = self._unwrap_tenant(
                    tenant_id, row["tenant_key_id"], bytes(row["tenant_wrapped"])
                )
            tenants[tenant_id] = tenant_key
            key = self._unwrap_subject(
                tenant_id, row["subject"], row["key_id"], bytes(row["wrapped"]), tenant_key
            )
            found[key.raw_id] = key
        self._remember(
            [k for k in found.values() if k is not None],
            tenants,
            generation,
            missing=[raw for raw, k in found.items() if k is None],
        )
        return found

    def subject_key(self, tenant_id: UUID, subject: str) -> SubjectKey | None:
        """The subject's live key, or None; never a new one (the views seal under the keys
        the events were sealed under, which exist by the time a view takes the event)."""
        if self._listening.is_set():
            key = self._by_subject.get((tenant_id, subject))
            if key is not None:
                return key
        generation = self._generation
        query = sql.SQL(
            "SELECT s.key_id, s.wrapped, k.key_id AS tenant_key_id, k.wrapped AS tenant_wrapped"
            " FROM {} s JOIN {} k USING (tenant_id) WHERE s.tenant_id = %s AND s.subject = %s"
        ).format(self._t["subject_keys"], self._t["tenant_keys"])
        with self.datastore.get_connection() as conn:
            row = conn.cursor().execute(query, (tenant_id, subject)).fetchone()
        if row is None:
            return None
        tenant_key = self._tenant_keys.get(tenant_id) or self._unwrap_tenant(
            tenant_id, row["tenant_key_id"], bytes(row["tenant_wrapped"])
        )
        key = self._unwrap_subject(
            tenant_id, subject, row["key_id"], bytes(row["wrapped"]), tenant_key
        )
        self._remember([key], {tenant_id: tenant_key}, generation)
        return key

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

    def _unwrap_tenant(self, tenant_id: UUID, key_id: UUID, wrapped: bytes) -> AESGCM:
        return AESGCM(_unwrap(self._master, wrapped, _tenant_aad(tenant_id, key_id)))

    @staticmethod
    def _unwrap_subject(
        tenant_id: UUID, subject: str, key_id: UUID, wrapped: bytes, tenant_key: AESGCM
    ) -> SubjectKey:
        material = _unwrap(tenant_key, wrapped, _subject_aad(key_id, subject))
        return SubjectKey(key_id, tenant_id, subject, AESGCM(material))

    def _remember(
        self,
        keys: Iterable[SubjectKey],
        tenants: dict[UUID, AESGCM],
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
                self._by_subject[(key.tenant_id, key.subject)] = key
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
                    " INSERT INTO {} (key_id, tenant_id, subject) SELECT * FROM gone"
                    " RETURNING key_id, tenant_id, subject"
                ).format(t["subject_keys"], t["destroyed_keys"]),
                (tenant_id, subject),
            )
            destroyed = [
                DestroyedKey(r["key_id"], r["tenant_id"], r["subject"]) for r in curs.fetchall()
            ]
            for key in destroyed:
                curs.execute("SELECT pg_notify(%s, %s)", (self.channel, f"key:{key.key_id}"))
        self._forget(key_ids=[k.key_id for k in destroyed], tenant_id=None)
        self._vacuum()
        return destroyed

    def destroy_tenant_keys(self, tenant_id: UUID) -> list[DestroyedKey]:
        t = self._t
        with self.datastore.transaction(commit=True) as curs:
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
            curs.execute(
                sql.SQL(
                    "WITH gone AS (DELETE FROM {} WHERE tenant_id = %s RETURNING key_id, tenant_id)"
                    " INSERT INTO {} (key_id, tenant_id, subject)"
                    " SELECT key_id, tenant_id, NULL FROM gone RETURNING key_id"
                ).format(t["tenant_keys"], t["destroyed_keys"]),
                (tenant_id,),
            )
            destroyed += [DestroyedKey(r["key_id"], tenant_id, None) for r in curs.fetchall()]
            curs.execute("SELECT pg_notify(%s, %s)", (self.channel, f"tenant:{tenant_id}"))
        self._forget(key_ids=[k.key_id for k in destroyed], tenant_id=tenant_id)
        self._vacuum()
        return destroyed

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
                    self._by_subject.pop((key.tenant_id, key.subject), None)
                self._by_id[key_id.bytes] = None
            if tenant_id is not None:
                self._tenant_keys.pop(tenant_id, None)
                for raw, key in list(self._by_id.items()):
                    if key is not None and key.tenant_id == tenant_id:
                        self._by_id[raw] = None
                        self._by_subject.pop((key.tenant_id, key.subject), None)

    def _forget_everything(self) -> None:
        with self._lock:
            self._generation += 1
            self._tenant_keys.clear()
            self._by_subject.clear()
            self._by_id.clear()

    # Listening for destructions by other processes

    def _connection_kwargs(self) -> dict[str, Any]:
        kwargs = dict(self.datastore.pool.kwargs)
        kwargs.pop("row_factory", None)
        return kwargs

    def _listen(self) -> None:
        backoff = 0.2
        while not self._stopping.is_set():
            try:
                with psycopg.connect(**self._connection_kwargs(), autocommit=True) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    self._forget_everything()  # anything cached before may have missed a notice
                    self._listening.set()
                    backoff = 0.2
                    while not self._stopping.is_set():
                        for notice in conn.notifies(timeout=0.1):
                            self._on_notice(notice.payload)
            except psycopg.Error as error:
                log.warning(
                    "key listener lost its connection (%s); not caching keys", type(error).__name__
                )
            finally:
                self._listening.clear()
                self._forget_everything()
            self._stopping.wait(backoff)
            backoff = min(backoff * 2, 5.0)

    def _on_notice(self, payload: str) -> None:
        what, _, ident = payload.partition(":")
        try:
            uuid = UUID(ident)
        except ValueError:
            return
        if what == "tenant":
            self._forget(key_ids=(), tenant_id=uuid)
        elif what == "key":
            self._forget(key_ids=(uuid,), tenant_id=None)

    def close(self) -> None:
        self._stopping.set()
        if self._listener is not None:
            self._listener.join(timeout=5)


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
