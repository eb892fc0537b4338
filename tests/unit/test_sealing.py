"""Sealing and opening personal fields: round trip, wrong key, tampering, moving."""

from __future__ import annotations

import gc
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any
from uuid import RFC_4122, UUID, uuid4

import msgspec
import pytest
from eventsourcing.domain import event
from eventsourcing.persistence import JSONTranscoder, StoredEvent, Transcoding
from eventsourcing.utils import get_topic
from hypothesis import given, settings
from hypothesis import strategies as st

from picasse.adapters.crypto import (
    SEALED,
    SEALED_GROUP,
    SEALED_WITH,
    EventNotStorable,
    MemoryKeyRing,
    SealBroken,
    SealingMapper,
    _seal,
    _Sealing,
    event_binding,
    new_key_id_and_material,
)
from picasse.domain.aggregates import Aggregate
from picasse.domain.customers import Contact, Customer
from picasse.domain.personal import ERASED, Personal
from picasse.domain.values import EmailAddress, PhoneNumber


class Note(Aggregate):
    """A tenant-scoped aggregate with personal data of two subjects."""

    @event("Written")
    def __init__(
        self,
        tenant_id: UUID,
        author: Annotated[str, Personal("user")],
        contact: Contact,
        pages: int,
    ) -> None:
        self.tenant_id = tenant_id
        self.author = author
        self.contact = contact
        self.pages = pages


texts = st.text(min_size=0, max_size=200)


def _note(author: str, name: str) -> Note:
    return Note(
        tenant_id=uuid4(),
        author=author,
        contact=Contact(name, EmailAddress("a@example.com"), PhoneNumber("+31612345678")),
        pages=3,
    )


def _sealed_values(state: bytes, code: int = SEALED_GROUP) -> list[bytes]:
    found: list[bytes] = []

    def walk(value: object) -> None:
        if isinstance(value, msgspec.msgpack.Ext) and value.code == code:
            found.append(bytes(value.data))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(msgspec.msgpack.decode(state))
    return found


@settings(max_examples=60, deadline=None)
@given(author=texts, name=texts)
def test_sealed_fields_open_to_what_was_sealed(author: str, name: str) -> None:
    mapper = SealingMapper(keys=MemoryKeyRing())
    note = _note(author, name)
    (created,) = note.collect_events()
    stored = mapper.to_stored_event(created)
    opened = mapper.to_domain_event(stored)
    assert opened.author == author
    assert opened.contact.name == name
    assert opened.pages == 3
    assert opened.originator_id == note.id
    # One seal per subject: the author's, and the contact's (name, e-mail and phone).
    assert len(_sealed_values(stored.state)) == 2
    assert len(_sealed_values(stored.state, SEALED_WITH)) == 2
    assert not _sealed_values(stored.state, SEALED)


@settings(max_examples=60, deadline=None)
@given(author=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=12, max_size=100))
def test_stored_state_holds_no_plaintext_of_personal_fields(author: str) -> None:
    mapper = SealingMapper(keys=MemoryKeyRing())
    (created,) = _note(author, author).collect_events()
    state = mapper.to_stored_event(created).state
    assert author.encode() not in state
    assert b"a@example.com" not in state
    assert b"+31612345678" not in state


@settings(max_examples=30, deadline=None)
@given(author=texts)
def test_a_different_key_ring_cannot_open_and_does_not_pretend_erased(author: str) -> None:
    sealing = SealingMapper(keys=MemoryKeyRing())
    (created,) = _note(author, "x").collect_events()
    stored = sealing.to_stored_event(created)
    stranger = SealingMapper(keys=MemoryKeyRing())
    # A ring without the key treats it as destroyed: the value reads as erased.
    assert stranger.to_domain_event(stored).author == ERASED


@settings(max_examples=60, deadline=None)
@given(author=texts, flip=st.integers(min_value=0, max_value=10_000))
def test_a_tampered_ciphertext_is_rejected(author: str, flip: int) -> None:
    mapper = SealingMapper(keys=MemoryKeyRing())
    (created,) = _note(author, "x").collect_events()
    stored = mapper.to_stored_event(created)
    sealed = _sealed_values(stored.state)[0]
    position = 16 + flip % (len(sealed) - 16)  # anywhere after the key id
    tampered = bytearray(sealed)
    tampered[position] ^= 0x01
    state = stored.state.replace(sealed, bytes(tampered))
    with pytest.raises(SealBroken):
        mapper.to_domain_event(
            StoredEvent(stored.originator_id, stored.originator_version, stored.topic, state)
        )


