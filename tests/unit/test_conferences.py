"""Conferences in memory: PINs unique among active conferences on a number, admission by
PIN with the wrong-PIN limit, call events and minutes, host controls."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from uuid import UUID

import argon2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from picasse.adapters.clock import ManualClock
from picasse.adapters.crypto import MemoryKeyRing, SealingMapper
from picasse.adapters.passwords import Argon2Passwords
from picasse.adapters.pseudonyms import KeyedPseudonyms
from picasse.domain.access import Viewer
from picasse.domain.accounts import Accounts
from picasse.domain.conferences import WRONG_PIN_LIMIT, WRONG_PIN_PERIOD, CallRole, Control
from picasse.domain.conferencing import (
    ConferenceChange,
    Conferences,
    ParticipantIn,
    Replayed,
    ScheduleRequest,
)
from picasse.domain.errors import Conflict, Forbidden
from picasse.domain.messaging import Messages
from picasse.domain.values import Role
from tests.users import add_customer_user

RING = MemoryKeyRing()
NUMBER = "+31201234567"
START = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


class InMemoryAccounts(Accounts):
    def construct_mapper(self) -> SealingMapper:
        return SealingMapper(keys=RING)


class InMemoryMessages(Messages):
    def construct_mapper(self) -> SealingMapper:
        return SealingMapper(keys=RING)


class InMemoryConferences(Conferences):
    def construct_mapper(self) -> SealingMapper:
        return SealingMapper(keys=RING)


class Calls:
    """What the host controls asked of the provider."""

    def __init__(self) -> None:
        self.asked: list[tuple[UUID, Control, str | None]] = []

    def control(self, conference_id: UUID, action: Control, call: str | None) -> None:
        self.asked.append((conference_id, action, call))

    def delete_recording(self, reference: str) -> bool:
        return True


class World:
    def __init__(self, pins: Iterator[str] | None = None) -> None:
        env = {"PERSISTENCE_MODULE": "eventsourcing.popo"}
        self.clock = ManualClock(datetime(2026, 11, 30, 12, 0, tzinfo=UTC))
        pseudonyms = KeyedPseudonyms(b"k" * 32)
        accounts = InMemoryAccounts(
            env,
            passwords=Argon2Passwords(
                argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
            ),
            pseudonyms=pseudonyms,
            clock=self.clock,
        )
        self.customer_id = accounts.register_customer(
            organisation="Acme", contact_name="Bob", email="bob@example.com",
            phone="+31612345678", billing_address="Street 1",
        )  # fmt: skip
        accounts.start_subscription(self.customer_id)
        self.host_id = add_customer_user(
            accounts, customer_id=self.customer_id, login="host", role=Role.CUSTOMER_USER,
            password="correct horse battery staple",
        )  # fmt: skip
        self.other_id = add_customer_user(
            accounts, customer_id=self.customer_id, login="other", role=Role.CUSTOMER_USER,
            password="correct horse battery staple",
        )  # fmt: skip
        messages = InMemoryMessages(env, clock=self.clock, pseudonyms=pseudonyms)
        messages.recorder = accounts.recorder
        messages.events.recorder = accounts.recorder
        self.calls = Calls()
        kwargs = {"pins": (lambda: next(pins))} if pins is not None else {}
        self.conferences = InMemoryConferences(
            env, clock=self.clock, pseudonyms=pseudonyms, messages=messages,
            telephony=self.calls, **kwargs,  # type: ignore[arg-type]
        )  # fmt: skip
        self.conferences.recorder = accounts.recorder
        self.conferences.events.recorder = accounts.recorder
        self.conferences.add_dial_in_number(
            self.customer_id, NUMBER, Viewer(role=Role.SUPPORT, customer_id=None)
        )

    @property
    def host(self) -> Viewer:
        return Viewer(role=Role.CUSTOMER_USER, customer_id=self.customer_id, user_id=self.host_id)

    @property
    def other(self) -> Viewer:
        return Viewer(role=Role.CUSTOMER_USER, customer_id=self.customer_id, user_id=self.other_id)

    def schedule(self, start: datetime = START) -> tuple[UUID, str, str]:
        scheduled = self.conferences.schedule(
            self.customer_id,
            ScheduleRequest(
                title="Weekly",
                start=start,
                duration_minutes=30,
                participants=[ParticipantIn(phone="+31612345679")],
            ),
            self.host,
        )
        assert scheduled.participant_pin and scheduled.host_pin
        return scheduled.conference_id, scheduled.participant_pin, scheduled.host_pin


@pytest.fixture
def world() -> World:
    return World()


PIN_POOL = ["123456", "1234567", "12345678", "654321"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    draws=st.lists(st.sampled_from(PIN_POOL), min_size=60, max_size=60),
    count=st.integers(min_value=1, max_value=2),
)
def test_conferences_scheduled_at_one_moment_on_one_number_never_share_a_pin(
    draws: list[str], count: int
) -> None:
    # PINs are drawn from a pool of four, so collisions are the rule, not the exception.
    world = World(pins=iter(draws))
    pins: list[str] = []
    for _ in range(count):
        try:
            _, participant, host = world.schedule()
        except Conflict:  # no free PIN in what was drawn: refused, never shared
            break
        pins += [participant, host]
    assert len(pins) == len(set(pins))


def test_a_pin_is_free_again_on_the_number_for_a_conference_at_another_time() -> None:
    world = World(pins=iter(["123456", "654321", "123456", "654321"]))
    world.schedule(START)
    _, participant, host = world.schedule(START + timedelta(days=2))
    assert {participant, host} == {"123456", "654321"}


def test_the_right_pins_admit_host_and_participant_only_while_active(world: World) -> None:
    conference_id, participant, host = world.schedule()
    world.clock.set(START - timedelta(minutes=16))
    early = world.conferences.admit(NUMBER, "+31611111111", participant, "c0", "e0")
    assert not early.admit and early.reason == "wrong-pin"
    world.clock.set(START - timedelta(minutes=14))
    as_host = world.conferences.admit(NUMBER, "+31611111112", host, "c1", "e1")
    as_guest = world.conferences.admit(NUMBER, "+31611111113", participant, "c2", "e2")
    assert (as_host.admit, as_host.role, as_host.conference_id) == (
        True,
        CallRole.HOST,
        conference_id,
    )
    assert (as_guest.admit, as_guest.role) == (True, CallRole.PARTICIPANT)


def test_wrong_pins_are_limited_per_caller_and_number(world: World) -> None:
    _, participant, _ = world.schedule()
    world.clock.set(START)
    caller = "+31622222222"
    for attempt in range(WRONG_PIN_LIMIT):
        answer = world.conferences.admit(NUMBER, caller, "000000", f"c{attempt}", f"w{attempt}")
        assert answer.reason == "wrong-pin"
    limited = world.conferences.admit(NUMBER, caller, participant, "cx", "right")
    assert (limited.admit, limited.reason) == (False, "rate-limited")
    other = world.conferences.admit(NUMBER, "+31633333333", participant, "cy", "other")
    assert other.admit  # another caller is not limited
    world.clock.set(START + WRONG_PIN_PERIOD)
    later = world.conferences.admit(NUMBER, caller, participant, "cz", "later")
    assert later.admit


def test_a_replayed_dial_in_is_refused(world: World) -> None:
    _, participant, _ = world.schedule()
    world.clock.set(START)
    world.conferences.admit(NUMBER, "+31611111111", participant, "c1", "e1")
    with pytest.raises(Replayed):
        world.conferences.admit(NUMBER, "+31611111111", participant, "c1", "e1")


def test_joins_and_leaves_count_each_participants_minutes(world: World) -> None:
    conference_id, participant, _host = world.schedule()
    world.clock.set(START)
    c = world.conferences
    leg = c.admit(NUMBER, "+31611111111", participant, "c1", "e1").participant_id
    c.record_call_event(conference_id, "started", provider_event="s", at="t0")
    c.record_call_event(conference_id, "joined", provider_event="j1", call="c1", at="t1")
    assert not c.record_call_event(conference_id, "joined", provider_event="j1", call="c1", at="t1")
    world.clock.set(START + timedelta(minutes=10, seconds=1))
    c.record_call_event(conference_id, "left", provider_event="l1", call="c1", at="t2")
    details = c.conference(world.customer_id, conference_id, world.host)
    (only,) = details.legs
    assert (only.id, only.minutes, only.caller, only.joined_at) == (leg, 11, "+31611111111", "t1")
    c.record_call_event(conference_id, "ended", provider_event="end", at="t3")
    assert [(m.month, m.minutes) for m in c.minutes(world.customer_id)] == [("2026-12", 11)]


def test_host_controls_reach_the_provider_and_only_host_or_admins_use_them(world: World) -> None:
    conference_id, participant, _ = world.schedule()
    world.clock.set(START)
    c = world.conferences
    leg = c.admit(NUMBER, "+31611111111", participant, "call-9", "e1").participant_id
    c.record_call_event(conference_id, "joined", provider_event="j1", call="call-9", at="t1")
    with pytest.raises(Forbidden):
        c.control(world.customer_id, conference_id, Control.MUTE, world.other, leg)
    c.control(world.customer_id, conference_id, Control.MUTE, world.host, leg)
    admin = Viewer(role=Role.CUSTOMER_ADMIN, customer_id=world.customer_id, user_id=None)
    c.control(world.customer_id, conference_id, Control.LOCK, admin)
    assert world.calls.asked == [
        (conference_id, Control.MUTE, "call-9"),
        (conference_id, Control.LOCK, None),
    ]
    details = c.conference(world.customer_id, conference_id, world.host)
    assert details.locked and details.legs[0].muted
    refused = c.admit(NUMBER, "+31644444444", participant, "call-10", "e2")
    assert (refused.admit, refused.reason) == (False, "locked")


def test_a_change_keeps_the_pins_unless_another_conference_holds_one_at_the_new_time() -> None:
    world = World(pins=iter(["111111", "222222", "111111", "222222", "333333", "444444"]))
    first, _, _ = world.schedule(START)
    second, _, _ = world.schedule(START + timedelta(days=3))  # the same PINs, another time
    c = world.conferences
    c.change(world.customer_id, first, ConferenceChange(title="Renamed"), world.host)
    world.clock.set(START)
    kept = c.admit(NUMBER, "+31611111111", "111111", "c1", "e1")
    assert (kept.conference_id, kept.role) == (first, CallRole.PARTICIPANT)
    moved_to = START + timedelta(days=3, hours=1)
    c.change(world.customer_id, first, ConferenceChange(start=moved_to), world.host)
    world.clock.set(moved_to)
    theirs = c.admit(NUMBER, "+31611111112", "111111", "c2", "e2")
    drawn = c.admit(NUMBER, "+31611111113", "333333", "c3", "e3")
    assert (theirs.conference_id, drawn.conference_id) == (second, first)
    details = c.conference(world.customer_id, first, world.host)
    assert (details.title, details.start) == ("Renamed", moved_to)


def test_a_cancelled_conference_frees_its_pins_and_only_its_host_or_an_admin_cancels(
    world: World,
) -> None:
    conference_id, participant, _ = world.schedule()
    with pytest.raises(Forbidden):
        world.conferences.cancel(world.customer_id, conference_id, world.other)
    world.conferences.cancel(world.customer_id, conference_id, world.host)
    world.clock.set(START)
    refused = world.conferences.admit(NUMBER, "+31611111111", participant, "c1", "e1")
    assert (refused.admit, refused.reason) == (False, "wrong-pin")
    with pytest.raises(Conflict):
        world.conferences.cancel(world.customer_id, conference_id, world.host)
