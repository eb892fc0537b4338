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
    stops, kills, breaks or reconfigures `up` starts one of its own. One per pytest worker
    that runs such a test (xdist's `loadgroup`, which could keep them on one worker, does
    not group under pytest 9.2: it renames node ids through an attribute pytest no longer
    reads)."""
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