def _restore(stored: StoredEvent, state: dict[str, object]) -> StoredEvent:
    return StoredEvent(
        stored.originator_id,
        stored.originator_version,
        stored.topic,
        msgspec.msgpack.encode(state),
    )


@settings(max_examples=30, deadline=None)
@given(author=texts)
def test_a_ciphertext_moved_to_another_event_does_not_open(author: str) -> None:
    mapper = SealingMapper(keys=MemoryKeyRing())
    (one,) = _note(author, "x").collect_events()
    (two,) = _note("someone else", "y").collect_events()
    stored_one = mapper.to_stored_event(one)
    stored_two = mapper.to_stored_event(two)
    state_two = msgspec.msgpack.decode(stored_two.state)
    state_two["contact"] = msgspec.msgpack.decode(stored_one.state)["contact"]
    with pytest.raises(SealBroken):
        mapper.to_domain_event(_restore(stored_two, state_two))


def test_a_ciphertext_moved_to_another_field_of_the_same_event_does_not_open() -> None:
    mapper = SealingMapper(keys=MemoryKeyRing())
    customer = Customer(
        organisation="Acme",
        contact=Contact("Bob", EmailAddress("b@example.com"), PhoneNumber("+31612345678")),
        billing_address="Street 1",
    )
    (registered,) = customer.collect_events()
    stored = mapper.to_stored_event(registered)
    state = msgspec.msgpack.decode(stored.state)
    # Same key (the organisation's), same event: only the field path tells them apart.
    state["organisation"], state["billing_address"] = (
        state["billing_address"],
        state["organisation"],
    )
    with pytest.raises(SealBroken):
        mapper.to_domain_event(_restore(stored, state))


def test_a_field_taken_out_of_its_subjects_group_does_not_open() -> None:
    mapper = SealingMapper(keys=MemoryKeyRing())
    (created,) = _note("the author", "the contact").collect_events()
    stored = mapper.to_stored_event(created)
    state = msgspec.msgpack.decode(stored.state)
    contact_key_id = state["contact"]["email"].data
    # The contact's group without its e-mail: the seal names the paths of all its fields.
    state["contact"]["email"] = state["author"]
    state["author"] = msgspec.msgpack.Ext(SEALED_WITH, contact_key_id)
    with pytest.raises(SealBroken):
        mapper.to_domain_event(_restore(stored, state))


def test_a_group_whose_seal_was_removed_does_not_open() -> None:
    mapper = SealingMapper(keys=MemoryKeyRing())
    (created,) = _note("the author", "the contact").collect_events()
    stored = mapper.to_stored_event(created)
    state = msgspec.msgpack.decode(stored.state)
    state["contact"]["name"] = state["contact"]["email"]  # a reference to the group only
    with pytest.raises(SealBroken):
        mapper.to_domain_event(_restore(stored, state))


def test_an_event_stored_with_each_field_sealed_on_its_own_still_opens() -> None:
    """The format before one seal per subject: each field its own SEALED value, bound to
    its event and its path."""
    ring = MemoryKeyRing()
    mapper = SealingMapper(keys=ring)
    note = _note("the author", "the contact")
    (created,) = note.collect_events()
    binding = event_binding(note.id, 1)
    user = ring.sealing_key(note.tenant_id, f"user/{note.id}")
    contact = ring.sealing_key(note.tenant_id, f"contact/{note.id}")

    def sealed(key: Any, value: object, path: str) -> msgspec.msgpack.Ext:
        plaintext = msgspec.msgpack.encode(value)
        return msgspec.msgpack.Ext(SEALED, _seal(key, plaintext, binding + path.encode()))

    old_state = {
        "timestamp": created.timestamp.isoformat(),
        "originator_topic": get_topic(Note),
        "tenant_id": note.tenant_id,
        "author": sealed(user, "the author", "author"),
        "contact": {
            "name": sealed(contact, "the contact", "contact.name"),
            "email": sealed(contact, note.contact.email, "contact.email"),
            "phone": sealed(contact, note.contact.phone, "contact.phone"),
        },
        "pages": 3,
    }
    stored = StoredEvent(note.id, 1, get_topic(type(created)), msgspec.msgpack.encode(old_state))
    opened = mapper.to_domain_event(stored)
    assert opened.author == "the author"
    assert opened.contact == note.contact
    moved = dict(old_state, author=old_state["contact"]["name"])  # type: ignore[index]
    with pytest.raises(SealBroken):
        mapper.to_domain_event(StoredEvent(note.id, 1, stored.topic, msgspec.msgpack.encode(moved)))
    ring.destroy_subject(note.tenant_id, f"contact/{note.id}")
    assert mapper.to_domain_event(stored).contact.email == ERASED


