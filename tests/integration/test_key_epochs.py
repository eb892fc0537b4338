"""Key-encryption-key epochs (issue 10, item 3): after any key destruction the keys that
wrapped it are replaced and the old epoch's file is destroyed, on real PostgreSQL."""

from __future__ import annotations

import os
import select
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import msgspec
import psycopg
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.persistence import StoredEvent

from picasse.adapters.clock import ManualClock
from picasse.adapters.master_key import (
    EpochKeyMissing,
    epoch_key_path,
    read_epoch_key,
    read_master_key,
)
from picasse.adapters.postgres.store import factory_of, recorder_of
from picasse.adapters.pseudonyms import KeyedPseudonyms
from picasse.adapters.statements import SignedStatement, sign
from picasse.domain.access import Viewer
from picasse.domain.accounts import Accounts
from picasse.domain.messaging import Messages, SendRequest
from picasse.domain.personal import ERASED
from picasse.domain.retention import traffic_retention
from picasse.domain.termination import canonical
from picasse.domain.values import Role
from picasse.runners.gdpr import (
    Platform,
    StatementInvalid,
    platform,
    terminate_customer,
    verify_statement,
)
from picasse.runners.retention import run_retention
from picasse.runners.settings import Settings
from picasse.runners.wiring import eventsourcing_env
from tests.integration.api_server import PASSWORD
from tests.users import add_customer_user

Rows = dict[str, list[dict[str, object]]]
T = TypeVar("T")


class Crash(BaseException):
    """Stands for the process dying at a step: nothing after it runs."""


def _person(tag: str) -> dict[str, str]:
    return {
        "organisation": f"Org{tag} Holding",
        "contact_name": f"Name{tag} Person",
        "email": f"mail{tag}@example.org",
        "phone": f"+3161{int(tag[:7], 16) % 10_000_000:07d}",
        "billing_address": f"Street{tag} 1, Zwolle",
    }


def _keys(raw: psycopg.Connection) -> Rows:
    """The key tables as a backup of them would hold them."""
    rows = raw.cursor(row_factory=psycopg.rows.dict_row)
    return {
        table: rows.execute(f"SELECT * FROM picasse_{table} ORDER BY key_id").fetchall()
        for table in ("tenant_keys", "subject_keys")
    }


def _epochs(raw: psycopg.Connection) -> dict[UUID, str]:
    return dict(raw.execute("SELECT epoch_id, state FROM picasse_key_epochs").fetchall())


def _epoch_files(key_dir: Path) -> set[str]:
    return {p.name for p in key_dir.glob("epoch-*.key")}


def _column(row: dict[str, object], name: str, kind: type[T]) -> T:
    """A key row's column, checked to hold what the key tables store there."""
    value = row[name]
    assert isinstance(value, kind), (name, value)
    return value


def _opens(key_dir: Path, rows: Rows, tenant: UUID, subject: str) -> bytes | None:
    """Unwrap a subject key from (old) key rows with the key files in `key_dir` now."""
    t = next(r for r in rows["tenant_keys"] if r["tenant_id"] == tenant)
    s = next(
        r for r in rows["subject_keys"] if r["tenant_id"] == tenant and r["subject"] == subject
    )
    epoch_id = _column(t, "epoch_id", UUID)
    try:
        epoch = AESGCM(read_epoch_key(key_dir, epoch_id))
    except EpochKeyMissing:
        return None
    aad = b"tenant" + _column(t, "tenant_id", UUID).bytes + _column(t, "key_id", UUID).bytes
    wrapped = _column(t, "wrapped", bytes)
    try:
        tenant_key = AESGCM(epoch.decrypt(wrapped[:12], wrapped[12:], aad + epoch_id.bytes))
        wrapped = _column(s, "wrapped", bytes)
        aad = b"subject" + _column(s, "key_id", UUID).bytes + subject.encode()
        return tenant_key.decrypt(wrapped[:12], wrapped[12:], aad)
    except InvalidTag:
        return None


@pytest.fixture
def key_dir(settings: Settings) -> Path:
    return settings.master_key_path.parent


