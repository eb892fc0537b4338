"""End-to-end fixtures: the `picasse` command run as a process, as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.e2e.platform import RunningUp

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def shared_up(servers_root: Path) -> Iterator[RunningUp]:
    """The one `picasse up` (embedded servers) of the tests that use a running platform as
    they find it: they add customers and users of their own and leave it running. A test that
    stops, kills, breaks or reconfigures `up` starts one of its own. Its tests run on one
    worker (tests/conftest.py), so one `up` serves them all."""
    up = RunningUp(servers_root / "shared-up")
    try:
        up.wait_until_up()
        yield up
    finally:
        up.terminate()


@pytest.fixture
def cli_env(tmp_path: Path, database_url: str) -> Iterator[dict[str, str]]:
    """Environment of a user whose PICASSE_* settings point at this test's own schema."""
    schema = f"e2e_{uuid.uuid4().hex[:12]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PICASSE_")}
    env |= {
        "PICASSE_DATA_DIR": str(tmp_path / "data"),
        "PICASSE_DATABASE_URL": database_url,
        "PICASSE_DATABASE_SCHEMA": schema,
        "COLUMNS": "200",
    }
    yield env
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def cli_runner(env: dict[str, str]) -> Run:
    """Runs `picasse ARGS` as a process with this environment."""

    def run(*args: str, stdin: str = "", check: bool = False) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "picasse.runners.cli", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"picasse {' '.join(args)} failed: {result.stderr}")
        return result

    return run


@pytest.fixture
def picasse(cli_env: dict[str, str]) -> Run:
    return cli_runner(cli_env)


def register_in_process(
    env: dict[str, str], *, subscribe: bool = True, sms_to: str | None = None, **details: str
) -> str:
    """A customer on the schema of `env` (`cli_env`), made by this process through the
    same domain commands the CLI calls; optionally subscribed and sent one SMS.

    For tests whose claim is about later commands run as processes: registering,
    subscribing and sending as processes have tests of their own (test_cli.py,
    test_messages_cli.py), and each process started only for a test's setup costs the
    suite half a second of CPU (its imports) that no assertion looks at."""
    from picasse.domain.messaging import SendRequest
    from picasse.runners.settings import Settings
    from picasse.runners.wiring import ensure_master_key, open_accounts, open_messages

    settings = Settings.from_environ(env)
    assert settings.database_url is not None
    ensure_master_key(settings)
    accounts = open_accounts(settings, settings.database_url)
    try:
        customer_id = accounts.register_customer(**details)
        if subscribe:
            accounts.start_subscription(customer_id)
    finally:
        accounts.close()
    if sms_to is not None:
        messages = open_messages(settings, settings.database_url)
        try:
            messages.send(customer_id, SendRequest(channel="sms", to=[sms_to], body="Bye"))
        finally:
            messages.close()
    return str(customer_id)
