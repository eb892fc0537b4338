"""The delivery providers' health as the workers publish it, for the staff overview.

Each worker writes, every few seconds, one row per (worker, provider, channel): the
provider's state and its counts per minute (`adapters/providers/health.py`). The API
reads the fresh rows and sums them per provider. Names, states, counts and times only:
no number, no text, nothing personal.

Why a table: the workers are separate processes (and may run on several hosts), the API
already reads this database for the overview, and a row per worker that is replaced in
place needs no new server, stream or file format. Rows of workers gone quiet are left
out once stale and pruned after a while.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Annotated, Any

import msgspec
from msgspec import Meta
from psycopg import sql

from picasse.adapters.postgres.roles import serialize_schema_changes
from picasse.adapters.providers.health import MinuteCount, ProviderSnapshot

Transaction = Callable[[], AbstractContextManager[Any]]  # a context yielding a dict-row cursor

STALE_AFTER = timedelta(minutes=2)  # a worker that has not written since is left out
PRUNE_AFTER = timedelta(hours=1)
WINDOW_MINUTES = 5  # errors and throughput are over the last five minutes
_STATE_ORDER = ("bound", "reachable", "idle", "unbound", "unreachable")  # best first


class ProviderHealth(msgspec.Struct, frozen=True, kw_only=True):
    """One provider of one channel, over all workers."""

    provider: Annotated[str, Meta(description="the provider: twilio, sms-primary, smpp…")]
    channel: Annotated[str, Meta(description="sms or voice")]
    state: Annotated[
        str,
        Meta(
            description="the best any worker reports: bound, reachable, idle, unbound or"
            " unreachable"
        ),
    ]
    sent_per_minute: Annotated[float, Meta(description="taken, per minute, last 5 minutes")]
    errors: Annotated[int, Meta(description="failed or refused in the last 5 minutes")]
    workers: Annotated[int, Meta(description="workers reporting it")]


class ProviderHealthTable:
    def __init__(self, transaction: Transaction, schema: str) -> None:
        self.transaction = transaction
        self.table = sql.Identifier(schema or "public", "picasse_provider_health")

    def create_table(self) -> None:
        with self.transaction() as curs:
            serialize_schema_changes(curs)
            curs.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (worker text NOT NULL, provider text NOT NULL,"
                    " channel text NOT NULL, state text NOT NULL, minutes bytea NOT NULL,"
                    " updated_at timestamptz NOT NULL, PRIMARY KEY (worker, provider, channel))"
                ).format(self.table)
            )

    def publish(self, worker: str, snapshots: Iterable[ProviderSnapshot], now: datetime) -> None:
        """This worker's rows, replaced; and the rows of long-gone workers, dropped."""
        with self.transaction() as curs:
            curs.execute(
                sql.SQL("DELETE FROM {} WHERE worker = %s OR updated_at < %s").format(self.table),
                (worker, now - PRUNE_AFTER),
            )
            for snapshot in snapshots:
                curs.execute(
                    sql.SQL(
                        "INSERT INTO {} (worker, provider, channel, state, minutes, updated_at)"
                        " VALUES (%s, %s, %s, %s, %s, %s)"
                    ).format(self.table),
                    (
                        worker,
                        snapshot.provider,
                        snapshot.channel,
                        snapshot.state,
                        msgspec.json.encode(snapshot.minutes),
                        now,
                    ),
                )

    def read(self, now: datetime) -> list[ProviderHealth]:
        """Per provider and channel, over the workers that wrote lately."""
        with self.transaction() as curs:
            curs.execute(
                sql.SQL(
                    "SELECT provider, channel, state, minutes FROM {} WHERE updated_at >= %s"
                    " ORDER BY channel, provider"
                ).format(self.table),
                (now - STALE_AFTER,),
            )
            rows = curs.fetchall()
        since = now.replace(second=0, microsecond=0) - timedelta(minutes=WINDOW_MINUTES - 1)
        merged: dict[tuple[str, str], tuple[list[str], int, int]] = {}
        for row in rows:
            states, sent, failed = merged.get((row["provider"], row["channel"]), ([], 0, 0))
            minutes = msgspec.json.decode(row["minutes"], type=list[MinuteCount])
            recent = [m for m in minutes if m.minute >= since]
            merged[(row["provider"], row["channel"])] = (
                [*states, row["state"]],
                sent + sum(m.sent for m in recent),
                failed + sum(m.failed for m in recent),
            )
        return [
            ProviderHealth(
                provider=provider,
                channel=channel,
                state=min(states, key=_rank),
                sent_per_minute=round(sent / WINDOW_MINUTES, 1),
                errors=failed,
                workers=len(states),
            )
            for (provider, channel), (states, sent, failed) in merged.items()
        ]


def _rank(state: str) -> int:
    return _STATE_ORDER.index(state) if state in _STATE_ORDER else len(_STATE_ORDER)
