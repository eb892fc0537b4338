"""The event store on real PostgreSQL: sealing at rest, erasure by key destruction, hash chains."""

from __future__ import annotations

import dataclasses
import gc
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID, uuid4

import msgspec
import psycopg
import pytest
from eventsourcing.application import Application
from eventsourcing.domain import event
from eventsourcing.persistence import MapperDeserialisationError
from eventsourcing.utils import get_topic

from picasse.adapters import crypto
from picasse.adapters.postgres.audit import verify_chains
from picasse.adapters.postgres.keystore import FIRST_ANALYZE_AFTER, TenantErased
from picasse.adapters.postgres.roles import TrackingTable
from picasse.adapters.postgres.store import factory_of, recorder_of
from picasse.domain.accounts import Accounts
from picasse.domain.aggregates import Aggregate
from picasse.domain.customers import Contact, Customer
from picasse.domain.personal import ERASED, Erased, Personal
from picasse.domain.values import EmailAddress, PhoneNumber, Role
from picasse.runners.settings import Settings
from picasse.runners.wiring import open_messages
from tests.users import add_customer_user

PEOPLE = [
    {
        "organisation": f"Orgname{i} Holding",
        "contact_name": f"Contactperson{i} Vandermeer",
        "email": f"person{i}.mailbox@example.org",
        "phone": f"+31 6 1234 56{i:02d}",
        "billing_address": f"Billingstreet {100 + i}, {i}234 AB Zwolle",
    }
    for i in range(5)
]


def _register_everyone(accounts: Accounts) -> list[UUID]:
    ids = []
    for i, person in enumerate(PEOPLE):
        customer_id = accounts.register_customer(**person)
        accounts.change_contact(customer_id, billing_address=f"Otherstreet {i}, Deventer")
        add_customer_user(
            accounts,
            customer_id=customer_id,
            login=f"loginname{i}@example.net",
            role=Role.CUSTOMER_ADMIN,
            password=f"passwordvalue{i}xyz",
        )
        ids.append(customer_id)
    return ids


def _plaintexts() -> list[bytes]:
    values: list[str] = []
    for i, person in enumerate(PEOPLE):
        values += [person["organisation"], person["contact_name"], person["email"]]
        values += [person["billing_address"], f"Otherstreet {i}", f"loginname{i}@example.net"]
        values += [
            person["phone"],
            "+3161234560" + str(i) if i < 10 else "",
            f"passwordvalue{i}xyz",
        ]
        values += [f"Contactperson{i}", f"Orgname{i}", f"Billingstreet {100 + i}"]
    return [v.encode() for v in values if v]


def _whole_table(raw: psycopg.Connection, table: str) -> bytes:
    """Every byte of every row, through COPY in binary format (bytea columns verbatim)."""
    chunks: list[bytes] = []
    with raw.cursor().copy(f"COPY {table} TO STDOUT (FORMAT binary)") as copy:
        for chunk in copy:
            chunks.append(bytes(chunk))
    return b"".join(chunks)


def test_the_raw_events_table_holds_no_personal_data_in_plaintext(
    accounts: Accounts, raw: psycopg.Connection
) -> None:
    customer_ids = _register_everyone(accounts)
    assert accounts.customer(customer_ids[3]).contact.name == "Contactperson3 Vandermeer"
    stored = b"".join(
        _whole_table(raw, table)
        for table in ("picasse_events", "picasse_tenant_keys", "picasse_subject_keys")
    )
    assert len(stored) > 5_000
    leaked = [value for value in _plaintexts() if value in stored]
    assert leaked == []


def test_an_erased_contact_reads_as_erased_and_the_whole_log_still_replays(
    accounts: Accounts,
) -> None:
    first, second, *_ = _register_everyone(accounts)
    factory_of(accounts).keys.destroy_subject_key(first, f"contact/{first}")

    erased = accounts.customer(first)
    assert erased.contact == type(erased.contact)(ERASED, ERASED, ERASED)
    assert erased.organisation == "Orgname0 Holding"  # another subject's data
    assert erased.billing_address == "Otherstreet 0, Deventer"
    assert accounts.customer(second).contact.name == "Contactperson1 Vandermeer"

    replayed = list(accounts.recorder.select_notifications(start=1, limit=1000))
    events = [accounts.mapper.to_domain_event(n) for n in replayed]
    # registered, billing changed; user added (and its link issued), link, login and first
    # admin claimed, password set with the link
    assert len(events) == 5 * 8
    contacts = [e.contact for e in events if isinstance(e, Customer.Registered)]
    assert sum(isinstance(c.name, Erased) for c in contacts) == 1


