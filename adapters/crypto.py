"""The sealing mapper: the one place personal data is sealed (AES-256-GCM) and opened.

Each field an event declares `Personal` is encoded on its own (msgpack); the fields of
one data subject in one event are sealed together, in one AES-GCM call under the
subject's key. The first of them (in field order) is stored as a msgpack extension value
SEALED_GROUP holding key id (16 bytes) | nonce (12 bytes) | ciphertext+tag of the msgpack
array of the group's encoded values; each other field of the group holds SEALED_WITH with
just the key id. The associated data binds the ciphertext to its event (originator id,
version) and to the paths of all the group's fields, in order, so neither the ciphertext
nor a field can be moved. Events stored before (SEALED: each field sealed on its own,
bound to its event and its one path) stay readable.
Everything else in the event stays readable, so history replays after erasure.

The mapper stores exactly what each event class's annotations say, and nothing it
could not read back: a class is checked when first planned (no unannotated, `Any` or
unknown types), and each event is checked against its annotations before it is
written. Datetimes keep their UTC offsets. Transcodings registered on an application
are honoured for types msgspec does not store by itself. `class_version` and
`upcast_vN_vN+1` work as in the library's own mapper.
"""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import datetime
import enum
import functools
import hashlib
import hmac
import inspect
import operator
import os
import threading
import types
import typing
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from types import GenericAlias
from typing import Any, Protocol
from uuid import UUID

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV
from eventsourcing.persistence import (
    Cipher,
    Compressor,
    JSONTranscoder,
    Mapper,
    MapperDeserialisationError,
    StoredEvent,
    Transcoder,
    Transcoding,
)
from eventsourcing.utils import get_topic, resolve_topic

from picasse.domain.personal import ERASED, Erased, Personal, subject_name

SEALED = 1  # msgpack extension code of a value sealed on its own (the older format)
SEALED_GROUP = 2  # the first field of a subject's group: key id | nonce | sealed values
SEALED_WITH = 3  # another field of that group: the key id; its value is in the group
NONCE_SIZE = 12
KEY_ID_SIZE = 16
# Events a replay's page is decoded in at a time, the keys of each part fetched while the
# part before it is built (`SealingMapper.to_domain_events`); pages shorter than two parts
# go whole, their keys in one query. A page of 1,000 (the bench's replay; the audit reads
# 250) goes whole: on a 2-core machine loaded by other work, its two overlapped key
# queries cost more than the wait they hid (docs/architecture.md, the store section).
OVERLAPPED_PART = 1000


class SubjectKey(msgspec.Struct, frozen=True, gc=False):
    """An unwrapped data subject key.

    A replay keeps one for every subject it met, so it is small and costs the garbage
    collector nothing: its id and its tenant's are kept as their 16 bytes, as sealed
    values and the key store's answers carry them (UUID objects are made only when asked
    for: one per tenant of a replayed page cost more than its AES-GCM calls), and it is
    untracked (gc=False), which is safe because it can never be in a reference cycle:
    nothing it holds refers back to it.
    """

    raw_id: bytes
    tenant_raw: bytes
    subject: str
    aead: AESGCM  # the key material stays inside it, out of any repr
    # The view and blind-index keys derived from it, made when a view first needs them
    # (`_derive`): they live exactly as long as the key itself.
    view_keys: _Derived | None = None

    @property
    def key_id(self) -> UUID:
        return UUID(bytes=self.raw_id)

    @property
    def tenant_id(self) -> UUID:
        return UUID(bytes=self.tenant_raw)

    def __repr__(self) -> str:
        return f"SubjectKey({self.key_id}, tenant {self.tenant_id}, {self.subject!r})"


class SealingNeed(msgspec.Struct, frozen=True):
    """A key a save will seal under; `new_*` when it cannot exist yet (a first event)."""

    tenant_id: UUID
    subject: str
    new_subject: bool = False
    new_tenant: bool = False


class KeyRing(Protocol):
    """Where the mapper gets keys: sealing creates a subject's key on first use."""

    def sealing_key(
        self, tenant_id: UUID, subject: str, *, new_subject: bool = False, new_tenant: bool = False
    ) -> SubjectKey: ...

    def opening_key(self, key_id: bytes) -> SubjectKey | None:
        """The key with this 16-byte id, or None once destroyed (the value reads as erased)."""
        ...

    def prefetch(self, needs: Iterable[SealingNeed]) -> None:
        """Make the keys of a save at hand at once (a hint; may do nothing)."""
        ...

    def load(self, key_ids: Iterable[bytes]) -> object:
        """Make these keys at hand at once, before opening a page of events (a hint)."""
        ...

    def load_soon(self, key_ids: Iterable[bytes]) -> Callable[[], object]:
        """Start making these keys at hand; the call returned waits until they are. The
        caller works in between (a hint, like `load`)."""
        ...

    def note_sealed(self, tenant_id: UUID) -> None:
        """One more event holds data of this tenant (counted for statements of erasure)."""
        ...


class SealBroken(MapperDeserialisationError):
    """A sealed value does not open with its key: tampered with, or moved from elsewhere."""


class PersonalDataNotSealable(TypeError):
    """An event class declares personal data the mapper cannot place under a subject."""


class EventNotStorable(TypeError):
    """An event (class) holds a field the store could not read back as it was: refused
    before anything is written."""


# A version 4 UUID's fixed bits, set on 128 random bits read as an integer.
_V4_KEEP = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_V4_SET = (0x4000 << 64) | (0x8000 << 48)


def new_key_id_and_material() -> tuple[bytes, bytes]:
    """A new key's id (the 16 bytes of a random, version 4 UUID) and its 256 bits of key
    material, from one read of the operating system's random source: what `uuid4()` and
    `AESGCM.generate_key` read in two, and `uuid4` then builds a UUID object only for its
    bytes to be taken (a third of a new key's cost, a key a data subject)."""
    drawn = os.urandom(48)
    key_id = (int.from_bytes(drawn[:16]) & _V4_KEEP | _V4_SET).to_bytes(16)
    return key_id, drawn[16:]


def new_subject_key(tenant_id: UUID, subject: str) -> tuple[SubjectKey, bytes]:
    key_id, material = new_key_id_and_material()
    return SubjectKey(key_id, tenant_id.bytes, subject, AESGCM(material)), material