def test_a_subject_erasure_replaces_the_tenant_key_and_the_epoch_and_old_key_rows_open_nothing(
    accounts: Accounts, open_store: Callable[[], Accounts], raw: psycopg.Connection, key_dir: Path
) -> None:
    tag, other_tag = uuid.uuid4().hex[:8], uuid.uuid4().hex[:8]
    erased, kept = (
        accounts.register_customer(**_person(tag)),
        accounts.register_customer(**_person(other_tag)),
    )
    second = open_store()  # another process, its keys cached
    assert second.customer(erased).organisation == f"Org{tag} Holding"
    before, files_before = _keys(raw), _epoch_files(key_dir)
    assert len(files_before) == 1 and list(_epochs(raw).values()) == ["current"]
    assert _opens(key_dir, before, erased, f"contact/{erased}") is not None  # the check can pass

    factory_of(accounts).keys.destroy_subject_key(erased, f"contact/{erased}")

    after, files_after = _keys(raw), _epoch_files(key_dir)
    assert files_after.isdisjoint(files_before) and len(files_after) == 1
    (new_file,) = files_after
    assert os.stat(key_dir / new_file).st_mode & 0o777 == 0o600
    assert sorted(_epochs(raw).values()) == ["current", "destroyed"]
    tenant_ids = {r["tenant_id"]: r["key_id"] for r in before["tenant_keys"]}
    tenant_ids_after = {r["tenant_id"]: r["key_id"] for r in after["tenant_keys"]}
    assert tenant_ids_after[erased] != tenant_ids[erased]  # a new tenant key
    assert tenant_ids_after[kept] == tenant_ids[kept]  # the same key, under the new epoch
    assert {r["wrapped"] for r in after["tenant_keys"]}.isdisjoint(
        {r["wrapped"] for r in before["tenant_keys"]}
    )
    # The old rows (a backup's) open nothing with the key files there are now: not the
    # erased key, not even a live one.
    assert _opens(key_dir, before, erased, f"contact/{erased}") is None
    assert _opens(key_dir, before, kept, f"contact/{kept}") is None
    assert _opens(key_dir, after, kept, f"contact/{kept}") is not None
    # Live data stays readable, here, in the other process and in a new one.
    for app in (accounts, second, open_store()):
        assert app.customer(erased).contact.email == ERASED
        assert app.customer(erased).organisation == f"Org{tag} Holding"
        assert app.customer(kept).contact.email == f"mail{other_tag}@example.org"
    # The other process writes new personal data of the re-keyed tenant: readable anywhere.
    login = f"new{tag}@example.net"
    user_id = add_customer_user(
        second, customer_id=erased, login=login, role=Role.CUSTOMER_ADMIN, password=PASSWORD
    )
    assert open_store().user(user_id).login == login


def test_a_retention_run_replaces_the_epoch_once_for_all_its_keys(
    settings: Settings, database_url: str, schema: str, accounts: Accounts,
    raw: psycopg.Connection, key_dir: Path,
) -> None:  # fmt: skip
    tag = uuid.uuid4().hex[:8]
    customer = accounts.register_customer(**_person(tag))
    accounts.start_subscription(customer)
    clock = ManualClock()
    later = clock.now() + timedelta(days=7 * 31)
    env = eventsourcing_env(database_url, settings.master_key_path, schema=schema)
    pseudonyms = KeyedPseudonyms(read_master_key(settings.master_key_path))
    app = Messages(env, clock=clock, pseudonyms=pseudonyms)
    here = msgspec.structs.replace(settings, database_schema=schema)
    try:
        app.send(customer, SendRequest(channel="sms", to=["+31612398765"], body="old"))
        first_epoch = _epoch_files(key_dir)
        with platform(here) as p:
            erased = run_retention(p.privacy, traffic_retention(6), now=later, dry_run=False)
        assert len(erased) == 2  # traffic and content of that month
        assert sorted(_epochs(raw).values()) == ["current", "destroyed"]  # one replacement
        assert _epoch_files(key_dir).isdisjoint(first_epoch)
        assert accounts.customer(customer).contact.email == f"mail{tag}@example.org"
    finally:
        app.close()


@pytest.fixture
def gdpr(settings: Settings, schema: str) -> Iterator[Platform]:
    with platform(msgspec.structs.replace(settings, database_schema=schema)) as p:
        yield p


