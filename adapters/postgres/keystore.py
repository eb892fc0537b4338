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
import time
from collections.abc import Iterable
from typing import Any
from uuid import UUID, uuid4

import msgspec
import psycopg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.persistence import PersistenceError
from eventsourcing.postgres import PostgresDatastore
from psycopg import sql

from picasse.adapters.crypto import SubjectKey, new_subject_key

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


class _Pending(msgspec.Struct):
    tenant: list[tuple[UUID, UUID, bytes]]  # tenant_id, key_id, wrapped
    subjects: list[tuple[SubjectKey, bytes]]  # key, wrapped
    generation: int


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
            for name in ("tenant_keys", "subject_keys", "destroyed_keys")
        }
        self._lock = threading.Lock()
        self._tenant_keys: dict[UUID, tuple[UUID, AESGCM]] = {}
        self._by_subject: dict[tuple[UUID, str], SubjectKey] = {}
        self._by_id: dict[UUID, SubjectKey | None] = {}
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
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (tenant_id)").format(
                sql.Identifier("picasse_destroyed_keys_tenant_idx"), t["destroyed_keys"]
            ),
        ]
        with self.datastore.transaction(commit=True) as curs:
            curs.execute("SELECT pg_advisory_xact_lock(7401)")  # concurrent first starts
            for statement in statements:
                curs.execute(statement)

    # Sealing: find or create the subject's key

    def sealing_key(self, tenant_id: UUID, subject: str) -> SubjectKey:
        pending = self._pending()
        for key, _ in pending.subjects:
            if key.tenant_id == tenant_id and key.subject == subject:
                return key
        if self._listening.is_set():
            with self._lock:
                cached = self._by_subject.get((tenant_id, subject))
            if cached is not None:
                return cached
        generation = self._generation
        key = self._load_subject_key(tenant_id, subject, generation)
        if key is not None:
            return key
        tenant_key = self._tenant_key(tenant_id, pending, generation)
        key, material = new_subject_key(tenant_id, subject)
        pending.subjects.append(
            (key, _wrap(tenant_key, material, _subject_aad(key.key_id, subject)))
        )
        return key

    def _pending(self) -> _Pending:
        pending: _Pending | None = getattr(self._local, "pending", None)
        if pending is None:
            pending = self._local.pending = _Pending([], [], self._generation)
        return pending

    def _load_subject_key(
        self, tenant_id: UUID, subject: str, generation: int
    ) -> SubjectKey | None:
        t = self._t
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                sql.SQL(
                    "SELECT s.key_id, s.wrapped, k.key_id AS tenant_key_id,"
                    " k.wrapped AS tenant_wrapped FROM {} s JOIN {} k USING (tenant_id)"
                    " WHERE s.tenant_id = %s AND s.subject = %s"
                ).format(t["subject_keys"], t["tenant_keys"]),
                (tenant_id, subject),
            )
            row = curs.fetchone()
        if row is None:
            return None
        tenant_key = self._unwrap_tenant(
            tenant_id, row["tenant_key_id"], bytes(row["tenant_wrapped"])
        )
        key = self._unwrap_subject(
            tenant_id, subject, row["key_id"], bytes(row["wrapped"]), tenant_key
        )
        self._remember([key], {tenant_id: (row["tenant_key_id"], tenant_key)}, generation)
        return key

    def _tenant_key(self, tenant_id: UUID, pending: _Pending, generation: int) -> AESGCM:
        for pending_tenant, key_id, wrapped in pending.tenant:
            if pending_tenant == tenant_id:
                return self._unwrap_tenant(tenant_id, key_id, wrapped)
        if self._listening.is_set():
            with self._lock:
                cached = self._tenant_keys.get(tenant_id)
            if cached is not None:
                return cached[1]
        t = self._t
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                sql.SQL("SELECT key_id, wrapped FROM {} WHERE tenant_id = %s").format(
                    t["tenant_keys"]
                ),
                (tenant_id,),
            )
            row = curs.fetchone()
            if row is None:
                curs.execute(
                    sql.SQL("SELECT 1 FROM {} WHERE tenant_id = %s AND subject IS NULL").format(
                        t["destroyed_keys"]
                    ),
                    (tenant_id,),
                )
                if curs.fetchone() is not None:
                    raise TenantErased(tenant_id)
        if row is not None:
            tenant_key = self._unwrap_tenant(tenant_id, row["key_id"], bytes(row["wrapped"]))
            self._remember([], {tenant_id: (row["key_id"], tenant_key)}, generation)
            return tenant_key
        key_id = uuid4()
        material = AESGCM.generate_key(bit_length=256)
        pending.tenant.append(
            (tenant_id, key_id, _wrap(self._master, material, _tenant_aad(tenant_id, key_id)))
        )
        return AESGCM(material)

    # The event store's transaction writes new keys with the events sealed under them.

    def write_pending(self, curs: Any) -> None:
        pending: _Pending | None = getattr(self._local, "pending", None)
        if pending is None:
            return
        t = self._t
        for tenant_id, key_id, wrapped in pending.tenant:
            curs.execute(
                sql.SQL(
                    "INSERT INTO {} (tenant_id, key_id, wrapped) VALUES (%s, %s, %s)"
                    " ON CONFLICT (tenant_id) DO NOTHING RETURNING key_id"
                ).format(t["tenant_keys"]),
                (tenant_id, key_id, wrapped),
            )
            if curs.fetchone() is None:
                raise KeyRace(f"tenant key for {tenant_id}")
        for key, wrapped in pending.subjects:
            curs.execute(
                sql.SQL(
                    "INSERT INTO {} (key_id, tenant_id, subject, wrapped) VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT (tenant_id, subject) DO NOTHING RETURNING key_id"
                ).format(t["subject_keys"]),
                (key.key_id, key.tenant_id, key.subject, wrapped),
            )
            if curs.fetchone() is None:
                raise KeyRace(f"subject key {key.subject}")

    def settle_pending(self, *, committed: bool) -> None:
        """After the event transaction: cache what was committed, forget what was not."""
        pending: _Pending | None = getattr(self._local, "pending", None)
        self._local.pending = None
        if pending is None or not committed:
            return
        tenants = {
            tenant_id: (key_id, self._unwrap_tenant(tenant_id, key_id, wrapped))
            for tenant_id, key_id, wrapped in pending.tenant
        }
        self._remember([key for key, _ in pending.subjects], tenants, pending.generation)

    # Opening

    def opening_key(self, key_id: UUID) -> SubjectKey | None:
        pending: _Pending | None = getattr(self._local, "pending", None)
        if pending is not None:
            for key, _ in pending.subjects:
                if key.key_id == key_id:
                    return key
        if self._listening.is_set():
            with self._lock:
                if key_id in self._by_id:
                    return self._by_id[key_id]
        return self._load_tenant_of(key_id)

    def _load_tenant_of(self, key_id: UUID) -> SubjectKey | None:
        """Load every key of the tenant that holds key_id: one round trip per tenant."""
        generation = self._generation
        t = self._t
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                sql.SQL(
                    "SELECT s.key_id, s.subject, s.wrapped, s.tenant_id,"
                    " k.key_id AS tenant_key_id, k.wrapped AS tenant_wrapped"
                    " FROM {} s JOIN {} k USING (tenant_id)"
                    " WHERE s.tenant_id = (SELECT tenant_id FROM {} WHERE key_id = %s)"
                ).format(t["subject_keys"], t["tenant_keys"], t["subject_keys"]),
                (key_id,),
            )
            rows = curs.fetchall()
        found: SubjectKey | None = None
        keys: list[SubjectKey] = []
        tenants: dict[UUID, tuple[UUID, AESGCM]] = {}
        for row in rows:
            tenant_id = row["tenant_id"]
            if tenant_id not in tenants:
                tenants[tenant_id] = (
                    row["tenant_key_id"],
                    self._unwrap_tenant(
                        tenant_id, row["tenant_key_id"], bytes(row["tenant_wrapped"])
                    ),
                )
            key = self._unwrap_subject(
                tenant_id,
                row["subject"],
                row["key_id"],
                bytes(row["wrapped"]),
                tenants[tenant_id][1],
            )
            keys.append(key)
            if key.key_id == key_id:
                found = key
        self._remember(keys, tenants, generation, missing=None if found else key_id)
        return found

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
        tenants: dict[UUID, tuple[UUID, AESGCM]],
        generation: int,
        missing: UUID | None = None,
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
                self._by_id[key.key_id] = key
            if missing is not None:
                self._by_id[missing] = None  # destroyed keys never come back

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
                key = self._by_id.pop(key_id, None)
                if key is not None:
                    self._by_subject.pop((key.tenant_id, key.subject), None)
                self._by_id[key_id] = None
            if tenant_id is not None:
                self._tenant_keys.pop(tenant_id, None)
                for ident, key in list(self._by_id.items()):
                    if key is not None and key.tenant_id == tenant_id:
                        self._by_id[ident] = None
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
                        for notice in conn.notifies(timeout=0.5):
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

    def wait_until_listening(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while not self._listening.is_set() and time.monotonic() < deadline:
            self._listening.wait(0.1)
        return self._listening.is_set()