def test_an_unchanged_restored_state_still_opens() -> None:
    mapper = SealingMapper(keys=MemoryKeyRing())
    (created,) = _note("a", "b").collect_events()
    stored = mapper.to_stored_event(created)
    assert (
        mapper.to_domain_event(_restore(stored, msgspec.msgpack.decode(stored.state))).author == "a"
    )


def test_a_destroyed_subject_key_reads_as_erased_and_leaves_other_subjects_readable() -> None:
    ring = MemoryKeyRing()
    mapper = SealingMapper(keys=ring)
    note = _note("the author", "the contact")
    (created,) = note.collect_events()
    stored = mapper.to_stored_event(created)
    ring.destroy_subject(note.tenant_id, f"contact/{note.id}")
    opened = mapper.to_domain_event(stored)
    assert opened.contact.name == ERASED
    assert opened.contact.email == ERASED
    assert opened.author == "the author"
    assert opened.pages == 3


def test_an_opened_contact_is_invisible_to_the_garbage_collector_erased_or_not() -> None:
    """A replay keeps every contact it opens; untracked, they cost no collection."""
    ring = MemoryKeyRing()
    mapper = SealingMapper(keys=ring)
    note = _note("the author", "the contact")
    (created,) = note.collect_events()
    stored = mapper.to_stored_event(created)
    opened = mapper.to_domain_event(stored).contact
    assert opened == note.contact and not gc.is_tracked(opened)
    ring.destroy_subject(note.tenant_id, f"contact/{note.id}")
    erased = mapper.to_domain_event(stored).contact
    assert erased.name == ERASED and not gc.is_tracked(erased)


# The mapper stores only what it can read back, and refuses the rest before writing.


class Loose(Aggregate):
    @event("Made")
    def __init__(self, anything: Any, count: int) -> None:
        self.anything = anything


class Unannotated(Aggregate):
    @event("Made")
    def __init__(self, tenant_id: UUID, untyped) -> None:  # type: ignore[no-untyped-def]
        self.untyped = untyped


