"""View columns: sealed deterministically under the subject's key, bound to their row, read
as erased once the key is gone; blind indexes differ per key and go with it."""

from __future__ import annotations

import gc
from uuid import uuid4

import pytest

from picasse.adapters.crypto import (
    MemoryKeyRing,
    SealBroken,
    blind_index,
    new_subject_key,
    open_view_value,
    seal_view_value,
)
from picasse.domain.messaging import parse_recipient_query, recipient_lookup_form
from picasse.domain.personal import PERSONAL_DATA_KINDS, sealed_view_columns


def test_a_view_value_opens_is_deterministic_and_reads_as_erased_once_its_key_is_gone() -> None:
    keys = MemoryKeyRing()
    tenant = uuid4()
    key = keys.sealing_key(tenant, f"contact/{tenant}")
    sealed = seal_view_value(key, "Anna de Vries", b"row-1")
    assert b"Anna" not in sealed and sealed[:16] == key.raw_id
    assert seal_view_value(key, "Anna de Vries", b"row-1") == sealed  # a rebuild: same bytes
    assert seal_view_value(key, "Anna de Vries", b"row-2") != sealed  # bound to its row
    assert open_view_value(keys, sealed, b"row-1") == "Anna de Vries"
    with pytest.raises(SealBroken):
        open_view_value(keys, sealed, b"row-2")  # moved to another row
    keys.destroy_subject(tenant, f"contact/{tenant}")
    assert open_view_value(keys, sealed, b"row-1") is None
    assert keys.was_destroyed(key.raw_id) and not keys.was_destroyed(bytes(16))
    with pytest.raises(SealBroken):
        open_view_value(keys, b"+31612345678", b"row-1")  # text where a sealed value belongs


def test_a_blind_index_is_per_key_and_matches_the_lookup_form() -> None:
    keys = MemoryKeyRing()
    tenant = uuid4()
    may, june = (
        keys.sealing_key(tenant, "traffic/2026-05"),
        keys.sealing_key(tenant, "traffic/2026-06"),
    )
    stored = blind_index(may, recipient_lookup_form("Ann.Example@Example.NL"))
    assert stored == blind_index(may, parse_recipient_query(" ann.example@example.nl"))
    assert stored != blind_index(june, recipient_lookup_form("ann.example@example.nl"))
    assert stored[:16] == may.raw_id and b"example" not in stored
    assert parse_recipient_query("+31 6 1234 5678") == "+31612345678"
    assert keys.live_subjects(tenant, "traffic/") == ["traffic/2026-05", "traffic/2026-06"]


def test_the_sealed_columns_of_a_view_table_are_the_registrys() -> None:
    for kind in PERSONAL_DATA_KINDS.values():
        for held in kind.held_in:
            for column in held.columns:
                assert sealed_view_columns(held.table)[column] == (kind.kind, held.subject_column)


def test_a_subject_keys_view_keys_are_derived_once_and_kept_with_it_out_of_its_repr() -> None:
    tenant = uuid4()
    key, material = new_subject_key(tenant, f"contact/{tenant}")
    assert key.view_keys is None
    sealed = seal_view_value(key, "Anna de Vries", b"row-1")
    derived = key.view_keys
    assert derived is not None
    assert blind_index(key, "anna") and key.view_keys is derived  # made once, then kept
    assert seal_view_value(key, "Anna de Vries", b"row-1") == sealed
    shown = repr(key)
    assert str(key.key_id) in shown and f"contact/{tenant}" in shown
    assert material.hex() not in shown and repr(material) not in shown
    assert derived.index.hex() not in shown
    assert not gc.is_tracked(key)  # a replay keeps many: never in a cycle, so untracked
