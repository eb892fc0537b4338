"""The events' hash chain as the recorder writes it: computed at insert, in the application,
with the formula the insert trigger used before (so hashes from before stay valid)."""

from __future__ import annotations

from collections.abc import Callable
from uuid import uuid4

import psycopg
import pytest
from eventsourcing.domain import event
from eventsourcing.persistence import IntegrityError, StoredEvent

from picasse.adapters.postgres import store
from picasse.adapters.postgres.audit import verify_chains
from picasse.adapters.postgres.chain import chain_hash
from picasse.adapters.postgres.store import MissingPredecessor, factory_of, recorder_of
from picasse.domain.accounts import Accounts
from picasse.domain.aggregates import Aggregate


class Tally(Aggregate):
    """Events without personal data, so tests can write their stored form by hand."""

    @event("Started")
    def __init__(self, label: str) -> None:
        self.label = label
        self.count = 0

    @event("Counted")
    def count_one(self, note: str) -> None:
        self.count += 1


# The hash as PostgreSQL computes it, written independently of `chain.chain_hash`: each
# row's stored hash against its stored predecessor's (or 32 zero bytes for a first event).
MISMATCHES = """
SELECT count(*) FROM picasse_events e
LEFT JOIN picasse_events p
  ON p.originator_id = e.originator_id AND p.originator_version = e.originator_version - 1
WHERE e.chain_hash IS DISTINCT FROM sha256(
  CASE WHEN e.originator_version = 1 THEN decode(repeat('00', 32), 'hex') ELSE p.chain_hash END
  || uuid_send(e.originator_id) || int8send(e.originator_version)
  || int4send(octet_length(convert_to(e.topic, 'UTF8'))) || convert_to(e.topic, 'UTF8')
  || e.state)
"""

# The trigger that computed the hashes until December 2026, verbatim but for the names.
OLD_TRIGGER = """
CREATE FUNCTION picasse_events_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE previous bytea;
BEGIN
 IF NEW.originator_version > 1 THEN
  SELECT chain_hash INTO previous FROM picasse_events
   WHERE originator_id = NEW.originator_id
   AND originator_version = NEW.originator_version - 1;
  IF previous IS NULL THEN
   RAISE EXCEPTION 'event % v% has no predecessor', NEW.originator_id, NEW.originator_version;
  END IF;
 ELSE previous := '\\x0000000000000000000000000000000000000000000000000000000000000000'::bytea;
 END IF;
 NEW.chain_hash := sha256(previous || uuid_send(NEW.originator_id)
  || int8send(NEW.originator_version)
  || int4send(octet_length(convert_to(NEW.topic, 'UTF8')))
  || convert_to(NEW.topic, 'UTF8') || NEW.state);
 RETURN NEW;
END $$;
CREATE TRIGGER picasse_events_chain BEFORE INSERT ON picasse_events
 FOR EACH ROW EXECUTE FUNCTION picasse_events_chain();
"""


def _count(raw: psycopg.Connection, query: str) -> int:
    row = raw.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def _verifies(accounts: Accounts) -> bool:
    return verify_chains(factory_of(accounts).datastore, recorder_of(accounts).events_table_name).ok


def test_each_hash_is_the_formula_over_the_stored_bytes_whichever_way_its_predecessor_came(
    accounts: Accounts, raw: psycopg.Connection
) -> None:
    """First events, events after one saved with them, after one saved before, and several
    aggregates in one save, new and old together."""
    old = Tally("old")
    old.count_one("first")
    accounts.save(old)
    new = Tally("new")
    for n in range(3):
        old.count_one(f"again {n}")
        new.count_one(f"new {n}")
    other = Tally("other")
    accounts.save(old, new, other)
    old.count_one("on its own, after its stored predecessor")
    accounts.save(old)
    assert _count(raw, "SELECT count(*) FROM picasse_events") == 2 + 3 + 4 + 1 + 1
    assert _count(raw, MISMATCHES) == 0
    assert _verifies(accounts)