class Opaque:
    """A class msgspec cannot store by itself."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and other.text == self.text

    __hash__ = None  # type: ignore[assignment]


class HoldsOpaque(Aggregate):
    @event("Made")
    def __init__(self, thing: Opaque) -> None:
        self.thing = thing


class OpaqueAsText(Transcoding):
    type = Opaque
    name = "opaque"

    def encode(self, obj: Opaque) -> str:
        return obj.text

    def decode(self, data: str) -> Opaque:
        return Opaque(data)


WHEN = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)


class Counted(Aggregate):
    @event("Counted")
    def __init__(self, tenant_id: UUID, count: int, at: datetime) -> None:
        self.count = count
        self.at = at


@pytest.mark.parametrize(
    ("event_class", "field", "reason"),
    [
        # Classes made by @event("Made"), from the methods' signatures: mypy cannot see them.
        (Loose.Made, "anything", "is typed Any"),  # type: ignore[attr-defined]
        (Unannotated.Made, "untyped", "has no type annotation"),  # type: ignore[attr-defined]
        (HoldsOpaque.Made, "thing", "cannot encode"),  # type: ignore[attr-defined]
    ],
)
def test_an_event_class_the_store_could_not_read_back_is_refused_naming_class_and_field(
    event_class: type, field: str, reason: str
) -> None:
    mapper = SealingMapper(keys=MemoryKeyRing())
    with pytest.raises(EventNotStorable) as refused:
        mapper.plan(event_class)
    assert f"{event_class.__qualname__}.{field}" in str(refused.value)
    assert reason in str(refused.value)


def test_an_event_with_an_any_field_is_refused_before_it_is_stored() -> None:
    mapper = SealingMapper(keys=MemoryKeyRing())
    (made,) = Loose(anything={"when": WHEN}, count=1).collect_events()
    with pytest.raises(EventNotStorable, match=r"Loose\.Made\.anything"):
        mapper.to_stored_event(made)


def test_a_type_with_a_registered_transcoding_round_trips_through_it() -> None:
    transcoder = JSONTranscoder()
    transcoder.register(OpaqueAsText())
    mapper = SealingMapper(transcoder, keys=MemoryKeyRing())
    (made,) = HoldsOpaque(thing=Opaque("kept as text")).collect_events()
    stored = mapper.to_stored_event(made)
    assert b"kept as text" in stored.state
    assert mapper.to_domain_event(stored).thing == Opaque("kept as text")


def test_a_value_of_another_type_than_its_annotation_is_refused_at_write_time() -> None:
    mapper = SealingMapper(keys=MemoryKeyRing())
    (counted,) = Counted(tenant_id=uuid4(), count="three", at=WHEN).collect_events()  # type: ignore[arg-type]
    with pytest.raises(EventNotStorable, match=r"Counted\.Counted v1 .* nothing was written"):
        mapper.to_stored_event(counted)


def test_a_personal_value_of_another_type_than_its_annotation_is_refused_before_sealing() -> None:
    mapper = SealingMapper(keys=MemoryKeyRing())
    (written,) = Note(
        tenant_id=uuid4(),
        author=42,  # type: ignore[arg-type]
        contact=Contact("n", EmailAddress("a@example.com"), PhoneNumber("+31612345678")),
        pages=1,
    ).collect_events()
    with pytest.raises(EventNotStorable, match="author"):
        mapper.to_stored_event(written)


@settings(max_examples=60, deadline=None)
@given(minutes=st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59))
def test_a_datetime_keeps_its_utc_offset(minutes: int) -> None:
    mapper = SealingMapper(keys=MemoryKeyRing())
    zone = timezone(timedelta(minutes=minutes))
    at = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=zone)
    (counted,) = Counted(tenant_id=uuid4(), count=3, at=at).collect_events()
    opened = mapper.to_domain_event(mapper.to_stored_event(counted))
    assert opened.at == at
    assert opened.at.utcoffset() == timedelta(minutes=minutes)


class Tally(Aggregate):
    """Version 1 of an event class: how old events were written."""

    class Counted(Aggregate.Event):
        count: int


class Tally2(Aggregate):
    """Version 2 of the same event class: a field added, old events upcast on reading."""

    class Counted(Aggregate.Event):
        class_version = 2
        count: int
        unit: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["unit"] = "pieces"


def test_an_event_written_by_an_older_class_version_is_upcast_on_reading() -> None:
    mapper = SealingMapper(keys=MemoryKeyRing())
    tally = Tally()
    tally.trigger_event(Tally.Counted, count=7)
    _, old = tally.collect_events()
    stored = mapper.to_stored_event(old)
    as_if_old = StoredEvent(
        stored.originator_id, stored.originator_version, get_topic(Tally2.Counted), stored.state
    )
    upcast = mapper.to_domain_event(as_if_old)
    assert (type(upcast), upcast.count, upcast.unit) == (Tally2.Counted, 7, "pieces")


def test_an_event_of_the_current_class_version_reads_back_unchanged() -> None:
    mapper = SealingMapper(keys=MemoryKeyRing())
    tally = Tally2()
    tally.trigger_event(Tally2.Counted, count=7, unit="boxes")
    _, new = tally.collect_events()
    assert mapper.to_domain_event(mapper.to_stored_event(new)).unit == "boxes"


class OldDelivery(Aggregate):
    """How a delivery's failure was stored before reasons were codes: the provider's words."""

    class Failed(Aggregate.Event):
        reason: str


def test_a_failure_stored_with_a_providers_own_words_reads_back_as_the_unknown_code() -> None:
    from picasse.domain.messages import Delivery, FailureReason

    mapper = SealingMapper(keys=MemoryKeyRing())
    old = OldDelivery()
    old.trigger_event(OldDelivery.Failed, reason="rejected: no such user annabel@example.nl")
    _, failed = old.collect_events()
    stored = mapper.to_stored_event(failed)
    as_stored_then = StoredEvent(
        stored.originator_id, stored.originator_version, get_topic(Delivery.Failed), stored.state
    )

    read = mapper.to_domain_event(as_stored_then)

    assert read.reason is FailureReason.UNKNOWN
    assert b"annabel" not in mapper.to_stored_event(read).state


class DeliveryBeforeBilledFlag(Aggregate):
    """How a delivery's queuing was stored before account mail was told apart: no `billed`."""

    class Queued(Aggregate.Created):
        tenant_id: UUID
        month: str
        message_id: UUID
        index: int
        channel: str
        to: Annotated[str, Personal("traffic", of="month")]
        not_before: datetime | None
        escalation_level: int

    @event(Queued)
    def __init__(self, tenant_id: UUID, month: str, message_id: UUID, index: int, channel: str,
                 to: Annotated[str, Personal("traffic", of="month")], not_before: datetime | None,
                 escalation_level: int) -> None:  # fmt: skip
        pass


