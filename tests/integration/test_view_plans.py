"""The views' queries keep their indexes under the plans PostgreSQL caches.

After five runs of a prepared statement PostgreSQL may switch to a generic plan, made
without the parameters' values; a statement written `($1 IS NULL OR customer_id = $1)`
then scans the whole table for every customer. Each query the pages and routes run is
prepared here on one connection under `plan_cache_mode = force_generic_plan`, with
sequential scans, sorts and bitmap scans priced out (a plan keeps one only when no index
can serve it), and its generic plan is read with EXPLAIN EXECUTE: every scan of a view
table must have an index condition and no sort may remain (the index gives the order). A plan is not a timing:
this holds on any machine, with empty tables too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any
from uuid import uuid4

import pytest
from eventsourcing.postgres import PostgresDatastore
from psycopg.conninfo import conninfo_to_dict

from picasse.adapters.postgres.views import (
    PostgresAccountsView,
    PostgresInvoicesView,
    PostgresLedgerView,
    PostgresTrafficView,
)
from picasse.domain.accounts import Accounts
from picasse.projections.traffic import MessageQuery

AT = datetime(2026, 5, 1, tzinfo=UTC)
# Reads of a handful of rows whatever the size: the counts per subscription state.
WHOLE_TABLE_READS = ("customer_counts",)


@pytest.fixture
def datastore(database_url: str, schema: str) -> Iterator[PostgresDatastore]:
    """One connection (pool of one), so the statements prepared are all on it."""
    info = conninfo_to_dict(database_url)
    store = PostgresDatastore(
        dbname=str(info.get("dbname", "postgres")),
        host=str(info.get("host", "127.0.0.1")),
        port=str(info.get("port", 5432)),
        user=str(info.get("user", "postgres")),
        password=str(info.get("password", "")),
        schema=schema,
        pool_size=1,
        max_overflow=0,
    )
    yield store
    store.close()


def _generic_plans(datastore: PostgresDatastore) -> dict[str, Any]:
    """Each statement prepared on the connection, and its generic plan."""
    with datastore.get_connection() as conn:
        prepared = conn.execute(
            "SELECT name, statement, cardinality(parameter_types) AS n"
            " FROM pg_prepared_statements WHERE NOT from_sql"
        ).fetchall()
        plans = {}
        for row in prepared:
            nulls = ", ".join(["NULL"] * row["n"])
            explain = f"EXPLAIN (FORMAT JSON) EXECUTE {row['name']}" + (
                f"({nulls})" if nulls else ""
            )
            plans[row["statement"]] = conn.execute(explain).fetchone()["QUERY PLAN"]  # type: ignore[index]
    return plans


SCANS = ("Index Scan", "Index Only Scan", "Bitmap Index Scan")


def _faults(plan: Any, whole_table_ok: bool) -> list[str]:
    """What in a plan reads more than its rows: a sequential scan, an index scanned from
    end to end with a filter (what `$1 IS NULL OR …` comes to), a sort (no index in the
    order asked for). `whole_table_ok`: a statement with no condition (a first page of
    everything) may walk an index in its order."""
    found = []
    if isinstance(plan, dict):
        node, relation = plan.get("Node Type"), plan.get("Relation Name") or plan.get("Index Name")
        if node == "Seq Scan" and not str(relation).endswith(WHOLE_TABLE_READS):
            found.append(f"Seq Scan on {relation}")
        if node in SCANS and "Index Cond" not in plan and not whole_table_ok:
            found.append(f"{node} on {relation} without an index condition")
        if node in ("Sort", "Incremental Sort"):
            found.append(f"Sort by {plan.get('Sort Key')}")
        for value in plan.values():
            found += _faults(value, whole_table_ok)
    elif isinstance(plan, list):
        for value in plan:
            found += _faults(value, whole_table_ok)
    return found


def test_every_page_and_route_query_uses_an_index_under_a_generic_plan(
    datastore: PostgresDatastore, accounts: Accounts
) -> None:
    keys = accounts.factory.keys  # type: ignore[attr-defined]
    accounts_view = PostgresAccountsView(
        datastore, tracking_table_name="accounts_view_tracking", keys=keys
    )
    traffic_view = PostgresTrafficView(
        datastore, tracking_table_name="traffic_view_tracking", keys=keys
    )
    ledger_view = PostgresLedgerView(datastore, tracking_table_name="ledger_view_tracking")
    invoices_view = PostgresInvoicesView(datastore, tracking_table_name="invoices_view_tracking")
    for view in (accounts_view, traffic_view, ledger_view, invoices_view):
        view.create_table()
    with datastore.get_connection() as conn:
        conn.prepare_threshold = 0  # every statement prepared at its first run
        conn.execute("SET plan_cache_mode = force_generic_plan")
        # Priced out, so a plan keeps one only where no index serves: whole-table reads,
        # sorts, and bitmaps (which lose the index's order).
        for kind in ("seqscan", "sort", "bitmapscan"):
            conn.execute(f"SET enable_{kind} = off")
    customer, other = uuid4(), uuid4()
    accounts_view.customer_page()
    accounts_view.customer_page(after=(AT, customer))
    accounts_view.customers(customer_id=customer)
    accounts_view.customers_by_id([customer, other])
    accounts_view.customer_counts()
    accounts_view.user_counts([customer, other])
    accounts_view.users(customer_id=customer)
    accounts_view.users(customer_id=customer, after=(AT, other), limit=201)
    accounts_view.users(platform=True)
    accounts_view.users_by_id([customer])
    accounts_view.api_keys(customer_id=customer)
    accounts_view.api_keys(customer_id=None, user_id=other)
    traffic_view.traffic(customer, AT, AT, limit=201)
    traffic_view.traffic(None, AT, AT, limit=201)
    traffic_view.traffic(customer, AT, AT, limit=201, before=(AT, other))
    traffic_view.traffic(None, AT, AT, limit=201, before=(AT, other))
    traffic_view.messages(MessageQuery(customer_id=customer))
    traffic_view.messages(
        MessageQuery(customer_id=customer, channel="sms", status="failed", since=AT, until=AT,
                     before=(AT, other))
    )  # fmt: skip
    traffic_view.message_row(other)
    traffic_view.deliveries_of(other)
    traffic_view.deliveries_of(other, after_index=3)
    traffic_view.daily_counts(customer, date(2026, 5, 1), date(2026, 5, 14))
    traffic_view.daily_counts(None, date(2026, 5, 1), date(2026, 5, 14))
    ledger_view.entries(customer_id=customer, limit=201)
    ledger_view.entries(limit=201, before=40)
    ledger_view.entries(customer_id=customer, limit=201, before=40)
    invoices_view.invoices(limit=201)
    invoices_view.invoices(after=40, limit=201)
    invoices_view.invoices(customer_id=customer, limit=201)
    invoices_view.invoices(customer_id=customer, after=40, limit=201)

    plans = _generic_plans(datastore)
    queries = [s for s in plans if s.lstrip().upper().startswith("SELECT")]
    assert len(queries) >= 29, list(plans)  # every shape above, each a statement of its own
    faults = {
        statement: found
        for statement in queries
        if (found := _faults(plans[statement], " WHERE " not in statement.upper()))
    }
    assert faults == {}, json.dumps(faults, indent=1)