def test_erasure_survives_a_reopened_store(
    accounts: Accounts, open_store: Callable[[], Accounts]
) -> None:
    customer_id = accounts.register_customer(**PEOPLE[0])
    factory_of(accounts).keys.destroy_subject_key(customer_id, f"contact/{customer_id}")
    assert open_store().customer(customer_id).contact.email == ERASED


def test_a_second_process_with_the_key_cached_can_no_longer_read_it(
    accounts: Accounts, settings: Settings, database_url: str, schema: str
) -> None:
    customer_id = accounts.register_customer(**PEOPLE[0])
    reader = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("reader_process.py")),
            str(settings.data_dir),
            database_url,
            schema,
            str(customer_id),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    to_reader, from_reader = reader.stdin, reader.stdout
    assert to_reader is not None and from_reader is not None
    try:

        def read() -> dict[str, Any]:
            to_reader.write("read\n")
            to_reader.flush()
            return msgspec.json.decode(from_reader.readline(), type=dict[str, Any])

        assert read()["contact"]["name"] == "Contactperson0 Vandermeer"  # key now cached there
        factory_of(accounts).keys.destroy_subject_key(customer_id, f"contact/{customer_id}")
        deadline = time.monotonic() + 5
        seen = read()["contact"]["name"]
        while seen != {"type": "erased"} and time.monotonic() < deadline:
            time.sleep(0.05)
            seen = read()["contact"]["name"]
        assert seen == {"type": "erased"}
        assert read()["organisation"] == "Orgname0 Holding"
    finally:
        to_reader.close()
        reader.wait(timeout=10)


def test_destroying_a_tenant_erases_its_users_and_refuses_new_personal_data(
    accounts: Accounts,
) -> None:
    first, second, *_ = _register_everyone(accounts)
    user_id = accounts.user_by_login("loginname0@example.net").id
    destroyed = factory_of(accounts).keys.destroy_tenant_keys(first)
    assert {k.subject for k in destroyed} == {
        None,  # the tenant key itself
        f"organisation/{first}",
        f"contact/{first}",
        f"user/{user_id}",
    }
    assert accounts.user(user_id).login == ERASED
    customer = accounts.customer(first)
    assert customer.organisation == ERASED
    assert customer.billing_address == ERASED
    assert accounts.customer(second).organisation == "Orgname1 Holding"
    with pytest.raises(TenantErased):
        add_customer_user(
            accounts,
            customer_id=first,
            login="late@example.net",
            role=Role.CUSTOMER_USER,
            password="tulip harbour quietly",
        )


def test_an_intact_log_verifies_and_changed_bytes_are_detected(
    accounts: Accounts, raw: psycopg.Connection
) -> None:
    first, *_ = _register_everyone(accounts)
    datastore, table = factory_of(accounts).datastore, recorder_of(accounts).events_table_name
    assert verify_chains(datastore, table).ok
    factory_of(accounts).keys.destroy_tenant_keys(first)
    report = verify_chains(datastore, table)
    assert report.ok and report.events == 5 * 8  # erasure changes no stored byte

    raw.execute(
        "UPDATE picasse_events SET state = set_byte(state, 19, get_byte(state, 19) # 255)"
        " WHERE originator_id = %s AND originator_version = 2",
        (first,),
    )
    broken = verify_chains(datastore, table).broken
    assert broken is not None
    assert (broken.originator_id, broken.originator_version) == (first, 2)
    assert "changed" in broken.reason


def test_a_deleted_event_is_detected_by_the_hash_chain(
    accounts: Accounts, raw: psycopg.Connection
) -> None:
    first, *_ = _register_everyone(accounts)
    raw.execute(
        "DELETE FROM picasse_events WHERE originator_id = %s AND originator_version = 1", (first,)
    )
    broken = verify_chains(
        factory_of(accounts).datastore, recorder_of(accounts).events_table_name
    ).broken
    assert broken is not None and "missing" in broken.reason


class Note(Aggregate):
    @event("Written")
    def __init__(
        self, tenant_id: UUID, text: Annotated[str, Personal("contact", of="tenant_id")]
    ) -> None:
        self.text = text