def test_a_delivery_queued_before_the_billed_flag_reads_back_as_billed() -> None:
    from picasse.domain.messages import Delivery

    mapper = SealingMapper(keys=MemoryKeyRing())
    old = DeliveryBeforeBilledFlag(tenant_id=uuid4(), month="2026-03", message_id=uuid4(),
                                   index=0, channel="email", to="ann@example.org",
                                   not_before=None, escalation_level=0)  # fmt: skip
    (queued,) = old.collect_events()
    stored = mapper.to_stored_event(queued)
    as_stored_then = StoredEvent(
        stored.originator_id, stored.originator_version, get_topic(Delivery.Queued), stored.state
    )

    read = mapper.to_domain_event(as_stored_then)

    assert isinstance(read, Delivery.Queued) and read.billed is True
    assert read.to == "ann@example.org"


class Roster(Aggregate):
    """Personal fields in a list of structs: their places differ from event to event."""

    @event("Listed")
    def __init__(self, tenant_id: UUID, contacts: list[Contact]) -> None:
        self.tenant_id = tenant_id
        self.contacts = contacts


def test_the_mapper_counts_the_values_that_read_as_erased_at_fixed_places_and_in_lists() -> None:
    ring = MemoryKeyRing()
    mapper = SealingMapper(keys=ring)
    note = _note("the author", "the contact")
    contact = Contact("x", EmailAddress("x@example.com"), PhoneNumber("+31612345678"))
    roster = Roster(tenant_id=note.tenant_id, contacts=[contact, contact])
    stored = [mapper.to_stored_event(e) for e in [*note.collect_events(), *roster.collect_events()]]
    assert [mapper.erased_count(mapper.to_domain_event(s)) for s in stored] == [0, 0]

    ring.destroy_subject(note.tenant_id, f"contact/{note.id}")
    ring.destroy_subject(note.tenant_id, f"contact/{roster.id}")
    opened = [mapper.to_domain_event(s) for s in stored]
    assert opened[0].author == "the author"  # another subject's value: not counted
    assert [mapper.erased_count(e) for e in opened] == [3, 6]


@pytest.mark.parametrize(
    "value",
    ["", "Ann Example", "é" * 40, "x" * 70_000, 0, -1, 2**63 - 1, 1.5, True, None, b"\0\xff"],
)
def test_a_plain_scalar_is_encoded_as_the_walk_for_datetimes_would_encode_it(value: object) -> None:
    # `encode` gives exact scalars straight to the encoder; the bytes must not depend on it.
    mapper = SealingMapper(keys=MemoryKeyRing())
    walked = msgspec.msgpack.encode(msgspec.to_builtins(value, builtin_types=(bytes,)))
    assert mapper.encode(value) == walked
    assert mapper.encode([value]) == msgspec.msgpack.encode([value])


def test_new_key_ids_are_random_version_4_uuids_and_each_key_its_own_material() -> None:
    made = [new_key_id_and_material() for _ in range(200)]
    ids = [UUID(bytes=key_id) for key_id, _ in made]
    assert all(key_id.version == 4 and key_id.variant == RFC_4122 for key_id in ids)
    assert len(set(ids)) == len(ids)
    assert all(len(material) == 32 for _, material in made)
    assert len({material for _, material in made}) == len(made)
    # The bits a version 4 UUID leaves random vary: nothing else was fixed by mistake.
    fixed = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
    varying = 0
    for key_id in ids:
        varying |= key_id.int ^ ids[0].int
    assert varying == fixed


