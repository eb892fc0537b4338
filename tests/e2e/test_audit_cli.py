"""`picasse audit replay` as a process: exit 0 on a consistent log, 1 with a one-line reason
after a live view was tampered with, 3 when there are no views to compare with."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from tests.e2e.conftest import Run, cli_runner

CUSTOMER = [
    "customers", "register", "--org", "Replay BV", "--contact-name", "Rita Replay",
    "--email", "rita@replay.example", "--phone", "+31 6 1234 9876", "--billing-address", "Kade 3, Urk",
]  # fmt: skip
PLAINTEXT = ("Replay BV", "Rita", "rita@replay.example", "+31612349876", "Kade", "+3161234", "Bye")


_runner = cli_runner


class Platform:
    def __init__(self, run: Run, database_url: str, schema: str, customers: list[str]) -> None:
        self.run = run
        self.database_url = database_url
        self.schema = schema
        self.customers = customers  # the first terminated and erased, the second readable

    def sql(self, statement: str, *params: object) -> list[tuple[object, ...]]:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
            curs = conn.execute(statement, params)
            return curs.fetchall() if curs.description else []


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Platform]:
    """A customer who sent a message and was then terminated (its keys destroyed), another
    whose data is readable, and the views built by `picasse project --once`; shared by the
    module's tests."""
    schema = f"e2e_{uuid.uuid4().hex[:12]}"
    data = tmp_path_factory.mktemp("audit-cli")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PICASSE_")}
    env |= {
        "PICASSE_DATA_DIR": str(data / "data"),
        "PICASSE_DATABASE_URL": database_url,
        "PICASSE_DATABASE_SCHEMA": schema,
        "COLUMNS": "200",
    }
    run = _runner(env)
    erased = run(*CUSTOMER, check=True).stdout.strip()
    run("customers", "subscribe", erased, check=True)
    run("messages", "send", "--customer", erased, "--channel", "sms", "--to", "+31612340001",
        "--to", "+31612341001", "--body", "Bye", check=True)  # fmt: skip
    run("customers", "terminate", erased, "--out", str(data / "out"), "--no-export", check=True)
    active = run(*CUSTOMER, check=True).stdout.strip()
    run("project", "--once", check=True)
    yield Platform(run, database_url, schema, [erased, active])
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def test_replay_of_a_consistent_log_exits_0_with_a_summary(platform: Platform) -> None:
    result = platform.run("audit", "replay")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "ok: the live views equal a replay of the log"
    # With the counts the views keep: subscription states (registered, active, terminated)
    # and the deliveries' one day, channel and status.
    assert (
        "accounts: rows compared: customers 2, users 0, api_keys 0, customer_counts 3,"
        " user_counts 0; mismatches: 0" in result.stdout
    )
    assert (
        "traffic: rows compared: messages 1, deliveries 2, daily 1, daily_all 1; mismatches: 0"
        in result.stdout
    )
    assert result.stderr == ""
    assert [value for value in PLAINTEXT if value in result.stdout] == []


def test_replay_as_json_counts_the_erased_customer(platform: Platform) -> None:
    result = platform.run("audit", "replay", "--customer", platform.customers[0], "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and report["mismatch_count"] == 0
    rows = {(t["view"], t["table"]): t["rows"] for t in report["tables"]}
    assert rows[("accounts", "customers")] == 1 and rows[("traffic", "deliveries")] == 2
    # 5 customer fields and 2 recipients hold nothing any more, in the views as in the replay.
    assert report["erased_columns"] == 5 + 2 and report["erased_values"] >= 5 + 2


def test_replay_after_tampering_exits_1_with_one_line_naming_view_row_and_column(
    platform: Platform,
) -> None:
    erased = platform.customers[0]
    (delivery,) = platform.sql(
        "SELECT id FROM traffic_view_deliveries WHERE customer_id = %s ORDER BY idx LIMIT 1",
        erased,
    )[0]
    platform.sql(
        "UPDATE traffic_view_deliveries SET recipient = '+31699990000' WHERE id = %s", delivery
    )
    try:
        result = platform.run("audit", "replay")
    finally:
        platform.sql("UPDATE traffic_view_deliveries SET recipient = NULL WHERE id = %s", delivery)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line == (
        "picasse: 1 mismatch between the live views and a replay of the log"
        f" (first: traffic deliveries row {delivery}, column recipient)"
    )
    (row,) = [line for line in result.stdout.splitlines() if str(delivery) in line]
    assert row.replace("│", " ").split() == ["traffic", "deliveries", str(delivery), "recipient", "set", "erased"]  # fmt: skip
    assert "+31699990000" not in result.stdout + result.stderr


def test_replay_of_an_unknown_customer_is_refused(platform: Platform) -> None:
    unknown = str(uuid.uuid4())
    result = platform.run("audit", "replay", "--customer", unknown)
    assert result.returncode == 1
    assert (
        result.stderr
        == f"picasse: customer {unknown}: no rows in the live views or the replay to compare\n"
    )


def test_replay_before_the_views_were_built_exits_3(picasse: Run) -> None:
    picasse(*CUSTOMER, check=True)
    result = picasse("audit", "replay")
    assert result.returncode == 3
    (line,) = result.stderr.strip().splitlines()
    assert "live accounts view has not been built" in line and "picasse project" in line


def test_replay_refuses_a_period_that_ends_before_it_starts(picasse: Run) -> None:
    result = picasse("audit", "replay", "--from", "2026-02-01", "--to", "2026-01-31")
    assert result.returncode == 1 and "'to' lies before 'from'" in result.stderr


def test_replay_help_explains_the_filters_and_exit_codes(platform: Platform) -> None:
    text = platform.run("audit", "replay", "--help", check=True).stdout
    for option in ("--customer", "--from", "--to", "--json", "1 on any mismatch", "3 when"):
        assert option in text