def test_two_stores_creating_the_same_subject_key_at_once_both_record_readably(
    open_store: Callable[[], Accounts],
) -> None:
    first, second = open_store(), open_store()
    tenant = uuid4()
    # The first store has made its own key for the subject, but not written it yet...
    factory_of(first).keys.sealing_key(tenant, f"contact/{tenant}")
    # ...when the second writes its key for the same subject.
    from_second = Note(tenant_id=tenant, text="written by the second store")
    second.save(from_second)
    from_first = Note(tenant_id=tenant, text="written by the first store")
    first.save(from_first)  # loses the race, seals again under the winner's key
    for store in (first, second):
        assert store.repository.get(from_first.id).text == "written by the first store"
        assert store.repository.get(from_second.id).text == "written by the second store"


def test_a_lost_key_race_noticed_before_the_sync_is_still_a_race_not_an_outage(
    open_store: Callable[[], Accounts], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's answer to the clashing key insert can reach the client while later
    statements of the pipeline are being sent (on a busy machine it often does). Here it
    is made to arrive first: the save must still seal again, not fail as "pipeline
    aborted"."""
    first, second = open_store(), open_store()
    tenant = uuid4()
    factory_of(first).keys.sealing_key(tenant, f"contact/{tenant}")
    second.save(Note(tenant_id=tenant, text="written by the second store"))
    keys = factory_of(first).keys
    write_pending = keys.write_pending

    def write_and_hear_the_answer(curs: psycopg.Cursor[object]) -> None:
        write_pending(curs)
        pgconn = curs.connection.pgconn
        pgconn.send_flush_request()
        while pgconn.flush():
            pass
        select.select([pgconn.socket], [], [], 60)  # the insert's answer (a unique violation) is in

    monkeypatch.setattr(keys, "write_pending", write_and_hear_the_answer)
    from_first = Note(tenant_id=tenant, text="written by the first store")
    first.save(from_first)
    assert second.repository.get(from_first.id).text == "written by the first store"


def test_the_master_key_file_is_private(settings: Settings) -> None:
    assert os.stat(settings.master_key_path).st_mode & 0o777 == 0o600


def test_two_processes_creating_one_tracking_table_at_once_both_start(
    open_store: Callable[[], Accounts],
) -> None:
    """`picasse up` starts its children together (and a deployment its services): on a
    fresh database each creates the tracking tables it needs. Both looked before either
    created; the second must find the first's table and its migration record, not fail."""
    datastore = factory_of(open_store()).datastore
    # Made, both of them, before the table exists: as create_table reads them first.
    first, second = (TrackingTable(datastore, tracking_table_name="race_tracking") for _ in "12")
    for table in (first, second):
        with datastore.transaction(commit=True) as curs:
            table._create_table(curs)
    with datastore.transaction(commit=False) as curs:
        assert second._max_tracking_id(second.table_migration_identifier, curs) == 1


def test_a_process_writing_many_new_keys_has_the_key_tables_analyzed(
    accounts: Accounts, raw: psycopg.Connection
) -> None:
    def estimated_rows() -> float:
        row = raw.execute(
            "SELECT reltuples FROM pg_class WHERE oid = 'picasse_subject_keys'::regclass"
        ).fetchone()
        assert row is not None
        assert isinstance(row[0], float), row
        return row[0]

    assert estimated_rows() == 0  # as estimated when the table was made
    customers = [
        Customer(
            organisation=f"Organisation {n}",
            contact=Contact(
                f"Person {n}", EmailAddress(f"p{n}@example.org"), PhoneNumber("+31612345678")
            ),
            billing_address=f"Street {n}",
        )
        for n in range(FIRST_ANALYZE_AFTER // 3 + 1)  # a tenant key and two subject keys each
    ]
    accounts.save(*customers)
    # Analyzed at once (autovacuum would take up to a minute): the plans PostgreSQL keeps
    # for checking new keys against the tenant keys use the index again.
    assert estimated_rows() == 2 * len(customers)


def test_a_save_of_many_events_stores_each_as_given_and_answers_their_ids_in_order(
    accounts: Accounts, raw: psycopg.Connection
) -> None:
    """The events go to PostgreSQL as one binary array per column: each row holds its own
    event's id, version and topic, and the ids answered follow the events' order."""
    customer_id = accounts.register_customer(**PEOPLE[0])
    customer: Customer = accounts.repository.get(customer_id)
    for n in range(300):  # one aggregate, many events, saved together
        customer.change_billing_address(f"Street {n}, Zwolle")
    given = [
        (e.originator_id, e.originator_version, get_topic(type(e))) for e in customer.pending_events
    ]
    ids = [r.notification.id for r in accounts.save(customer)]
    assert len(ids) == 300 and ids == sorted(set(ids))
    rows = raw.execute(
        "SELECT notification_id, originator_id, originator_version, topic"
        " FROM picasse_events WHERE notification_id = ANY(%s) ORDER BY notification_id",
        (ids,),
    ).fetchall()
    assert [row[0] for row in rows] == ids
    assert [tuple(row[1:]) for row in rows] == given
    assert accounts.repository.get(customer_id).billing_address == "Street 299, Zwolle"


def test_a_replay_keeps_its_contacts_and_keys_out_of_the_garbage_collectors_sight(
    accounts: Accounts, open_store: Callable[[], Accounts]
) -> None:
    # A replay keeps every event it decodes and every key it loads: what the garbage
    # collector tracks among them it scans again and again as the replay goes on.
    _register_everyone(accounts)
    fresh = open_store()
    keys = factory_of(fresh).keys
    page = fresh.recorder.select_notifications(start=1, limit=1000)
    events = _mapper(fresh).to_domain_events(page)
    contacts = [e.contact for e in events if isinstance(e, Customer.Registered)]
    assert len(contacts) == len(PEOPLE)
    assert contacts[0].name == "Contactperson0 Vandermeer"
    assert not any(gc.is_tracked(contact) for contact in contacts)
    cached = list(keys._by_id.values())
    assert len(cached) >= 3 * len(PEOPLE)  # organisation, contact and user of each
    assert not any(gc.is_tracked(key) for key in cached)
    assert not any(gc.is_tracked(name) for name in keys._by_subject)


def test_a_replay_caches_no_tenant_key_and_a_save_after_it_finds_the_tenant_key(
    accounts: Accounts, open_store: Callable[[], Accounts]
) -> None:
    first, *_ = _register_everyone(accounts)
    fresh = open_store()
    page = fresh.recorder.select_notifications(start=1, limit=1000)
    _mapper(fresh).to_domain_events(page)
    assert factory_of(fresh).keys._tenant_keys == {}  # a replay never uses them again
    # A new subject of a known tenant: its key is wrapped under the tenant key looked up.
    user = add_customer_user(
        fresh,
        customer_id=first,
        login="anotherlogin@example.net",
        role=Role.CUSTOMER_USER,
        password="passwordvalueanother",
    )
    assert open_store().user(user).login == "anotherlogin@example.net"


def test_registering_a_customer_looks_up_no_key_and_a_known_tenants_new_subject_one(
    accounts: Accounts, open_store: Callable[[], Accounts], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first event's own subject and tenant cannot have keys yet: they are made without
    a look-up. A new subject of a tenant that has a key looks up just that tenant key."""
    looked_up: list[tuple[set[tuple[UUID, str]], set[UUID]]] = []

    def record_look_ups(store: Accounts) -> None:
        keys = factory_of(store).keys
        look_up = keys._look_up

        def recorded(pending: Any, subjects: set[tuple[UUID, str]], tenants: set[UUID]) -> None:
            looked_up.append((set(subjects), set(tenants)))
            look_up(pending, subjects, tenants)

        monkeypatch.setattr(keys, "_look_up", recorded)

    record_look_ups(accounts)
    customer_id = accounts.register_customer(**PEOPLE[0])
    assert looked_up == []
    fresh = open_store()  # nothing cached: the tenant key must be looked up
    record_look_ups(fresh)
    user = add_customer_user(
        fresh,
        customer_id=customer_id,
        login="loginname0@example.net",
        role=Role.CUSTOMER_ADMIN,
        password="passwordvalue0xyz",
    )
    assert looked_up == [(set(), {customer_id})]
    assert open_store().user(user).login == "loginname0@example.net"
    registered: Customer = open_store().repository.get(customer_id)
    assert registered.contact.name == PEOPLE[0]["contact_name"]


def _mapper(store: Application[UUID]) -> crypto.SealingMapper:
    """The store's mapper as ours (the library types it as any mapper): it opens a page of
    events at once."""
    mapper = store.mapper
    assert isinstance(mapper, crypto.SealingMapper)
    return mapper


def _opened_one_by_one(store: Accounts, page: list[Any]) -> list[dict[str, Any]]:
    return [vars(store.mapper.to_domain_event(event)) for event in page]


def test_a_long_page_opens_in_parts_each_parts_keys_fetched_while_the_one_before_is_built(
    accounts: Accounts, open_store: Callable[[], Accounts], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, *_ = _register_everyone(accounts)
    factory_of(accounts).keys.destroy_subject_key(first, f"contact/{first}")
    page = list(accounts.recorder.select_notifications(start=1, limit=1000))
    expected = _opened_one_by_one(open_store(), page)
    monkeypatch.setattr(crypto, "OVERLAPPED_PART", 4)
    fresh = open_store()
    keys = factory_of(fresh).keys
    sent: list[int] = []
    load_soon = keys.load_soon

    def counted(key_ids: Any) -> Callable[[], object]:
        sent.append(len(set(key_ids)))
        return load_soon(key_ids)

    monkeypatch.setattr(keys, "load_soon", counted)
    opened = _mapper(fresh).to_domain_events(page)
    assert [vars(event) for event in opened] == expected
    assert len(sent) > len(page) // 8  # a query for each part (that holds sealed values)
    assert any(
        isinstance(getattr(state.get("contact"), "name", None), Erased) for state in expected
    )
    # Every query was answered, and the pool has its one connection back.
    assert keys._local.loading is None
    assert factory_of(fresh).datastore.pool.get_stats()["pool_available"] == 1


def test_a_store_that_caches_no_key_opens_a_long_page_in_parts_on_a_pool_of_one(
    accounts: Accounts,
    open_store: Callable[[], Accounts],
    settings: Settings,
    database_url: str,
    schema: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nothing cached: opening each value loads its key, while the next part's query is in
    flight on the pool's only connection. The load answers that query first; waiting for
    the pool instead would time out."""
    _register_everyone(accounts)
    page = list(accounts.recorder.select_notifications(start=1, limit=1000))
    expected = _opened_one_by_one(open_store(), page)
    monkeypatch.setattr(crypto, "OVERLAPPED_PART", 4)
    uncached = open_messages(settings, database_url, schema=schema, opens_sealed_fields=False)
    try:
        assert not factory_of(uncached).keys._listening.is_set()
        opened = _mapper(uncached).to_domain_events(page)
        assert [vars(event) for event in opened] == expected
    finally:
        uncached.close()


def test_a_page_that_fails_to_decode_midway_gives_its_key_query_connection_back(
    accounts: Accounts, open_store: Callable[[], Accounts], monkeypatch: pytest.MonkeyPatch
) -> None:
    _register_everyone(accounts)
    page = list(accounts.recorder.select_notifications(start=1, limit=1000))
    monkeypatch.setattr(crypto, "OVERLAPPED_PART", 4)
    broken = dataclasses.replace(page[5], state=b"\xc1")  # never valid msgpack
    fresh = open_store()
    with pytest.raises(MapperDeserialisationError):
        _mapper(fresh).to_domain_events([*page[:5], broken, *page[6:]])
    assert factory_of(fresh).keys._local.loading is None
    assert factory_of(fresh).datastore.pool.get_stats()["pool_available"] == 1
    assert [vars(e) for e in _mapper(fresh).to_domain_events(page)] == _opened_one_by_one(
        open_store(), page
    )


def test_a_tenants_destruction_heard_of_drops_the_keys_a_replay_cached_of_that_tenant_only(
    accounts: Accounts, open_store: Callable[[], Accounts]
) -> None:
    first, second, *_ = _register_everyone(accounts)
    fresh = open_store()
    keys = factory_of(fresh).keys
    _mapper(fresh).to_domain_events(fresh.recorder.select_notifications(start=1, limit=1000))
    cached = [key for key in keys._by_id.values() if key is not None]
    # Replayed keys hold their tenant's id as its 16 bytes; the UUID is there when asked.
    assert {key.tenant_id for key in cached} >= {first, second}
    assert all(key.tenant_raw == key.tenant_id.bytes for key in cached)
    keys._on_notice(f"tenant:{first}")  # what the listener hears of another process's erasure
    kept = [key for key in keys._by_id.values() if key is not None]
    assert kept and all(key.tenant_id != first for key in kept)
    assert any(key.tenant_id == second for key in kept)
    assert keys.subject_key(second, f"contact/{second}") is not None
    assert not any(slot.startswith(first.bytes) for slot in keys._by_subject)


def _pages_split_before(store: Accounts, aggregate: UUID) -> tuple[list[Any], int]:
    """The log's first page, up to the first event of `aggregate`, and where the next starts."""
    everything = list(store.recorder.select_notifications(start=1, limit=1000))
    split = next(n.id for n in everything if n.originator_id == aggregate)
    return list(store.recorder.select_notifications(start=1, limit=split - 1)), split


def _names_of(contacts: list[Contact]) -> list[object]:
    """Each contact's name as it reads (ERASED once its key is gone)."""
    return [contact.name for contact in contacts]


def _contacts_of(events: list[Any], customer: UUID) -> list[Contact]:
    return [
        e.contact
        for e in events
        if e.originator_id == customer
        and isinstance(e, (Customer.Registered, Customer.ContactChanged))
    ]


def test_a_key_destroyed_between_two_pages_of_a_replay_reads_as_erased_on_the_next_page(
    accounts: Accounts, open_store: Callable[[], Accounts]
) -> None:
    first, second, *_ = _register_everyone(accounts)
    accounts.change_contact(first, contact_name="Latername Person")  # on the second page
    replaying = open_store()
    page, split = _pages_split_before(replaying, second)
    opened = _mapper(replaying).to_domain_events(page)
    assert [c.name for c in _contacts_of(opened, first)] == ["Contactperson0 Vandermeer"]
    # The replaying process's own key store destroys it (a shredder shares it): the key it
    # loaded for the first page is not used for the next.
    factory_of(replaying).keys.destroy_subject_key(first, f"contact/{first}")
    rest = replaying.recorder.select_notifications(start=split, limit=1000)
    opened = _mapper(replaying).to_domain_events(rest)
    assert _names_of(_contacts_of(opened, first)) == [ERASED]
    assert _names_of(_contacts_of(opened, second)) == ["Contactperson1 Vandermeer"]


def test_a_key_another_store_destroys_between_two_pages_reads_as_erased_once_heard_of(
    accounts: Accounts, open_store: Callable[[], Accounts]
) -> None:
    first, second, *_ = _register_everyone(accounts)
    accounts.change_contact(first, contact_name="Latername Person")
    replaying = open_store()
    page, split = _pages_split_before(replaying, second)
    _mapper(replaying).to_domain_events(page)  # first's contact key now cached there
    factory_of(accounts).keys.destroy_subject_key(first, f"contact/{first}")

    def next_page() -> list[Contact]:
        rest = replaying.recorder.select_notifications(start=split, limit=1000)
        return _contacts_of(_mapper(replaying).to_domain_events(rest), first)

    # The notice crosses the server: poll for the state it brings, as a reader would.
    deadline = time.monotonic() + 5
    contacts = next_page()
    while _names_of(contacts) != [ERASED] and time.monotonic() < deadline:
        time.sleep(0.02)
        contacts = next_page()
    assert _names_of(contacts) == [ERASED]


def test_a_page_of_many_tenants_across_epochs_opens_in_parts_as_event_by_event(
    accounts: Accounts, open_store: Callable[[], Accounts], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tenants registered before and after two replacements of the wrapping keys (each
    erasure replaces the epoch), one of them erased whole and one subject of another: each
    part's key query brings keys of many tenants, and every value opens, or reads as
    erased, exactly as opening the events one by one does."""
    keys = factory_of(accounts).keys
    early = [accounts.register_customer(**_person_of(i)) for i in range(12)]
    keys.destroy_subject_key(early[0], f"contact/{early[0]}")
    middle = [accounts.register_customer(**_person_of(i)) for i in range(12, 24)]
    keys.destroy_tenant_keys(middle[0])
    late = [accounts.register_customer(**_person_of(i)) for i in range(24, 36)]
    for customer in early + middle[1:] + late:  # an erased tenant records nothing personal
        accounts.change_contact(customer, billing_address="Laterstreet 1, Deventer")
    page = list(accounts.recorder.select_notifications(start=1, limit=1000))
    expected = _opened_one_by_one(open_store(), page)
    monkeypatch.setattr(crypto, "OVERLAPPED_PART", 16)  # parts of 16 events, about 8 tenants
    opened = [vars(event) for event in _mapper(open_store()).to_domain_events(page)]
    assert opened == expected
    contacts = {state["originator_id"]: state["contact"] for state in opened if "contact" in state}
    assert contacts[early[0]].name == ERASED and contacts[middle[0]].name == ERASED
    assert contacts[early[1]].name == "Person1 Name" and contacts[late[-1]].name == "Person35 Name"
    organisations = {s["originator_id"]: s["organisation"] for s in opened if "organisation" in s}
    assert organisations[middle[0]] == ERASED and organisations[early[0]] == "Org0 Holding"


def _person_of(i: int) -> dict[str, str]:
    return {
        "organisation": f"Org{i} Holding",
        "contact_name": f"Person{i} Name",
        "email": f"person{i}@example.org",
        "phone": f"+31 6 1234 57{i:02d}",
        "billing_address": f"Street {i}, Zwolle",
    }