def test_termination_destroys_the_epoch_and_its_statement_names_it(
    gdpr: Platform, accounts: Accounts, raw: psycopg.Connection, key_dir: Path, tmp_path: Path
) -> None:
    leaving = accounts.register_customer(**_person(uuid.uuid4().hex[:8]))
    staying_tag = uuid.uuid4().hex[:8]
    staying = accounts.register_customer(**_person(staying_tag))
    (epoch_file,) = _epoch_files(key_dir)
    signed = terminate_customer(gdpr, leaving, tmp_path, export=False, by="test").signed
    epoch = signed.document.key_epoch
    assert epoch is not None and epoch_file == f"epoch-{epoch.epoch_id}.key"
    assert not epoch_key_path(key_dir, epoch.epoch_id).exists()
    assert _epochs(raw)[epoch.epoch_id] == "destroyed"
    assert b"no later than" in (tmp_path / "statement.html").read_bytes()
    assert verify_statement(gdpr, tmp_path / "statement.json") == signed
    assert accounts.customer(staying).contact.email == f"mail{staying_tag}@example.org"

    # The epoch file back: the statement no longer holds.
    epoch_key_path(key_dir, epoch.epoch_id).write_bytes(b"x")
    with pytest.raises(StatementInvalid, match="still exists"):
        verify_statement(gdpr, tmp_path / "statement.json")
    epoch_key_path(key_dir, epoch.epoch_id).unlink()

    # A statement from before epochs (no such field) is signed and verified without it.
    old = msgspec.structs.replace(signed.document, key_epoch=None)
    assert b"key_epoch" not in canonical(old)
    (tmp_path / "old.json").write_bytes(msgspec.json.encode(sign(old, gdpr.signer())))
    raw_old = msgspec.json.decode((tmp_path / "old.json").read_bytes())
    del raw_old["document"]["key_epoch"]
    (tmp_path / "old.json").write_bytes(msgspec.json.encode(raw_old))
    assert verify_statement(gdpr, tmp_path / "old.json").document.key_epoch is None
    assert isinstance(verify_statement(gdpr, tmp_path / "old.json"), SignedStatement)


@pytest.mark.parametrize("step", ["epoch-written", "rewrapped"])
def test_a_crash_between_the_steps_of_a_replacement_loses_no_live_key(
    step: str, accounts: Accounts, open_store: Callable[[], Accounts],
    raw: psycopg.Connection, key_dir: Path,
) -> None:  # fmt: skip
    tag, kept_tag = uuid.uuid4().hex[:8], uuid.uuid4().hex[:8]
    erased, kept = (
        accounts.register_customer(**_person(tag)),
        accounts.register_customer(**_person(kept_tag)),
    )
    keys = factory_of(accounts).keys

    def crash(done: str) -> None:
        if done == step:
            raise Crash(done)

    keys.fault = crash
    with pytest.raises(Crash):
        keys.destroy_subject_key(erased, f"contact/{erased}")
    assert len(_epoch_files(key_dir)) == 2  # the old and the new epoch's files both exist

    restarted = open_store()  # a start finishes the replacement
    assert len(_epoch_files(key_dir)) == 1
    states = sorted(_epochs(raw).values())
    assert states.count("current") == 1 and "pending" not in states and "retired" not in states
    assert raw.execute("SELECT count(*) FROM picasse_rewrap_due").fetchone() == (0,)
    for app in (restarted, open_store()):
        assert app.customer(erased).contact.email == ERASED
        assert app.customer(erased).organisation == f"Org{tag} Holding"
        assert app.customer(kept).organisation == f"Org{kept_tag} Holding"


def test_a_start_with_the_current_epoch_file_missing_says_so(
    accounts: Accounts, open_store: Callable[[], Accounts], key_dir: Path
) -> None:
    accounts.register_customer(**_person(uuid.uuid4().hex[:8]))
    (current,) = key_dir.glob("epoch-*.key")
    current.rename(key_dir / "elsewhere")
    with pytest.raises(EpochKeyMissing, match="restore it from the key backup"):
        factory_of(open_store()).keys