class MemoryKeyRing:
    """Keys held in memory only: for tests and for tools that must not touch a database."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_subject: dict[tuple[UUID, str], SubjectKey] = {}
        self._by_id: dict[bytes, SubjectKey] = {}
        self._destroyed: set[bytes] = set()

    def sealing_key(
        self, tenant_id: UUID, subject: str, *, new_subject: bool = False, new_tenant: bool = False
    ) -> SubjectKey:
        with self._lock:
            key = self._by_subject.get((tenant_id, subject))
            if key is None:
                key, _ = new_subject_key(tenant_id, subject)
                self._by_subject[(tenant_id, subject)] = key
                self._by_id[key.raw_id] = key
            return key

    def opening_key(self, key_id: bytes) -> SubjectKey | None:
        return self._by_id.get(key_id)

    def prefetch(self, needs: Iterable[SealingNeed]) -> None:
        pass

    def load(self, key_ids: Iterable[bytes]) -> None:
        pass

    def load_soon(self, key_ids: Iterable[bytes]) -> Callable[[], None]:
        return lambda: None

    def note_sealed(self, tenant_id: UUID) -> None:
        pass

    def subject_key(self, tenant_id: UUID, subject: str) -> SubjectKey | None:
        return self._by_subject.get((tenant_id, subject))

    def live_subjects(self, tenant_id: UUID, prefix: str) -> list[str]:
        return sorted(s for t, s in self._by_subject if t == tenant_id and s.startswith(prefix))

    def was_destroyed(self, key_id: bytes) -> bool:
        return key_id in self._destroyed

    def destroy_subject(self, tenant_id: UUID, subject: str) -> None:
        with self._lock:
            key = self._by_subject.pop((tenant_id, subject), None)
            if key is not None:
                del self._by_id[key.raw_id]
                self._destroyed.add(key.raw_id)


def event_binding(originator_id: UUID, version: int) -> bytes:
    """The part of every field's associated data that names its event: the id's 16 bytes
    (from its int, as `UUID.bytes` makes them, without that property's call), then the
    version's 8."""
    return originator_id.int.to_bytes(16, "big") + version.to_bytes(8, "big")


# Plans: how one event class is stored. Built once per class from its type hints.

# Types msgspec stores and reads back by itself. Structs, dataclasses, enums, literals,
# unions and typed containers are checked part by part.
_NATIVE_TYPES = frozenset(
    {
        str,
        int,
        float,
        bool,
        bytes,
        bytearray,
        type(None),
        datetime.datetime,
        datetime.date,
        datetime.time,
        datetime.timedelta,
        UUID,
        Decimal,
        msgspec.msgpack.Ext,
    }
)
_CONTAINERS = frozenset(
    {
        list,
        tuple,
        set,
        frozenset,
        dict,
        collections.abc.Sequence,
        collections.abc.MutableSequence,
        collections.abc.Set,
        collections.abc.MutableSet,
        collections.abc.Mapping,
        collections.abc.MutableMapping,
    }
)
# Passed through `to_builtins` unchanged, so they are stored as msgpack stores them;
# everything else (datetimes with their offsets, above all) becomes what JSON would hold.
_STORED_AS_IS = (bytes, bytearray, memoryview, msgspec.msgpack.Ext)
# Exactly these types (not subclasses) encode alike with and without `to_builtins`.
_SCALARS = frozenset({str, int, float, bool, type(None), bytes})


class _StoredVersion(msgspec.Struct):
    """A stored state's class version, the rest of it skipped unread (absent: version 1)."""

    class_version: int = 1


_STORED_VERSION = msgspec.msgpack.Decoder(_StoredVersion)

Transcodings = dict[type, Transcoding]


def _unstorable(annotation: Any, transcoded: Transcodings, seen: set[type]) -> str | None:
    """Why values annotated so would not read back as written; None when they would."""
    if annotation is inspect.Parameter.empty:
        return "has no type annotation"
    if annotation is Any or annotation is object:
        return "is typed Any"
    if isinstance(annotation, typing.TypeVar):
        return f"is typed by the type variable {annotation}"
    if isinstance(annotation, str | typing.ForwardRef):
        return f"has an annotation that does not resolve: {annotation!r}"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _unstorable(args[0], transcoded, seen)
    if origin is typing.Literal:
        return None
    if origin is typing.Union or origin is types.UnionType or origin in _CONTAINERS:
        if not args:
            return f"is a bare {origin.__name__} (its items typed Any)"
        for arg in args:
            why = None if arg is Ellipsis else _unstorable(arg, transcoded, seen)
            if why is not None:
                return why
        return None
    if annotation in _CONTAINERS:
        return f"is a bare {annotation.__name__} (its items typed Any)"
    if origin is not None or not isinstance(annotation, type):
        return f"has the unsupported type {annotation!r}"
    if annotation in _NATIVE_TYPES or issubclass(annotation, enum.Enum):
        return None
    if issubclass(annotation, msgspec.Struct) or dataclasses.is_dataclass(annotation):
        # msgspec stores these itself, ignoring any transcoding: check their fields.
        if annotation in seen:
            return None
        seen.add(annotation)
        hints = typing.get_type_hints(annotation, include_extras=True)
        names = (
            annotation.__struct_fields__
            if issubclass(annotation, msgspec.Struct)
            else tuple(f.name for f in dataclasses.fields(annotation))
        )
        for name in names:
            why = _unstorable(hints.get(name, inspect.Parameter.empty), transcoded, seen)
            if why is not None:
                return f"holds {annotation.__qualname__}.{name}, which {why}"
        return None
    if annotation in transcoded:
        return None
    return (
        f"has the type {annotation.__qualname__}, which the store cannot encode"
        " (make it a msgspec Struct or a dataclass, or register a transcoding for it)"
    )


@dataclasses.dataclass(frozen=True)
class _Sealed:
    name: str
    personal: Personal
    decoder: msgspec.msgpack.Decoder[Any]


@dataclasses.dataclass(frozen=True)
class _Nested:
    name: str
    struct: type[msgspec.Struct]
    fields: tuple[_Field, ...]
    many: bool  # a list of such structs


@dataclasses.dataclass(frozen=True)
class _Plain:
    name: str


_Field = _Sealed | _Nested | _Plain


@dataclasses.dataclass(frozen=True)
class _Plan:
    fields: tuple[_Field, ...]
    decoder: msgspec.msgpack.Decoder[Any]
    has_personal: bool
    class_version: int  # > 1: stored with the state, upcast on reading
    # Each sealed field's path, plan and attribute names from the event down, in field
    # order; None when a list of structs makes them differ from event to event.
    leaves: tuple[tuple[str, _Sealed, tuple[str, ...]], ...] | None = None
    # The groups the declarations make (fields of one kind of one subject field): each
    # group's paths, associated data, attribute names and decoder. An event whose
    # stored groups are these opens without working out its groups (`_Opening`), and its
    # state is put together by `assembly` from its plain fields and the groups' values.
    groups: tuple[_StaticGroup, ...] | None = None
    assembly: tuple[_Step, ...] | None = None


@dataclasses.dataclass(frozen=True)
class _StaticGroup:
    paths: tuple[str, ...]
    aad: bytes
    names: tuple[tuple[str, ...], ...]
    decoder: msgspec.msgpack.Decoder[Any]  # all the group's values at once, as a tuple
    first: Callable[[Any], Any]  # the stored value of its first field: the seal
    others: tuple[Callable[[Any], Any], ...]  # those of its other fields
    # Writing: the kind of its subject, and its fields' values and its subject's value
    # (the field `of`) read from an event's state.
    kind: str
    values: tuple[Callable[[dict[str, Any]], Any], ...]
    subject: Callable[[dict[str, Any]], Any]


# How `_assemble` puts an event's state (or a nested struct's fields) together when its
# groups opened as declared: each field's name, then where its value comes from.
_PLAIN, _GROUPED, _STRUCT = 0, 1, 2
# (name, _PLAIN, None, None): the stored value as it is
# (name, _GROUPED, group index, position in the group): an opened value
# (name, _STRUCT, struct class, its fields' steps): a nested struct
_Step = tuple[str, int, Any, Any]


def _personal_of(annotation: Any) -> tuple[Any, Personal | None]:
    if typing.get_origin(annotation) is typing.Annotated:
        for meta in annotation.__metadata__:
            if isinstance(meta, Personal):
                return annotation.__origin__, meta
        return annotation.__origin__, None
    return annotation, None


DecHook = Callable[[type, Any], Any]


def _plan_fields(
    hints: dict[str, Any], names: list[str], dec_hook: DecHook | None
) -> tuple[tuple[_Field, ...], type]:
    """Field plans plus the msgspec shape in which the stored state decodes."""
    fields: list[_Field] = []
    shape: list[tuple[str, Any]] = []
    for name in names:
        value_type, personal = _personal_of(hints[name])
        if personal is not None:
            decoder = msgspec.msgpack.Decoder(value_type, dec_hook=dec_hook)
            fields.append(_Sealed(name, personal, decoder))
            shape.append((name, msgspec.msgpack.Ext))
            continue
        many = (
            typing.get_origin(value_type) in (list, tuple) and len(typing.get_args(value_type)) >= 1
        )
        inner = typing.get_args(value_type)[0] if many else value_type
        if isinstance(inner, type) and issubclass(inner, msgspec.Struct):
            inner_hints = typing.get_type_hints(inner, include_extras=True)
            sub_fields, sub_shape = _plan_fields(
                inner_hints, list(inner.__struct_fields__), dec_hook
            )
            if any(not isinstance(f, _Plain) for f in sub_fields):
                fields.append(_Nested(name, inner, sub_fields, many))
                shape.append((name, GenericAlias(list, sub_shape) if many else sub_shape))
                continue
        fields.append(_Plain(name))
        shape.append((name, value_type))
    # gc=False: a decoded shape holds only what was decoded into it, never itself, so it
    # is in no reference cycle. Tracked, a replay's pages of shapes were what the garbage
    # collector scanned most (a third of decoding's time, with the events kept).
    stored = msgspec.defstruct("Stored", shape, forbid_unknown_fields=False, gc=False)
    return tuple(fields), stored


def _plan_for(
    event_class: type, transcoded: Transcodings | None = None, dec_hook: DecHook | None = None
) -> _Plan:
    where = event_class.__qualname__
    try:
        hints = typing.get_type_hints(event_class, include_extras=True)
    except Exception as error:
        raise EventNotStorable(f"{where}: its annotations do not resolve: {error}") from None
    names = [
        f.name
        for f in dataclasses.fields(event_class)
        if f.name not in ("originator_id", "originator_version")
    ]
    for name in names:
        why = _unstorable(hints.get(name, inspect.Parameter.empty), transcoded or {}, set())
        if why is not None:
            raise EventNotStorable(f"{where}.{name} {why}: events of {where} are refused")
    try:
        fields, shape = _plan_fields(hints, names, dec_hook)
        decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(shape, dec_hook=dec_hook)
    except TypeError as error:
        raise EventNotStorable(f"{where}: {error}: events of {where} are refused") from None
    has_personal = any(not isinstance(f, _Plain) for f in fields)
    if has_personal and "tenant_id" in names and hints["tenant_id"] is not UUID:
        raise PersonalDataNotSealable(f"{where}.tenant_id must be a UUID")
    class_version = getattr(event_class, "class_version", 1)
    leaves = _static_leaves(fields, "", ())
    if leaves is None:
        return _Plan(fields, decoder, has_personal, class_version)
    groups = _static_groups(event_class, leaves, hints, dec_hook)
    slots = {names: (i, j) for i, group in enumerate(groups) for j, names in enumerate(group.names)}
    assembly = _assembly(fields, (), slots)
    return _Plan(fields, decoder, has_personal, class_version, leaves, groups, assembly)


def _assembly(
    fields: tuple[_Field, ...],
    names: tuple[str, ...],
    slots: dict[tuple[str, ...], tuple[int, int]],
) -> tuple[_Step, ...]:
    steps: list[_Step] = []
    for field in fields:
        here = (*names, field.name)
        if isinstance(field, _Plain):
            steps.append((field.name, _PLAIN, None, None))
        elif isinstance(field, _Sealed):
            steps.append((field.name, _GROUPED, *slots[here]))
        else:  # a single nested struct: lists of them make a plan without static groups
            steps.append((field.name, _STRUCT, field.struct, _assembly(field.fields, here, slots)))
    return tuple(steps)


def _stored_state(
    steps: tuple[_Step, ...],
    get: Callable[[Any, str], Any],
    source: Any,
    sealed: list[list[msgspec.msgpack.Ext]],
) -> dict[str, Any]:
    """What `_Sealing.fields` makes of an event's state (`get` reads it: a dict) or of a
    nested struct (read with getattr), from its groups' sealed values: its fields in
    order, each plain value as it is, each sealed one its group's seal or key id."""
    stored: dict[str, Any] = {}
    for name, how, a, b in steps:
        if how == _GROUPED:
            stored[name] = sealed[a][b]
        elif how == _PLAIN:
            stored[name] = get(source, name)
        else:
            stored[name] = _stored_state(b, getattr, get(source, name), sealed)
    return stored


def _assemble(
    steps: tuple[_Step, ...], shape: Any, opened: list[tuple[Any, ...]]
) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for name, how, a, b in steps:
        if how == _GROUPED:
            state[name] = opened[a][b]
        elif how == _PLAIN:
            state[name] = getattr(shape, name)
        else:
            # Struct.__init__ does not validate, so an erased field can hold ERASED.
            state[name] = a(**_assemble(b, getattr(shape, name), opened))
    return state


def _static_groups(
    event_class: type,
    leaves: tuple[tuple[str, _Sealed, tuple[str, ...]], ...],
    hints: dict[str, Any],
    dec_hook: DecHook | None,
) -> tuple[_StaticGroup, ...]:
    """The leaves grouped by what names their subject: the kind, and the field `of` read
    from the leaf's own struct if it has one so named, else from the event."""
    grouped: dict[tuple[str, str, tuple[str, ...]], list[tuple[str, _Sealed, tuple[str, ...]]]]
    grouped = {}
    for path, field, names in leaves:
        scope: tuple[str, ...] = ()
        if len(names) > 1:
            owner: Any = event_class
            for name in names[:-1]:
                owner_hints = typing.get_type_hints(owner, include_extras=True)
                owner = _personal_of(owner_hints[name])[0]
            if field.personal.of in owner.__struct_fields__:
                scope = names[:-1]
        kind, of = field.personal.kind, field.personal.of
        grouped.setdefault((kind, of, scope), []).append((path, field, names))
    return tuple(
        _StaticGroup(
            paths=tuple(path for path, _, _ in members),
            aad=_group_aad(tuple(path for path, _, _ in members)),
            names=tuple(names for _, _, names in members),
            decoder=_group_decoder(tuple(field.decoder.type for _, field, _ in members), dec_hook),
            first=operator.attrgetter(".".join(members[0][2])),
            others=tuple(operator.attrgetter(".".join(names)) for _, _, names in members[1:]),
            kind=kind,
            values=tuple(_state_getter(names) for _, _, names in members),
            subject=_state_getter((*scope, of)),
        )
        for (kind, of, scope), members in grouped.items()
    )


def _state_getter(names: tuple[str, ...]) -> Callable[[dict[str, Any]], Any]:
    """Reads the value at these attribute names from an event's state (its __dict__)."""
    head = operator.itemgetter(names[0])
    if len(names) == 1:
        return head
    rest = operator.attrgetter(".".join(names[1:]))
    return lambda state: rest(head(state))


def _group_decoder(
    types: tuple[Any, ...], dec_hook: DecHook | None
) -> msgspec.msgpack.Decoder[Any]:
    """Decodes a group's sealed array of values in one call, each to its field's type."""
    return msgspec.msgpack.Decoder(GenericAlias(tuple, types), dec_hook=dec_hook)


def _static_leaves(
    fields: tuple[_Field, ...], prefix: str, names: tuple[str, ...]
) -> tuple[tuple[str, _Sealed, tuple[str, ...]], ...] | None:
    leaves: list[tuple[str, _Sealed, tuple[str, ...]]] = []
    for field in fields:
        if isinstance(field, _Sealed):
            leaves.append((prefix + field.name, field, (*names, field.name)))
        elif isinstance(field, _Nested):
            if field.many:
                return None
            inner = _static_leaves(field.fields, f"{prefix}{field.name}.", (*names, field.name))
            if inner is None:
                return None
            leaves.extend(inner)
    return tuple(leaves)


class SealingMapper(Mapper[UUID]):
    """Maps domain events to stored events and back, sealing what is personal."""

    def __init__(
        self,
        transcoder: Transcoder | None = None,
        compressor: Compressor | None = None,
        cipher: Cipher | None = None,
        *,
        keys: KeyRing,
    ) -> None:
        if cipher is not None or compressor is not None:
            # The library would cipher the whole state; we seal field by field instead.
            raise TypeError("the sealing mapper takes no cipher or compressor")
        if transcoder is not None and not isinstance(transcoder, JSONTranscoder):
            raise TypeError(
                f"the sealing mapper stores with msgspec; it honours the transcodings of"
                f" a JSONTranscoder, not a {type(transcoder).__qualname__}"
            )
        # None when no transcodings are given: we encode with msgspec, never with the
        # library's transcoder, which its Mapper types as required.
        super().__init__(transcoder=transcoder)  # type: ignore[arg-type]
        self.keys = keys
        self._plans: dict[type, _Plan] = {}
        # Each stored topic's class and plan: a replay asks for them event by event.
        self._topics: dict[str, tuple[type, _Plan]] = {}
        self._group_decoders: dict[tuple[Any, ...], msgspec.msgpack.Decoder[Any]] = {}
        self._encoder = msgspec.msgpack.Encoder()
        # Application transcodings, for the types msgspec does not store by itself.
        self._transcoded: Transcodings = dict(transcoder.types) if transcoder else {}

    def plan(self, event_class: type) -> _Plan:
        """How events of this class are stored; refuses a class that could not be read back."""
        plan = self._plans.get(event_class)
        if plan is None:
            plan = self._plans[event_class] = _plan_for(
                event_class, self._transcoded, self._dec_hook
            )
        return plan

    def erased_count(self, domain_event: Any) -> int:
        """How many of the event's values read as erased (their subject's key destroyed).
        Only sealed fields can: an event without any is not looked at, and one whose sealed
        fields sit at fixed places is looked at there only."""
        plan = self.plan(type(domain_event))
        if not plan.has_personal:
            return 0
        if plan.leaves is not None:
            return sum(
                isinstance(_attr(domain_event, names), Erased) for _, _, names in plan.leaves
            )
        return sum(_erased_in(value) for value in vars(domain_event).values())

    def group_decoder(self, types: tuple[Any, ...]) -> msgspec.msgpack.Decoder[Any]:
        """The decoder of a group whose fields have these types (groups that are not
        their plan's static ones: lists of structs, or groups stored otherwise)."""
        decoder = self._group_decoders.get(types)
        if decoder is None:
            decoder = self._group_decoders[types] = _group_decoder(types, self._dec_hook)
        return decoder

    def _enc_hook(self, value: Any) -> Any:
        transcoding = self._transcoded.get(type(value))
        if transcoding is None:
            raise NotImplementedError(f"no transcoding for {type(value).__qualname__}")
        return transcoding.encode(value)

    def _dec_hook(self, type_: type, data: Any) -> Any:
        transcoding = self._transcoded.get(type_)
        if transcoding is None:
            raise NotImplementedError(f"no transcoding for {type_.__qualname__}")
        return transcoding.decode(data)

    def encode(self, value: Any) -> bytes:
        """msgpack, except that datetimes are stored as RFC 3339 text, keeping their offset.
        A plain scalar (most personal values are text) is the same either way: it goes
        straight to the encoder, without the walk that finds datetimes and transcodings."""
        if type(value) in _SCALARS:
            return self._encoder.encode(value)
        return self._encoder.encode(
            msgspec.to_builtins(value, builtin_types=_STORED_AS_IS, enc_hook=self._enc_hook)
        )

    # Writing

    def sealing_needs(self, domain_events: Iterable[Any]) -> list[SealingNeed]:
        """The keys sealing these events will use that may already exist, so a key ring
        can fetch them in one round trip before sealing starts."""
        needs = []
        new_tenants: set[UUID] = set()  # no key of theirs can exist yet
        new_subjects: set[tuple[UUID, str]] = set()
        for domain_event in domain_events:
            plan = self.plan(type(domain_event))
            if not plan.has_personal:
                continue
            state = domain_event.__dict__
            originator_id, version = state["originator_id"], state["originator_version"]
            tenant_id = state.get("tenant_id", originator_id)
            if version == 1 and tenant_id == originator_id:
                new_tenants.add(tenant_id)
            if tenant_id in new_tenants:
                continue  # created by this very save: none of its keys can exist
            subjects: dict[tuple[str, Any], str] = {}
            for personal, of in _personal_leaves(plan.fields, state, state):
                if (personal.kind, of) in subjects:
                    continue  # this event's need of this subject is known
                subject = subjects[personal.kind, of] = subject_name(personal.kind, of)
                if version == 1 and of == originator_id:
                    new_subjects.add((tenant_id, subject))
                if (tenant_id, subject) in new_subjects:
                    continue  # created by this very save: nothing to look up
                needs.append(SealingNeed(tenant_id, subject))
        return needs

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        event_class = type(domain_event)
        plan = self.plan(event_class)
        state = domain_event.__dict__
        originator_id: UUID = state["originator_id"]
        version: int = state["originator_version"]
        try:
            if plan.has_personal:
                stored = self._sealed_in_groups(plan, state, originator_id, version)
                if stored is None:
                    sealing = _Sealing(self, state, originator_id, version)
                    stored = sealing.fields(plan.fields, state, "")
                    sealing.seal()
            else:
                stored = {f.name: state[f.name] for f in plan.fields}
            if plan.class_version > 1:
                stored["class_version"] = plan.class_version
            encoded = self.encode(stored)
            plan.decoder.decode(encoded)  # what is written must read back
        except (msgspec.ValidationError, NotImplementedError, TypeError) as error:
            raise _refused(event_class, originator_id, version, error) from None
        if plan.has_personal:
            self.keys.note_sealed(state.get("tenant_id", originator_id))
        return StoredEvent(
            originator_id=originator_id,
            originator_version=version,
            topic=get_topic(event_class),
            state=encoded,
        )

    def _sealed_in_groups(
        self, plan: _Plan, state: dict[str, Any], originator_id: UUID, version: int
    ) -> dict[str, Any] | None:
        """The stored state of an event whose sealed fields sit at fixed places, sealed a
        group at a time (its plan's static groups): the very bytes `_Sealing` would make
        field by field, for a third of the work. None when this event needs `_Sealing`:
        no static groups, two groups whose subjects share a key, or a value that does not
        match its annotation (which `_Sealing` refuses, naming the field)."""
        groups, assembly = plan.groups, plan.assembly
        if groups is None or assembly is None:
            return None
        tenant_id: UUID = state.get("tenant_id", originator_id)
        first = version == 1
        new_tenant = first and tenant_id == originator_id
        binding = event_binding(originator_id, version)
        sealed: list[list[msgspec.msgpack.Ext]] = []
        key_ids: set[bytes] = set()
        encode, sealing_key = self.encode, self.keys.sealing_key
        for group in groups:
            of = group.subject(state)
            key = sealing_key(
                tenant_id,
                subject_name(group.kind, of),
                new_subject=first and of == originator_id,
                new_tenant=new_tenant,
            )
            # One array of the group's values: what `_Sealing.seal` makes of their
            # encodings, checked against their types in one decoding.
            plaintext = encode([value(state) for value in group.values])
            try:
                group.decoder.decode(plaintext)
            except msgspec.ValidationError:
                return None
            key_ids.add(key.raw_id)
            seal = msgspec.msgpack.Ext(SEALED_GROUP, _seal(key, plaintext, binding + group.aad))
            sealed.append(
                [seal] + [msgspec.msgpack.Ext(SEALED_WITH, key.raw_id)] * len(group.others)
            )
        if len(key_ids) < len(groups):
            return None  # two groups of one subject: `_Sealing` seals them as one
        return _stored_state(assembly, operator.getitem, state, sealed)

    # Reading

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        event_class, plan, shape = self._decode(stored_event)
        return self._build(event_class, plan, shape, stored_event)

    def to_domain_events(self, stored_events: Iterable[StoredEvent]) -> list[Any]:
        """Decode a page of events, fetching the keys they need in one go first. A long
        page goes in parts, each part's keys fetched while the previous part is built
        and the next decoded (`KeyRing.load_soon`): the server's look-up of the keys,
        which a replay otherwise waits for, overlaps the work."""
        stored = stored_events if isinstance(stored_events, list) else list(stored_events)
        if len(stored) < 2 * OVERLAPPED_PART:
            decoded = [(event, *self._decode(event)) for event in stored]
            key_ids = _key_ids(decoded)
            if key_ids:
                self.keys.load(key_ids)
            return [self._build(cls, plan, shape, event) for event, cls, plan, shape in decoded]
        events: list[Any] = []
        built = self._build
        previous: list[tuple[StoredEvent, type, _Plan, Any]] = []
        loading: Callable[[], object] | None = None
        try:
            for start in range(0, len(stored), OVERLAPPED_PART):
                decoded = [
                    (event, *self._decode(event))
                    for event in stored[start : start + OVERLAPPED_PART]
                ]
                if loading is not None:
                    loading()  # the previous part's keys
                key_ids = _key_ids(decoded)
                loading = self.keys.load_soon(key_ids) if key_ids else None
                events += [built(cls, plan, shape, event) for event, cls, plan, shape in previous]
                previous = decoded
            if loading is not None:
                loading()
        except BaseException:
            if loading is not None:
                with contextlib.suppress(Exception):
                    loading()  # its connection goes back to the pool; the first error wins
            raise
        events += [built(cls, plan, shape, event) for event, cls, plan, shape in previous]
        return events

    def _decode(self, stored_event: StoredEvent) -> tuple[type, _Plan, Any]:
        topic = stored_event.topic
        known = self._topics.get(topic)
        if known is None:
            event_class = resolve_topic(topic)
            known = self._topics[topic] = (event_class, self.plan(event_class))
        event_class, plan = known
        try:
            state = stored_event.state
            if plan.class_version > 1:
                state = self._upcast(event_class, plan.class_version, state)
            return event_class, plan, plan.decoder.decode(state)
        except msgspec.DecodeError as error:
            raise MapperDeserialisationError(
                f"cannot decode {stored_event.topic} {stored_event.originator_id}"
                f" v{stored_event.originator_version}: {error}"
            ) from error

    def _upcast(self, event_class: type, class_version: int, state: bytes) -> bytes:
        """An older version's state, brought up to date by the class's `upcast_vN_vN+1`
        methods (as the library's mapper does); sealed values stay sealed. A state of the
        current version is returned as it is, read no further than its version."""
        if _STORED_VERSION.decode(state).class_version >= class_version:
            return state
        raw = msgspec.msgpack.decode(state)
        from_version = raw.pop("class_version", 1)
        while from_version < class_version:
            getattr(event_class, f"upcast_v{from_version}_v{from_version + 1}")(raw)
            from_version += 1
        return self.encode(raw)

    def _build(self, event_class: type, plan: _Plan, shape: Any, stored_event: StoredEvent) -> Any:
        originator_id = stored_event.originator_id
        if not isinstance(originator_id, UUID):
            originator_id = UUID(str(originator_id))
        version = stored_event.originator_version
        if plan.has_personal:
            binding = event_binding(originator_id, version)
            groups, assembly = plan.groups, plan.assembly
            opened = None
            if groups is not None and assembly is not None:
                opened = _open_static_groups(self.keys, groups, shape, binding)
            if opened is not None and assembly is not None:
                state = _assemble(assembly, shape, opened)
            else:
                opening = _Opening(self, originator_id, version, binding, plan, shape)
                state = opening.fields(plan.fields, shape, "")
        else:
            state = {f.name: getattr(shape, f.name) for f in plan.fields}
        state["originator_id"] = originator_id
        state["originator_version"] = version
        event: object = object.__new__(event_class)  # no __init__: its state is set whole
        object.__setattr__(event, "__dict__", state)
        return event


def _refused(
    event_class: type, originator_id: UUID, version: int, error: Exception
) -> EventNotStorable:
    return EventNotStorable(
        f"{event_class.__qualname__} v{version} of {originator_id} is refused, nothing was"
        f" written: a value does not match its annotation ({error})"
    )


def _subject_of(field: _Sealed, values: dict[str, Any], event_state: dict[str, Any]) -> Any:
    of = field.personal.of
    return values[of] if of in values else event_state[of]


def _personal_leaves(
    fields: tuple[_Field, ...], values: dict[str, Any], event_state: dict[str, Any]
) -> Iterator[tuple[Personal, Any]]:
    for field in fields:
        if isinstance(field, _Sealed):
            yield field.personal, _subject_of(field, values, event_state)
        elif isinstance(field, _Nested):
            items = values[field.name] if field.many else [values[field.name]]
            for item in items:
                item_values = {n: getattr(item, n) for n in item.__struct_fields__}
                yield from _personal_leaves(field.fields, item_values, event_state)


def _key_ids(decoded: list[tuple[StoredEvent, type, _Plan, Any]]) -> set[bytes]:
    """The ids of the keys these decoded events were sealed under: a hint, the key of each
    group's first field (where its seal is). A key not loaded is looked up when needed."""
    key_ids = {
        group.first(shape).data[:KEY_ID_SIZE]
        for _, _, plan, shape in decoded
        if plan.groups is not None
        for group in plan.groups
    }
    for _, _, plan, shape in decoded:
        if plan.groups is None and plan.has_personal:
            key_ids.update(_sealed_key_ids(plan.fields, shape))
    return key_ids


def _sealed_key_ids(fields: tuple[_Field, ...], shape: Any) -> Iterator[bytes]:
    for field in fields:
        if isinstance(field, _Sealed):
            yield bytes(getattr(shape, field.name).data[:KEY_ID_SIZE])
        elif isinstance(field, _Nested):
            value = getattr(shape, field.name)
            for item in value if field.many else [value]:
                yield from _sealed_key_ids(field.fields, item)


class _Sealing:
    """Seals the personal fields of one event field by field: events with lists of
    structs, two declared groups of one subject, and values that do not match their
    annotations (refused naming their field). Other events are sealed a group at a time
    (`SealingMapper._sealed_in_groups`), into the same bytes."""

    def __init__(
        self, mapper: SealingMapper, event_state: dict[str, Any], originator_id: UUID, version: int
    ) -> None:
        self.keys = mapper.keys
        self.encode = mapper.encode
        self.event_state = event_state
        self.tenant_id: UUID = event_state.get("tenant_id", originator_id)
        self.originator_id = originator_id
        self.version = version
        self.binding = event_binding(originator_id, version)
        # Per subject key, in first use: the key, its fields' paths and encoded values, and
        # where the group's seal goes (the dict and name of its first field).
        self.groups: dict[bytes, tuple[SubjectKey, list[str], list[bytes], dict[str, Any], str]]
        self.groups = {}
        self.subject_keys: dict[tuple[str, Any], SubjectKey] = {}  # (kind, of) → its key

    def seal(self) -> None:
        """One AES-GCM call per subject: its fields' values, bound to their paths."""
        for key, paths, plaintexts, out, name in self.groups.values():
            values = _encode_group([msgspec.Raw(p) for p in plaintexts])
            out[name] = msgspec.msgpack.Ext(
                SEALED_GROUP, _seal(key, values, self.binding + _group_aad(tuple(paths)))
            )

    def fields(
        self, fields: tuple[_Field, ...], values: dict[str, Any], prefix: str
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field in fields:
            value = values[field.name]
            path = prefix + field.name
            if isinstance(field, _Plain):
                out[field.name] = value
            elif isinstance(field, _Sealed):
                of = _subject_of(field, values, self.event_state)
                subject = (field.personal.kind, of)
                key = self.subject_keys.get(subject)
                if key is None:
                    key = self.subject_keys[subject] = self.keys.sealing_key(
                        self.tenant_id,
                        subject_name(field.personal.kind, of),
                        new_subject=self.version == 1 and of == self.originator_id,
                        new_tenant=self.version == 1 and self.tenant_id == self.originator_id,
                    )
                plaintext = self.encode(value)
                try:
                    field.decoder.decode(plaintext)  # what is sealed must open to a value
                except msgspec.ValidationError as error:
                    raise msgspec.ValidationError(f"{error} - at `{path}`") from None
                group = self.groups.get(key.raw_id)
                if group is None:
                    out[field.name] = None  # the group's seal, once all its fields are known
                    group = self.groups[key.raw_id] = (key, [], [], out, field.name)
                else:
                    out[field.name] = msgspec.msgpack.Ext(SEALED_WITH, key.raw_id)
                group[1].append(path)
                group[2].append(plaintext)
            elif field.many:
                out[field.name] = [
                    self._struct(field, item, f"{path}[{i}]") for i, item in enumerate(value)
                ]
            else:
                out[field.name] = self._struct(field, value, path)
        return out

    def _struct(self, field: _Nested, item: msgspec.Struct, path: str) -> dict[str, Any]:
        item_values = {n: getattr(item, n) for n in item.__struct_fields__}
        return self.fields(field.fields, item_values, path + ".")


class _Opening:
    """Opens the personal fields of one event; a destroyed key reads as ERASED."""

    def __init__(
        self,
        mapper: SealingMapper,
        originator_id: UUID,
        version: int,
        binding: bytes,
        plan: _Plan,
        shape: Any,
    ) -> None:
        self.mapper = mapper
        self.keys = mapper.keys
        self.originator_id = originator_id
        self.version = version
        self.binding = binding  # `event_binding`
        self.plan = plan
        self.shape = shape
        self.grouped: dict[str, Any] | None = None  # path → value, once the groups are open

    def fields(self, fields: tuple[_Field, ...], shape: Any, prefix: str) -> dict[str, Any]:
        """Field by field: events stored in the older format, events with lists of
        structs, and events whose groups are not those of their declarations."""
        state: dict[str, Any] = {}
        for field in fields:
            value = getattr(shape, field.name)
            if isinstance(field, _Plain):
                state[field.name] = value
                continue
            path = prefix + field.name
            if isinstance(field, _Sealed):
                if value.code == SEALED:
                    state[field.name] = self._open(field.decoder, value.data, path)
                else:
                    if self.grouped is None:
                        self.grouped = self._open_any_groups()
                    state[field.name] = self.grouped[path]
            elif field.many:
                state[field.name] = [
                    self._struct(field, item, f"{path}[{i}]") for i, item in enumerate(value)
                ]
            else:
                state[field.name] = self._struct(field, value, path)
        return state

    def _struct(self, field: _Nested, shape: Any, path: str) -> msgspec.Struct:
        # Struct.__init__ does not validate, so an erased field can hold ERASED.
        return field.struct(**self.fields(field.fields, shape, path + "."))

    def _open_any_groups(self) -> dict[str, Any]:
        """Every grouped field's value: one AES-GCM call per subject of the event."""
        # key id → the group's seal, its fields' paths and their types, in field order
        groups: dict[bytes, tuple[bytes, list[str], list[Any]]] = {}
        shape = self.shape
        leaves: Iterable[tuple[str, _Sealed, Any]]
        if self.plan.leaves is None:
            leaves = _sealed_leaves(self.plan.fields, shape, "")
        else:
            leaves = [(path, field, _attr(shape, names)) for path, field, names in self.plan.leaves]
        for path, field, value in leaves:
            code = value.code
            if code == SEALED:
                continue
            data = value.data
            if code == SEALED_GROUP:
                key_id = data[:KEY_ID_SIZE]
                if key_id in groups:
                    raise self._broken(path)  # two seals of one subject
                groups[key_id] = (data, [path], [field.decoder.type])
            elif code == SEALED_WITH and data in groups:
                group = groups[data]
                group[1].append(path)
                group[2].append(field.decoder.type)
            else:
                raise self._broken(path)  # a group's first field must hold its seal
        values: dict[str, Any] = {}
        for envelope, paths, value_types in groups.values():
            opened = _open_group(
                self.keys.opening_key(bytes(envelope[:KEY_ID_SIZE])),
                envelope,
                len(paths),
                self.binding + _group_aad(tuple(paths)),
                self.mapper.group_decoder(tuple(value_types)),
            )
            if opened is None:
                raise self._broken(*paths)
            values.update(zip(paths, opened, strict=True))
        return values

    def _broken(self, *paths: str) -> SealBroken:
        together = f" (sealed with {', '.join(paths[1:])})" if len(paths) > 1 else ""
        return SealBroken(
            f"sealed field {paths[0]}{together} of {self.originator_id} v{self.version}"
            " does not open: tampered with or moved from another event"
        )

    def _open(self, decoder: msgspec.msgpack.Decoder[Any], envelope: bytes, path: str) -> Any:
        """A field sealed on its own (the older format)."""
        key = self.keys.opening_key(bytes(envelope[:KEY_ID_SIZE]))
        if key is None:
            return ERASED
        plaintext = _decrypted(key, envelope, self.binding + path.encode())
        if plaintext is None:
            raise self._broken(path)
        return decoder.decode(plaintext)


def _open_static_groups(
    keys: KeyRing, groups: tuple[_StaticGroup, ...], shape: Any, binding: bytes
) -> list[tuple[Any, ...]] | None:
    """Each group's values when an event's groups are those of its declarations, else
    None (and `_Opening` works them out, or finds them broken). `binding`: the event's."""
    opened = []
    for group in groups:
        first = group.first(shape)
        if first.code != SEALED_GROUP:
            return None
        envelope = first.data
        key_id = envelope[:KEY_ID_SIZE]
        for other in group.others:
            value = other(shape)
            if value.code != SEALED_WITH or value.data != key_id:
                return None
        values = _open_group(
            keys.opening_key(key_id), envelope, len(group.paths), binding + group.aad, group.decoder
        )
        if values is None:
            return None
        opened.append(values)
    return opened


def _open_group(
    key: SubjectKey | None,
    envelope: bytes,
    size: int,
    aad: bytes,
    decoder: msgspec.msgpack.Decoder[Any],
) -> tuple[Any, ...] | None:
    """A group's values, in field order (each ERASED if its key, the one its envelope
    names, is gone); None if it does not open, or holds another number of values than the
    group has fields. `aad`: the event's binding, then the group's paths'."""
    if key is None:
        return (ERASED,) * size
    try:  # `_decrypted`, written out: a replay opens a group or two an event
        plaintext = key.aead.decrypt(
            envelope[KEY_ID_SIZE : KEY_ID_SIZE + NONCE_SIZE],
            envelope[KEY_ID_SIZE + NONCE_SIZE :],
            aad,
        )
    except InvalidTag:
        return None
    try:
        values: tuple[Any, ...] = decoder.decode(plaintext)
    except msgspec.ValidationError:
        if len(_decode_group(plaintext)) != size:
            return None  # sealed with other fields than these
        raise  # a value that does not match its field's type
    return values if len(values) == size else None


def _decrypted(key: SubjectKey, envelope: bytes, aad: bytes) -> bytes | None:
    """The plaintext of key id | nonce | ciphertext+tag, or None if it does not open."""
    try:
        return key.aead.decrypt(
            envelope[KEY_ID_SIZE : KEY_ID_SIZE + NONCE_SIZE],
            envelope[KEY_ID_SIZE + NONCE_SIZE :],
            aad,
        )
    except InvalidTag:
        return None


def _sealed_leaves(
    fields: tuple[_Field, ...], shape: Any, prefix: str
) -> Iterator[tuple[str, _Sealed, Any]]:
    """Each sealed field's path, plan and stored value, in field order (the order in which
    `_Sealing.fields` met them)."""
    for field in fields:
        path = prefix + field.name
        if isinstance(field, _Sealed):
            yield path, field, getattr(shape, field.name)
        elif isinstance(field, _Nested):
            value = getattr(shape, field.name)
            if field.many:
                for i, item in enumerate(value):
                    yield from _sealed_leaves(field.fields, item, f"{path}[{i}].")
            else:
                yield from _sealed_leaves(field.fields, value, path + ".")


def _erased_in(value: Any) -> int:
    """How many values, in nested structs and lists too, read as erased."""
    if isinstance(value, Erased):
        return 1
    if isinstance(value, msgspec.Struct):
        return sum(_erased_in(getattr(value, name)) for name in value.__struct_fields__)
    if isinstance(value, list | tuple):
        return sum(_erased_in(item) for item in value)
    return 0


def _attr(value: Any, names: tuple[str, ...]) -> Any:
    if len(names) == 1:
        return getattr(value, names[0])
    for name in names:
        value = getattr(value, name)
    return value


@functools.lru_cache(maxsize=1024)
def _group_aad(paths: tuple[str, ...]) -> bytes:
    """The associated data naming a group's fields, after the event's binding. It starts
    with a zero byte, which no path does: it cannot equal a single field's (`SEALED`)."""
    return b"\0group\0" + "\0".join(paths).encode()


_encode_group = msgspec.msgpack.Encoder().encode
_decode_group = msgspec.msgpack.Decoder(list[msgspec.Raw]).decode


def _seal(key: SubjectKey, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_SIZE)
    return key.raw_id + nonce + key.aead.encrypt(nonce, plaintext, aad)


# View columns: the views hold personal values sealed under the same subject keys as the
# events, so destroying a key erases the views too (no row is updated). A view value is
# sealed deterministically (AES-SIV, RFC 5297) under a key derived from the subject key,
# bound to its table, column and row: a view rebuilt from the log holds the very same
# bytes as the live one (the audit replay compares them), and a value cannot be moved to
# another row. A blind index (CipherSweet's design) is an HMAC of a value's normalised form
# under a second key derived from the subject key: look-ups by value without plaintext,
# and shredded with the subject.

_DERIVING_NONCE = b"picasse-view"  # 12 bytes; random nonces of sealed fields never repeat it
_VIEW_KEY_SIZE = 64  # AES-SIV-256
_INDEX_KEY_SIZE = 32
BLIND_INDEX_SIZE = 16


class ViewKeys(Protocol):
    """What a view needs of the key store: existing keys only, never new ones."""

    def subject_key(self, tenant_id: UUID, subject: str) -> SubjectKey | None:
        """The subject's live key, or None (never made, or destroyed)."""
        ...

    def opening_key(self, key_id: bytes) -> SubjectKey | None: ...

    def live_subjects(self, tenant_id: UUID, prefix: str) -> list[str]:
        """The names of the tenant's live subject keys that start with `prefix`."""
        ...

    def was_destroyed(self, key_id: bytes) -> bool:
        """Whether a key with this 16-byte id existed and was destroyed (an audit tells an
        erased value from bytes no key of ours ever sealed)."""
        ...


@dataclasses.dataclass(frozen=True)
class _Derived:
    siv: AESSIV = dataclasses.field(repr=False)
    index: bytes = dataclasses.field(repr=False)


def _derive(key: SubjectKey) -> _Derived:
    """The view and blind-index keys of a subject key: AES-GCM with a fixed nonce over
    zeros is the AES keystream under the subject key, a pseudo-random function of it."""
    found = key.view_keys
    if found is None:
        stream = key.aead.encrypt(
            _DERIVING_NONCE, bytes(_VIEW_KEY_SIZE + _INDEX_KEY_SIZE), b"picasse view keys"
        )
        found = _Derived(AESSIV(stream[:_VIEW_KEY_SIZE]), stream[_VIEW_KEY_SIZE:-16])
        # Kept on the key, made once: threads that race here make the same keys.
        msgspec.structs.force_setattr(key, "view_keys", found)
    return found


def seal_view_value(key: SubjectKey, text: str, binding: bytes) -> bytes:
    """key id (16 bytes) | AES-SIV(text), deterministic for one key, binding and text."""
    return key.raw_id + _derive(key).siv.encrypt(text.encode(), [binding])


def open_view_value(keys: ViewKeys, envelope: bytes, binding: bytes) -> str | None:
    """The value, or None once its key is destroyed (it reads as erased)."""
    if len(envelope) <= KEY_ID_SIZE:
        raise SealBroken("a view value is not sealed: tampered with")
    key = keys.opening_key(bytes(envelope[:KEY_ID_SIZE]))
    if key is None:
        return None
    try:
        return _derive(key).siv.decrypt(bytes(envelope[KEY_ID_SIZE:]), [binding]).decode()
    except InvalidTag:
        raise SealBroken(
            "a sealed view value does not open: tampered with or moved from another row"
        ) from None


def blind_index(key: SubjectKey, form: str) -> bytes:
    """key id (16 bytes) | HMAC-SHA256 of a value's normalised form under the subject's
    index key, truncated. The key id lets an index whose key is gone read as erased too."""
    digest = hmac.new(_derive(key).index, form.encode(), hashlib.sha256).digest()
    return key.raw_id + digest[:BLIND_INDEX_SIZE]
