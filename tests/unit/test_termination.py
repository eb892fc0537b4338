"""The termination process: its steps in order, what may be redone, one statement at the end."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import msgspec
import pytest

from picasse.adapters.crypto import MemoryKeyRing, SealingMapper
from picasse.domain.errors import Conflict
from picasse.domain.termination import (
    ExportGone,
    Step,
    StepOutOfOrder,
    Termination,
    ViewCheck,
    termination_id,
)

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def _through_keys(export: bool = True) -> Termination:
    termination = Termination(uuid4(), export, "test")
    if export:
        termination.record_export("ab" * 32)
    termination.record_subscription_terminated(NOW)
    termination.record_keys_destroyed([uuid4(), uuid4()], 6, NOW)
    return termination


def test_a_termination_takes_its_steps_in_order_and_ends_signed() -> None:
    termination = Termination(uuid4(), True, "test")
    assert termination.id == termination_id(termination.customer_id)
    assert termination.next_step is Step.EXPORT
    termination.record_export("ab" * 32)
    termination.record_subscription_terminated(NOW)
    termination.record_keys_destroyed([uuid4()], 3, NOW)
    termination.record_views_caught_up([ViewCheck("customer", 0)])
    statement = termination.draft_statement("key-1")
    termination.record_statement(statement, "signature")
    assert termination.finished and termination.statement == statement
    assert statement.export_sha256 == "ab" * 32 and not statement.views_hold_personal_data


def test_without_an_export_the_first_step_is_the_subscription() -> None:
    assert Termination(uuid4(), False, "test").next_step is Step.SUBSCRIPTION


def test_keys_are_not_destroyed_before_the_subscription_ends() -> None:
    termination = Termination(uuid4(), False, "test")
    with pytest.raises(StepOutOfOrder):
        termination.record_keys_destroyed([uuid4()], 1, NOW)


def test_an_export_may_be_written_again_until_the_keys_are_gone_and_never_after() -> None:
    termination = Termination(uuid4(), True, "test")
    termination.record_export("aa" * 32)
    termination.record_subscription_terminated(NOW)
    termination.record_export("bb" * 32)
    assert termination.export_sha256 == "bb" * 32
    termination.record_keys_destroyed([uuid4()], 1, NOW)
    with pytest.raises(ExportGone, match="cannot be made again"):
        termination.record_export("cc" * 32)


def test_a_second_statement_is_refused() -> None:
    termination = _through_keys()
    termination.record_views_caught_up([])
    statement = termination.draft_statement("key-1")
    termination.record_statement(statement, "signature")
    with pytest.raises(StepOutOfOrder):
        termination.record_statement(statement, "another")
    assert termination.draft_statement("key-2") == statement  # the stored one, unchanged


def test_a_statement_that_says_other_than_the_steps_recorded_is_refused() -> None:
    termination = _through_keys()
    termination.record_views_caught_up([])
    honest = termination.draft_statement("key-1")
    forged = msgspec.structs.replace(honest, unreadable_events=0)
    with pytest.raises(Conflict, match="does not say"):
        termination.record_statement(forged, "signature")


def test_the_stored_statement_survives_the_event_store_round_trip() -> None:
    termination = _through_keys()
    termination.record_views_caught_up([ViewCheck("traffic", 0)])
    termination.record_statement(termination.draft_statement("key-1"), "signature")
    mapper = SealingMapper(keys=MemoryKeyRing())
    replayed = None
    for event in termination.collect_events():
        stored = mapper.to_stored_event(event)
        replayed = mapper.to_domain_event(stored).mutate(replayed)
    assert isinstance(replayed, Termination)
    assert replayed.statement == termination.statement and replayed.finished