def _noted_conflicts(monkeypatch: pytest.MonkeyPatch, keys: Any) -> list[bool]:
    """What the key store's `pending_conflicts` answers from now on, each time it is asked
    (after a failed save: True when a key race or a rotation made it seal again)."""
    races: list[bool] = []
    conflicts = keys.pending_conflicts

    def noted_conflicts() -> bool:
        races.append(conflicts())
        return races[-1]

    monkeypatch.setattr(keys, "pending_conflicts", noted_conflicts)
    return races


def test_a_save_sealing_under_a_replaced_tenant_key_or_epoch_seals_again(
    accounts: Accounts, open_store: Callable[[], Accounts], monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = uuid.uuid4().hex[:8]
    customer = accounts.register_customer(**_person(tag))
    second = open_store()
    second.register_customer(**_person(uuid.uuid4().hex[:8]))  # the epoch now cached there
    # The other process hears of no replacement: its tenant keys and epoch stay cached.
    keys = factory_of(second).keys
    monkeypatch.setattr(keys, "_on_notice", lambda payload: None)
    races = _noted_conflicts(monkeypatch, keys)

    def add_user(login: str) -> UUID:
        return add_customer_user(
            second, customer_id=customer, login=login, role=Role.CUSTOMER_ADMIN, password=PASSWORD
        )

    # A new tenant wrapped under the replaced epoch is sealed again.
    factory_of(accounts).keys.destroy_subject_key(customer, f"contact/{customer}")
    other_tag = uuid.uuid4().hex[:8]
    other = second.register_customer(**_person(other_tag))
    assert open_store().customer(other).organisation == f"Org{other_tag} Holding"
    assert races == [True]
    # A new subject key wrapped under the tenant's replaced key is sealed again.
    add_user(f"a{tag}@example.net")  # the tenant key now cached there
    factory_of(accounts).keys.destroy_subject_key(customer, f"organisation/{customer}")
    user_id = add_user(login := f"b{tag}@example.net")
    assert open_store().user(user_id).login == login
    assert races == [True, True]


def test_tenant_keys_from_before_epochs_are_rewrapped_under_the_first_epoch_on_start(
    accounts: Accounts, open_store: Callable[[], Accounts], raw: psycopg.Connection,
    settings: Settings, key_dir: Path,
) -> None:  # fmt: skip
    tag = uuid.uuid4().hex[:8]
    customer = accounts.register_customer(**_person(tag))
    # Make the store as it was before epochs: tenant keys wrapped by the master key.
    master = AESGCM(read_master_key(settings.master_key_path))
    rows = raw.cursor(row_factory=psycopg.rows.dict_row)
    for row in rows.execute("SELECT * FROM picasse_tenant_keys").fetchall():
        epoch = AESGCM(read_epoch_key(key_dir, row["epoch_id"]))
        wrapped = bytes(row["wrapped"])
        aad = b"tenant" + row["tenant_id"].bytes + row["key_id"].bytes
        material = epoch.decrypt(wrapped[:12], wrapped[12:], aad + row["epoch_id"].bytes)
        nonce = os.urandom(12)
        raw.execute(
            "UPDATE picasse_tenant_keys SET epoch_id = NULL, wrapped = %s WHERE key_id = %s",
            (nonce + master.encrypt(nonce, material, aad), row["key_id"]),
        )
    raw.execute("DELETE FROM picasse_key_epochs")
    for path in key_dir.glob("epoch-*.key"):
        path.unlink()

    assert open_store().customer(customer).contact.email == f"mail{tag}@example.org"
    assert len(_epoch_files(key_dir)) == 1 and list(_epochs(raw).values()) == ["current"]
    assert raw.execute(
        "SELECT count(*) FROM picasse_tenant_keys WHERE epoch_id IS NULL"
    ).fetchone() == (0,)


def _subject_key_foreign_keys(raw: psycopg.Connection) -> list[str]:
    return [
        name
        for (name,) in raw.execute(
            "SELECT conname FROM pg_constraint WHERE contype = 'f'"
            " AND conrelid = 'picasse_subject_keys'::regclass ORDER BY conname"
        ).fetchall()
    ]


def _tenant_key_indexes(raw: psycopg.Connection) -> list[str]:
    return [
        name
        for (name,) in raw.execute(
            "SELECT indexrelid::regclass::text FROM pg_index"
            " WHERE indrelid = 'picasse_tenant_keys'::regclass ORDER BY 1"
        ).fetchall()
    ]


def test_key_stores_made_before_lose_the_index_of_tenant_key_ids_and_keep_their_keys(
    accounts: Accounts, open_store: Callable[[], Accounts], raw: psycopg.Connection
) -> None:
    # Until December 2026 tenant key ids were unique, an index nothing read by.
    tag = uuid.uuid4().hex[:8]
    customer = accounts.register_customer(**_person(tag))
    assert _tenant_key_indexes(raw) == ["picasse_tenant_keys_pkey"]
    raw.execute(
        "ALTER TABLE picasse_tenant_keys ADD CONSTRAINT picasse_tenant_keys_key_id_key"
        " UNIQUE (key_id)"
    )

    reopened = open_store()
    assert _tenant_key_indexes(raw) == ["picasse_tenant_keys_pkey"]
    assert reopened.customer(customer).contact.email == f"mail{tag}@example.org"
    newer_tag = uuid.uuid4().hex[:8]
    newer = reopened.register_customer(**_person(newer_tag))
    assert open_store().customer(newer).contact.email == f"mail{newer_tag}@example.org"


@pytest.mark.parametrize("before", ["one foreign key", "two foreign keys"])
def test_key_stores_made_before_lose_their_foreign_keys_and_still_erase_whole_tenants(
    before: str, accounts: Accounts, open_store: Callable[[], Accounts], raw: psycopg.Connection
) -> None:
    tag, other_tag = uuid.uuid4().hex[:8], uuid.uuid4().hex[:8]
    customer = accounts.register_customer(**_person(tag))
    other = accounts.register_customer(**_person(other_tag))
    assert _subject_key_foreign_keys(raw) == []
    # Make the key tables as they were before: a foreign key of each subject key to the
    # tenant key wrapping it (of its own tenant), or before that two (the tenant, and the
    # key wrapping it, each checked alone) with the wrapping key's id nullable. Tenant key
    # ids were unique then (the second foreign key referenced them).
    raw.execute(
        "ALTER TABLE picasse_tenant_keys ADD CONSTRAINT picasse_tenant_keys_key_id_key"
        " UNIQUE (key_id)"
    )
    raw.execute(
        "ALTER TABLE picasse_tenant_keys ADD CONSTRAINT picasse_tenant_keys_tenant_key"
        " UNIQUE (tenant_id, key_id)"
    )
    if before == "one foreign key":
        raw.execute(
            "ALTER TABLE picasse_subject_keys ADD CONSTRAINT picasse_subject_keys_wrapped_by"
            " FOREIGN KEY (tenant_id, tenant_key_id) REFERENCES picasse_tenant_keys"
            " (tenant_id, key_id) ON DELETE CASCADE DEFERRABLE INITIALLY IMMEDIATE"
        )
    else:
        raw.execute(
            "ALTER TABLE picasse_tenant_keys DROP CONSTRAINT picasse_tenant_keys_tenant_key"
        )
        raw.execute(
            "ALTER TABLE picasse_subject_keys ALTER COLUMN tenant_key_id DROP NOT NULL,"
            " ADD FOREIGN KEY (tenant_id) REFERENCES picasse_tenant_keys ON DELETE CASCADE,"
            " ADD FOREIGN KEY (tenant_key_id) REFERENCES picasse_tenant_keys (key_id)"
            "  DEFERRABLE INITIALLY IMMEDIATE"
        )
        raw.execute(
            "UPDATE picasse_subject_keys SET tenant_key_id = NULL WHERE subject = %s",
            (f"contact/{customer}",),
        )
    assert _subject_key_foreign_keys(raw) != []

    reopened = open_store()
    assert reopened.customer(customer).contact.email == f"mail{tag}@example.org"
    assert _subject_key_foreign_keys(raw) == []
    assert _tenant_key_indexes(raw) == ["picasse_tenant_keys_pkey"]
    assert raw.execute(
        "SELECT count(*) FROM picasse_subject_keys WHERE tenant_key_id IS NULL"
    ).fetchone() == (0,)
    # New subject keys are written under their tenant's key, and a tenant's erasure takes
    # every one of its subject keys (no foreign key's cascade does it any more).
    login = f"after{tag}@example.net"
    user_id = add_customer_user(
        reopened, customer_id=customer, login=login, role=Role.CUSTOMER_ADMIN, password=PASSWORD
    )
    assert open_store().user(user_id).login == login
    destroyed = factory_of(reopened).keys.destroy_tenant_keys(customer)
    assert {key.subject for key in destroyed} >= {
        f"contact/{customer}",
        f"organisation/{customer}",
        None,
    }
    assert raw.execute(
        "SELECT count(*) FROM picasse_subject_keys WHERE tenant_id = %s", (customer,)
    ).fetchone() == (0,)
    assert open_store().customer(customer).contact.email == ERASED
    assert reopened.customer(other).contact.email == f"mail{other_tag}@example.org"


def test_key_and_event_rows_sent_as_binary_arrays_read_back_exactly_as_the_values(
    database_url: str,
) -> None:
    # write_pending and the events' insert send their arrays built in PostgreSQL's binary
    # form (adapters/postgres/arrays.py): every value must come back as it was, whatever
    # it holds; a load sends its key ids the same way (raw_uuid_array, from their bytes).
    from picasse.adapters.postgres.arrays import (
        bytea_array,
        int8_array,
        raw_uuid_array,
        text_array,
        uuid_array,
    )

    uuids = [uuid.uuid4() for _ in range(3)]
    texts = ["contact/x", 'a "quoted", {braced} text', "back\\slash\\", "NULL", "", " ", "ünï/€"]
    blobs = [bytes(range(256)), b"", b"\\x00", os.urandom(60)]
    ints = [0, 1, -5, 2**40]
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT %b::uuid[], %b::text[], %b::bytea[], %b::bigint[], %b::uuid[], %b::text[],"
            " %b::uuid[], %b::uuid[]",
            (
                uuid_array(uuids),
                text_array(texts),
                bytea_array(blobs),
                int8_array(ints),
                uuid_array([]),
                text_array([]),
                raw_uuid_array([u.bytes for u in uuids]),
                raw_uuid_array([]),
            ),
        ).fetchone()
    assert row is not None
    assert row[0] == uuids
    assert row[1] == texts
    assert [bytes(b) for b in row[2]] == blobs
    assert row[3] == ints
    assert row[4] == [] and row[5] == []
    assert row[6] == uuids and row[7] == []