def _opened_groups(ring: MemoryKeyRing, stored: StoredEvent) -> object:
    """The stored state with each group's seal replaced by its key id and its decrypted
    plaintext (the seal's nonce is random): what must not depend on how it was sealed."""
    state = msgspec.msgpack.decode(stored.state)
    paths: dict[bytes, list[str]] = {}
    seals: dict[bytes, bytes] = {}

    def walk(value: object, path: str) -> None:
        if isinstance(value, msgspec.msgpack.Ext):
            data = bytes(value.data)
            key_id = data[:16] if value.code == SEALED_GROUP else data
            paths.setdefault(key_id, []).append(path)
            if value.code == SEALED_GROUP:
                seals[key_id] = data
        elif isinstance(value, dict):
            for name, item in value.items():
                walk(item, f"{path}.{name}" if path else name)

    walk(state, "")
    binding = event_binding(UUID(str(stored.originator_id)), stored.originator_version)

    def opened(value: object) -> object:
        if isinstance(value, msgspec.msgpack.Ext) and value.code == SEALED_GROUP:
            data = bytes(value.data)
            key_id = data[:16]
            key = ring.opening_key(key_id)
            assert key is not None
            aad = binding + b"\0group\0" + "\0".join(paths[key_id]).encode()
            return ("group", key_id, key.aead.decrypt(data[16:28], data[28:], aad))
        if isinstance(value, dict):
            return [(name, opened(item)) for name, item in value.items()]  # order too
        return value

    return opened(state)


class Person(msgspec.Struct, frozen=True):
    person_id: UUID
    name: Annotated[str, Personal("contact", of="person_id")]


class Met(Aggregate):
    """Two fields of one subject that the declarations cannot tell are one: the contact
    of the event itself, and a person who may be that same contact."""

    @event("Met")
    def __init__(
        self, tenant_id: UUID, email: Annotated[str, Personal("contact")], person: Person
    ) -> None:
        self.tenant_id = tenant_id
        self.email = email
        self.person = person


def test_sealing_a_group_at_a_time_stores_what_sealing_field_by_field_does() -> None:
    """`to_stored_event` seals the declared groups of an event one at a time; `_Sealing`,
    field by field, is what it stood for (and still does for lists of structs): the same
    fields in the same order, the same key ids and the same sealed plaintexts."""
    ring = MemoryKeyRing()
    mapper = SealingMapper(keys=ring)
    customer = Customer(
        organisation="Acme",
        contact=Contact("Bob", EmailAddress("b@example.com"), PhoneNumber("+31612345678")),
        billing_address="Street 1",
    )
    customer.change_billing_address("Street 2")
    events = [*customer.collect_events(), *_note("the author", "the contact").collect_events()]
    for domain_event in events:
        plan = mapper.plan(type(domain_event))
        assert plan.groups is not None
        stored = mapper.to_stored_event(domain_event)
        sealing = _Sealing(
            mapper,
            domain_event.__dict__,
            domain_event.originator_id,
            domain_event.originator_version,
        )
        by_fields = sealing.fields(plan.fields, domain_event.__dict__, "")
        sealing.seal()
        alike = StoredEvent(
            stored.originator_id, stored.originator_version, stored.topic, mapper.encode(by_fields)
        )
        assert _opened_groups(ring, stored) == _opened_groups(ring, alike)


def test_two_declared_groups_of_one_subject_are_sealed_as_one() -> None:
    mapper = SealingMapper(keys=MemoryKeyRing())
    (made,) = Met(
        tenant_id=uuid4(), email="a@example.com", person=Person(uuid4(), "Ann")
    ).collect_events()
    # The person met is the event's own contact: one subject, one key, one seal.
    met = type(made)(**{**made.__dict__, "person": Person(made.originator_id, "Ann")})
    stored = mapper.to_stored_event(met)
    assert len(_sealed_values(stored.state)) == 1
    assert len(_sealed_values(stored.state, SEALED_WITH)) == 1
    opened = mapper.to_domain_event(stored)
    assert (opened.email, opened.person.name) == ("a@example.com", "Ann")
    (other,) = Met(
        tenant_id=uuid4(), email="b@example.com", person=Person(uuid4(), "Bo")
    ).collect_events()
    assert len(_sealed_values(mapper.to_stored_event(other).state)) == 2
