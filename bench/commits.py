"""`python -m bench.commits`: how many transactions a second PostgreSQL commits here under
a table-wide lock, the ceiling of the event log that every send and outcome shares
(docs/scaling.md). Run by hand; not part of `make bench`, which holds the goals.

Each transaction takes `LOCK TABLE … IN EXCLUSIVE MODE`, as the eventsourcing recorder does
to keep notification ids gap-free, and inserts 1 or 20 rows of 300 bytes; 1 and 8 clients,
5 s each, on the embedded PostgreSQL (or PICASSE_DATABASE_URL, in a schema of its own that
is dropped afterwards).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

from picasse.runners import servers
from picasse.runners.settings import Settings

SECONDS = 5.0
PAYLOAD = b"x" * 300


def rate(url: str, schema: str, clients: int, rows: int) -> float:
    """Transactions a second, `clients` threads each committing `rows`-row transactions."""
    table = sql.Identifier(schema, "commits_probe")
    lock = sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(table)
    insert = sql.SQL("INSERT INTO {} (body) VALUES (%s)").format(table)
    counts = [0] * clients
    until = time.monotonic() + SECONDS

    def work(number: int) -> None:
        with psycopg.connect(url) as conn:
            while time.monotonic() < until:
                with conn.transaction(), conn.cursor() as cursor:
                    cursor.execute(lock)
                    cursor.executemany(insert, [(PAYLOAD,)] * rows)
                counts[number] += 1

    threads = [threading.Thread(target=work, args=(n,)) for n in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.monotonic() - started)


def main() -> None:
    settings = Settings(data_dir=Path(tempfile.mkdtemp(prefix="bench-commits-")))
    url = Settings.from_environ().database_url or servers.postgres_url(settings)
    schema = f"commits_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(
            sql.SQL("CREATE TABLE {} (id bigserial PRIMARY KEY, body bytea NOT NULL)").format(
                sql.Identifier(schema, "commits_probe")
            )
        )
    try:
        for clients in (1, 8):
            for rows in (1, 20):
                per_second = rate(url, schema, clients, rows)
                print(
                    f"{clients} client(s), {rows:>2} row(s) a transaction:"
                    f" {per_second:>8,.0f} transactions/s = {per_second * rows:>8,.0f} rows/s",
                    flush=True,
                )
        print(f"1-minute load average at the end: {os.getloadavg()[0]:.1f}")
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        servers.stop_postgres(settings)
        shutil.rmtree(settings.data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
