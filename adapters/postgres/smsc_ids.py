"""Which delivery each SMSC message id belongs to: the SMPP provider's durable record.

An SMSC answers each `submit_sm` with its own message id, and names that id again in the
delivery receipt (`deliver_sm`) it sends later, on whatever session is bound then: the
same worker's, a restarted worker's, or another worker's. So the SMPP provider writes a
row per segment as the SMSC's answer is read, before the send is reported accepted:
(provider, SMSC id) → (our reference, the id of the attempt's first segment, segment
number, segment count, state). A receipt marks its segment delivered or failed; the
provider reads the attempt's rows to tell whether the delivery is settled
(`adapters/providers/smpp.py`).

Ids, numbers and states only: no phone number, no text, nothing personal. The rows of an
attempt are deleted once its receipt is recorded; those whose receipt never comes (the
SMSC forgot it, the worker gave up mid-message) are removed after KEPT_FOR by the
retention job (`runners/retention.py`), which calls `prune`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any

from psycopg import sql

from picasse.adapters.postgres.roles import serialize_schema_changes
from picasse.adapters.providers.smpp import Heard, SegmentRecord
from picasse.domain.clock import Clock
from picasse.domain.messages import FailureReason

Transaction = Callable[[], AbstractContextManager[Any]]  # a context yielding a dict-row cursor

# Longer than any SMSC keeps trying a message (validity periods are hours to a few days):
# a receipt later than this finds no row and is dropped.
KEPT_FOR = timedelta(days=7)


class SmscIdTable:
    """`picasse_smsc_ids`: one row per segment an SMSC took and whose receipt is awaited."""

    def __init__(self, transaction: Transaction, schema: str, clock: Clock) -> None:
        self.transaction = transaction
        self.clock = clock
        self.schema = schema or "public"
        self.table = sql.Identifier(self.schema, "picasse_smsc_ids")

    def create_table(self) -> None:
        with self.transaction() as curs:
            serialize_schema_changes(curs)
            curs.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (provider text NOT NULL, smsc_id text NOT NULL,"
                    " reference text NOT NULL, first_id text NOT NULL, segment integer NOT NULL,"
                    " segments integer NOT NULL, state text NOT NULL, reason text,"
                    " taken_at timestamptz NOT NULL, PRIMARY KEY (provider, smsc_id))"
                ).format(self.table)
            )
            curs.execute(
                sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (provider, first_id)").format(
                    sql.Identifier("picasse_smsc_ids_attempt"), self.table
                )
            )

    def taken(
        self,
        provider: str,
        smsc_id: str,
        *,
        reference: str,
        first_id: str,
        segment: int,
        segments: int,
    ) -> None:
        """The SMSC took one segment under `smsc_id` (an id it used before is reused)."""
        with self.transaction() as curs:
            curs.execute(
                sql.SQL(
                    "INSERT INTO {} (provider, smsc_id, reference, first_id, segment, segments,"
                    " state, taken_at) VALUES (%s, %s, %s, %s, %s, %s, 'awaited', %s)"
                    " ON CONFLICT (provider, smsc_id) DO UPDATE SET reference = EXCLUDED.reference,"
                    " first_id = EXCLUDED.first_id, segment = EXCLUDED.segment,"
                    " segments = EXCLUDED.segments, state = 'awaited', reason = NULL,"
                    " taken_at = EXCLUDED.taken_at"
                ).format(self.table),
                (provider, smsc_id, reference, first_id, segment, segments, self.clock.now()),
            )

    def heard(self, provider: str, smsc_id: str, failure: FailureReason | None) -> Heard | None:
        """Marks the segment `smsc_id` delivered (`failure` None) or failed for `failure`
        (a segment's first final receipt stands); then every segment of its attempt, as
        recorded; None when the id is not known."""
        with self.transaction() as curs:
            curs.execute(
                sql.SQL("SELECT first_id FROM {} WHERE provider = %s AND smsc_id = %s").format(
                    self.table
                ),
                (provider, smsc_id),
            )
            found = curs.fetchone()
            if found is None:
                return None
            # One receipt of an attempt at a time: of two segments' receipts heard at once,
            # only the later sees both segments final.
            curs.execute(
                sql.SQL(
                    "SELECT segment FROM {} WHERE provider = %s AND first_id = %s FOR UPDATE"
                ).format(self.table),
                (provider, found["first_id"]),
            )
            curs.execute(
                sql.SQL(
                    "UPDATE {} SET state = %s, reason = %s WHERE provider = %s"
                    " AND smsc_id = %s AND state = 'awaited'"
                ).format(self.table),
                (
                    "delivered" if failure is None else "failed",
                    None if failure is None else failure.value,
                    provider,
                    smsc_id,
                ),
            )
            news = curs.rowcount == 1
            curs.execute(
                sql.SQL(
                    "SELECT reference, first_id, segment, segments, state, reason FROM {}"
                    " WHERE provider = %s AND first_id = %s ORDER BY segment"
                ).format(self.table),
                (provider, found["first_id"]),
            )
            rows = curs.fetchall()
        return Heard(
            news=news,
            segments=[
                SegmentRecord(
                    reference=row["reference"],
                    first_id=row["first_id"],
                    segment=row["segment"],
                    segments=row["segments"],
                    state=row["state"],
                    failure=FailureReason(row["reason"]) if row["reason"] else None,
                )
                for row in rows
            ],
        )

    def unheard(self, provider: str, smsc_id: str) -> None:
        """The segment's receipt could not be recorded: it awaits the SMSC's next try."""
        with self.transaction() as curs:
            curs.execute(
                sql.SQL(
                    "UPDATE {} SET state = 'awaited', reason = NULL"
                    " WHERE provider = %s AND smsc_id = %s"
                ).format(self.table),
                (provider, smsc_id),
            )

    def ended(self, provider: str, first_id: str) -> None:
        """Forgets the attempt whose first segment the SMSC took as `first_id`."""
        with self.transaction() as curs:
            curs.execute(
                sql.SQL("DELETE FROM {} WHERE provider = %s AND first_id = %s").format(self.table),
                (provider, first_id),
            )

    def prune(self, now: datetime) -> int:
        """Removes rows taken more than KEPT_FOR before `now`; how many."""
        with self.transaction() as curs:
            curs.execute(
                sql.SQL("DELETE FROM {} WHERE taken_at < %s").format(self.table),
                (now - KEPT_FOR,),
            )
            return int(curs.rowcount)
