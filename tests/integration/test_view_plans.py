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
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from eventsourcing.postgres import PostgresDatastore
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from picasse.adapters.postgres.store import factory_of
from picasse.adapters.postgres.views import (
    PostgresAccountsView,
    PostgresInvoicesView,
    PostgresLedgerView,
    PostgresTrafficView,
)
from picasse.domain.accounts import Accounts
from picasse.projections.traffic import MessageQuery
from tests.integration.plans import plan_nodes

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
    for node in plan_nodes(plan):
        kind, relation = node.get("Node Type"), node.get("Relation Name") or node.get("Index Name")
        if kind == "Seq Scan" and not str(relation).endswith(WHOLE_TABLE_READS):
            found.append(f"Seq Scan on {relation}")
        if kind in SCANS and "Index Cond" not in node and not whole_table_ok:
            found.append(f"{kind} on {relation} without an index condition")
        if kind in ("Sort", "Incremental Sort"):
            found.append(f"Sort by {node.get('Sort Key')}")
    return found


def test_every_page_and_route_query_uses_an_index_under_a_generic_plan(
    datastore: PostgresDatastore, accounts: Accounts
) -> None:
    keys = factory_of(accounts).keys
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


def _scans_of(plan: Any, table: str) -> list[dict[str, Any]]:
    """The plan's nodes that read `table` (by its name's end)."""
    return [n for n in plan_nodes(plan) if str(n.get("Relation Name", "")).endswith(table)]


def test_a_customer_with_most_of_the_traffic_but_none_of_the_newest_has_its_page_read_from_its_own_rows(
    datastore: PostgresDatastore, accounts: Accounts
) -> None:
    """Issue 18's miss: a customer with half of all deliveries, all older than the other
    customers' (as in `python -m bench --only views`). The planner priced walking every
    customer's (queued_at, id) index newest first, filtering by customer, like reading
    the customer's own slice, and that walk passed every newer row of the others first
    (a million at full scale: 0.95 s a page). Read with EXPLAIN ANALYZE, the page's
    scan of the deliveries drops no row: it reads the customer's index only."""
    traffic_view = PostgresTrafficView(
        datastore, tracking_table_name="traffic_view_tracking", keys=factory_of(accounts).keys,
    )  # fmt: skip
    traffic_view.create_table()
    big = uuid4()
    deliveries, messages = traffic_view.t["deliveries"], traffic_view.t["messages"]
    with datastore.transaction(commit=True) as curs:
        # 20,000 deliveries of the big customer in 200 messages, then 20,000 of 2,000
        # other customers (one message of 10 each), queued a second apart, newest last.
        curs.execute(
            sql.SQL(
                "INSERT INTO {} (id, customer_id, channel, priority, month, requested_at)"
                " SELECT md5('m' || g)::uuid,"
                " CASE WHEN g < 200 THEN %(big)s ELSE md5('c' || g)::uuid END,"
                " 'sms', 'normal', '2026-05', %(at)s + g * interval '100 seconds'"
                " FROM generate_series(0, 2199) g"
            ).format(messages),
            {"big": big, "at": AT},
        )
        curs.execute(
            sql.SQL(
                "INSERT INTO {} (id, message_id, customer_id, idx, channel, month, status,"
                " queued_at, updated_at)"
                " SELECT md5('d' || g)::uuid, m.id, m.customer_id, g %% 100, 'sms', '2026-05',"
                " 'delivered', %(at)s + g * interval '1 second', %(at)s"
                " FROM generate_series(0, 39999) g"
                " JOIN {} m ON m.id = md5('m' || (CASE WHEN g < 20000 THEN g / 100"
                " ELSE 200 + (g - 20000) / 10 END))::uuid"
            ).format(deliveries, messages),
            {"at": AT},
        )
        curs.execute(sql.SQL("ANALYZE {}").format(deliveries))
        curs.execute(sql.SQL("ANALYZE {}").format(messages))
    start, end = AT, AT + timedelta(days=1)
    with datastore.get_connection() as conn:
        conn.prepare_threshold = 0  # prepared at its first run, so it can be explained
        conn.execute("SET plan_cache_mode = force_custom_plan")  # planned for the big one
    rows = traffic_view.traffic(big, start, end, limit=201)
    assert len(rows) == 201 and {r.customer_id for r in rows} == {big}
    with datastore.get_connection() as conn:
        found = conn.execute(
            "SELECT name, statement FROM pg_prepared_statements"
            " WHERE NOT from_sql AND statement LIKE %s",
            ("%ORDER BY%",),
        ).fetchall()
        assert len(found) == 1, found
        # Its parameters in the order the statement names them: the window, whose, how many.
        explain = sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE {}({})").format(
            sql.Identifier(found[0]["name"]),
            sql.SQL(", ").join(sql.Literal(v) for v in (start, end, [big], 201)),
        )
        plan = conn.execute(explain).fetchone()["QUERY PLAN"]  # type: ignore[index]
    scans = _scans_of(plan, "traffic_view_deliveries")
    assert [s.get("Index Name") for s in scans] == ["traffic_view_customer_queued_idx"], plan
    assert all(s.get("Rows Removed by Filter", 0) == 0 for s in scans), plan
    assert _faults(plan, whole_table_ok=False) == [], plan