def test_a_store_that_never_saw_the_predecessor_reads_its_hash(
    open_store: Callable[[], Accounts], raw: psycopg.Connection
) -> None:
    """Another process wrote the aggregate's events and this one has read none of them:
    the hashes of the predecessors come from the table, one query for the save."""
    writer, other = open_store(), open_store()
    tallies = [Tally(f"by the writer {n}") for n in range(3)]
    for tally in tallies:
        tally.count_one("once")
    writer.save(*tallies)
    for tally in tallies:
        tally.count_one("twice")
    pending = [e for tally in tallies for e in tally.collect_events()]
    other.recorder.insert_events([writer.mapper.to_stored_event(e) for e in pending])
    assert _count(raw, "SELECT count(*) FROM picasse_events WHERE originator_version = 3") == 3
    assert _count(raw, MISMATCHES) == 0
    assert _verifies(other)


def test_the_latest_hash_read_or_committed_is_kept_for_the_next_save(
    open_store: Callable[[], Accounts], raw: psycopg.Connection
) -> None:
    """Loading an aggregate keeps its latest event's hash: its next save chains from the
    hash as read then (a stored event never changes), without reading it again. Shown
    by changing the stored hash in between, which a query would have read."""
    writer, reader = open_store(), open_store()
    tally = Tally("kept")
    writer.save(tally)
    (original,) = raw.execute(
        "SELECT chain_hash FROM picasse_events WHERE originator_id = %s", (tally.id,)
    ).fetchone()  # type: ignore[misc]
    loaded: Tally = reader.repository.get(tally.id)
    raw.execute(
        "UPDATE picasse_events SET chain_hash = sha256(chain_hash) WHERE originator_id = %s",
        (tally.id,),
    )
    loaded.count_one("after the load")
    (stored,) = [reader.mapper.to_stored_event(e) for e in loaded.pending_events]
    reader.save(loaded)
    (written,) = raw.execute(
        "SELECT chain_hash FROM picasse_events WHERE originator_id = %s AND originator_version = 2",
        (tally.id,),
    ).fetchone()  # type: ignore[misc]
    assert written == chain_hash(bytes(original), tally.id, 2, stored.topic, stored.state)
    # The hash it just committed is kept too: the save after needs no query either.
    raw.execute(
        "UPDATE picasse_events SET chain_hash = sha256(chain_hash)"
        " WHERE originator_id = %s AND originator_version = 2",
        (tally.id,),
    )
    loaded.count_one("again")
    (stored,) = [reader.mapper.to_stored_event(e) for e in loaded.pending_events]
    reader.save(loaded)
    (third,) = raw.execute(
        "SELECT chain_hash FROM picasse_events WHERE originator_id = %s AND originator_version = 3",
        (tally.id,),
    ).fetchone()  # type: ignore[misc]
    assert third == chain_hash(bytes(written), tally.id, 3, stored.topic, stored.state)


def test_a_recorder_keeps_a_bounded_number_of_hashes_and_chains_right_past_it(
    open_store: Callable[[], Accounts], raw: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "LATEST_HASHES_KEPT", 2)
    accounts = open_store()
    tallies = [Tally(f"one of many {n}") for n in range(3)]
    for tally in tallies:
        accounts.save(tally)
    kept = recorder_of(accounts)._latest_hashes
    assert list(kept) == [tallies[2].id]  # full at the third: forgotten, then the third kept
    for tally in tallies:
        tally.count_one("past the bound")
    accounts.save(*tallies)  # two predecessors read, one kept
    assert _count(raw, MISMATCHES) == 0
    assert _verifies(accounts)