def _waiting_on_a_lock(raw: psycopg.Connection, schema: str, statement: str) -> bool:
    """Whether a backend is waiting for a lock while running a statement naming this
    schema and holding `statement`."""
    row = raw.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        " AND position(%s IN query) > 0 AND position(%s IN query) > 0",
        (schema, statement),
    ).fetchone()
    return bool(row and row[0])


def _until(condition: Callable[[], bool], what: str) -> None:
    """Polls for a state of the server (a backend waiting for a lock), not for time."""
    import time

    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def _hold_the_first_save(
    monkeypatch: pytest.MonkeyPatch,
    app: Any,
    paused: threading.Event,
    release: threading.Event,
) -> None:
    """The app's next save stops after its statements ran (its locks held), before its
    commit: `paused` is set, and it goes on once `release` is (or after 30 s). The save
    sends its statements and its COMMIT in one go: it stops before the COMMIT, once the
    server has answered the statements sent (a flush request, as the server's answers come
    in order and after the statements ran)."""
    recorder = recorder_of(app)
    insert = recorder._insert_stored_events

    def hold_the_save(
        curs: psycopg.Cursor[dict[str, Any]], stored: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        insert(curs, stored, **kwargs)
        if not paused.is_set():
            pgconn = curs.connection.pgconn
            pgconn.send_flush_request()
            while pgconn.flush():
                pass
            select.select([pgconn.socket], [], [], 30)  # the server's answers are in
            paused.set()
            release.wait(30)

    monkeypatch.setattr(recorder, "_insert_stored_events", hold_the_save)


@pytest.mark.parametrize("first", ["save", "rotation"])
def test_a_subject_key_saved_while_a_rotation_replaces_its_tenant_key_stays_readable(
    first: str, accounts: Accounts, open_store: Callable[[], Accounts],
    raw: psycopg.Connection, schema: str, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    # A save writing a new subject key under a tenant key races the rotation that replaces
    # that tenant key (after an erasure of another of its subjects). Whichever locks the
    # tenant key's row first, the other waits: a save first is committed before the
    # rotation re-wraps its subject key under the new tenant key; a rotation first makes
    # the save fail on the replaced key and seal again. Never is a subject key committed
    # under a tenant key that no longer exists.

    tag = uuid.uuid4().hex[:8]
    customer = accounts.register_customer(**_person(tag))
    saving = open_store()  # another process
    assert saving.customer(customer).organisation == f"Org{tag} Holding"
    keys = factory_of(saving).keys
    races = _noted_conflicts(monkeypatch, keys)
    paused, release = threading.Event(), threading.Event()
    if first == "save":
        _hold_the_first_save(monkeypatch, saving, paused, release)
    else:
        # The rotation stops inside its transaction, the tenant keys' rows locked.
        rotating = factory_of(accounts).keys
        replace = rotating._replace_tenant_key

        def hold_the_rotation(
            conn: psycopg.Connection[Any], tenant_id: UUID, old_material: bytes
        ) -> tuple[UUID, bytes]:
            replaced = replace(conn, tenant_id, old_material)
            paused.set()
            release.wait(30)
            return replaced

        monkeypatch.setattr(rotating, "_replace_tenant_key", hold_the_rotation)
    login = f"racer{tag}@example.net"
    added: list[UUID] = []

    def add() -> None:
        added.append(
            add_customer_user(
                saving,
                customer_id=customer,
                login=login,
                role=Role.CUSTOMER_ADMIN,
                password=PASSWORD,
            )
        )

    save = threading.Thread(target=add)
    rotation = threading.Thread(
        target=factory_of(accounts).keys.destroy_subject_key, args=(customer, f"contact/{customer}")
    )
    one, other = (save, rotation) if first == "save" else (rotation, save)
    one.start()
    assert paused.wait(30), f"the {first} did not reach its pause"
    other.start()
    waiting = "FOR UPDATE" if first == "save" else "INSERT INTO"
    _until(lambda: _waiting_on_a_lock(raw, schema, waiting), "the other waits for the first")
    release.set()
    for thread in (one, other):
        thread.join(60)
        assert not thread.is_alive()

    assert races == ([] if first == "save" else [True])
    for app in (open_store(), saving, accounts):
        assert app.user(added[0]).login == login
        assert app.customer(customer).contact.email == ERASED
    assert sorted(_epochs(raw).values()) == ["current", "destroyed"]


def test_a_tenant_erasure_beside_a_save_of_a_new_subject_key_takes_that_key_too(
    accounts: Accounts, open_store: Callable[[], Accounts], raw: psycopg.Connection,
    schema: str, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    # The save holds its lock on the tenant key until it commits; the erasure's deletion
    # of the tenant key waits for it, then deletes the subject keys, the new one too.

    tag = uuid.uuid4().hex[:8]
    customer = accounts.register_customer(**_person(tag))
    saving = open_store()
    assert saving.customer(customer).organisation == f"Org{tag} Holding"
    paused, release = threading.Event(), threading.Event()
    _hold_the_first_save(monkeypatch, saving, paused, release)
    invited: list[UUID] = []
    save = threading.Thread(
        target=lambda: invited.append(
            saving.invite_user(
                customer_id=customer,
                login=f"late{tag}@example.net",
                role=Role.CUSTOMER_ADMIN,
                email=f"late{tag}@users.example",
                by=Viewer(role=Role.CUSTOMER_ADMIN, customer_id=customer),
            ).user_id
        )
    )
    erasure = threading.Thread(
        target=factory_of(accounts).keys.destroy_tenant_keys, args=(customer,)
    )
    save.start()
    assert paused.wait(30), "the save did not reach its pause"
    erasure.start()
    _until(lambda: _waiting_on_a_lock(raw, schema, "DELETE FROM"), "the erasure waits")
    release.set()
    for thread in (save, erasure):
        thread.join(60)
        assert not thread.is_alive()

    assert raw.execute(
        "SELECT count(*) FROM picasse_subject_keys WHERE tenant_id = %s", (customer,)
    ).fetchone() == (0,)
    assert raw.execute(
        "SELECT count(*) FROM picasse_destroyed_keys WHERE tenant_id = %s AND subject = %s",
        (customer, f"user/{invited[0]}"),
    ).fetchone() == (1,)