def test_an_event_without_its_predecessor_is_refused_and_nothing_of_its_save_is_stored(
    accounts: Accounts, raw: psycopg.Connection
) -> None:
    never_saved = Tally("lost")
    never_saved.collect_events()  # its first event is dropped, never stored
    never_saved.count_one("orphan")
    with pytest.raises(MissingPredecessor, match="v2 has no predecessor"):
        accounts.save(never_saved, Tally("saved alongside"))
    assert _count(raw, "SELECT count(*) FROM picasse_events") == 0

    first = Tally("gap")
    topic, state = "tests:Tally.Counted", b"{}"
    with_a_gap = [
        StoredEvent(first.id, 1, topic, state),
        StoredEvent(first.id, 3, topic, state),  # v2 is neither here nor stored
    ]
    with pytest.raises(MissingPredecessor, match="v3 has no predecessor"):
        accounts.recorder.insert_events(with_a_gap)
    assert _count(raw, "SELECT count(*) FROM picasse_events") == 0


def test_a_row_without_a_hash_is_refused_by_the_database(
    accounts: Accounts, raw: psycopg.Connection
) -> None:
    with pytest.raises(psycopg.errors.NotNullViolation):
        raw.execute(
            "INSERT INTO picasse_events (originator_id, originator_version, topic, state)"
            " VALUES (%s, 1, 'tests:Tally.Started', '\\x00')",
            (uuid4(),),
        )


def test_a_concurrent_save_of_the_same_aggregate_still_loses_on_its_version(
    open_store: Callable[[], Accounts], raw: psycopg.Connection
) -> None:
    first, second = open_store(), open_store()
    tally = Tally("shared")
    first.save(tally)
    mine: Tally = first.repository.get(tally.id)
    theirs: Tally = second.repository.get(tally.id)
    mine.count_one("mine")
    theirs.count_one("theirs")
    first.save(mine)
    with pytest.raises(IntegrityError):
        second.save(theirs)
    assert first.repository.get(tally.id).version == 2
    assert _count(raw, MISMATCHES) == 0


def test_a_store_made_with_the_insert_trigger_upgrades_and_its_old_chains_go_on(
    open_store: Callable[[], Accounts], raw: psycopg.Connection
) -> None:
    """A table as the trigger's version left it: hashes written by the trigger, the
    column nullable. Reopened, the trigger and its function are gone, the column is NOT
    NULL, the old events verify and new ones chain onto them."""
    before = open_store()
    raw.execute("ALTER TABLE picasse_events ALTER COLUMN chain_hash DROP NOT NULL")
    raw.execute(OLD_TRIGGER)
    tally = Tally("from before")
    tally.count_one("before")
    stored = [before.mapper.to_stored_event(e) for e in tally.collect_events()]
    with raw.cursor() as curs:  # as the trigger's recorder wrote: no hash of its own
        curs.executemany(
            "INSERT INTO picasse_events (originator_id, originator_version, topic, state)"
            " VALUES (%s, %s, %s, %s)",
            [(e.originator_id, e.originator_version, e.topic, e.state) for e in stored],
        )
    assert _count(raw, "SELECT count(*) FROM picasse_events WHERE chain_hash IS NULL") == 0
    before.close()

    after = open_store()  # starting upgrades the table
    assert _count(raw, "SELECT count(*) FROM pg_trigger WHERE tgname = 'picasse_events_chain'") == 0
    assert _count(raw, "SELECT count(*) FROM pg_proc WHERE proname = 'picasse_events_chain'") == 0
    assert (
        _count(
            raw,
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'picasse_events'::regclass"
            " AND attname = 'chain_hash' AND attnotnull",
        )
        == 1
    )
    assert _verifies(after)
    reopened: Tally = after.repository.get(tally.id)
    reopened.count_one("after")
    reopened.count_one("after, twice")
    after.save(reopened, Tally("new"))
    assert after.repository.get(tally.id).count == 3
    assert _count(raw, MISMATCHES) == 0
    assert _verifies(after)
    open_store()  # a second start finds nothing left to change
    assert _verifies(after)
