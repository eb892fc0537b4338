"""schemathesis against the real `picasse api` process: whatever the OpenAPI document allows
a logged-in program to send, the server answers without a server error (5xx)."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from picasse.domain.api_keys import Scope
from picasse.domain.values import Role
from picasse.runners.settings import Settings
from picasse.runners.wiring import ensure_master_key, open_accounts
from tests.ports import free_port
from tests.users import add_customer_user

PASSWORD = "correct horse battery staple"
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


@pytest.fixture
def api_env(cli_env: dict[str, str]) -> dict[str, str]:
    """A customer with an admin on the test's schema; the environment to serve it with."""
    env = cli_env | {"PICASSE_HTTP_HOST": "127.0.0.1", "PICASSE_HTTP_PORT": str(free_port())}
    settings = Settings.from_environ(env)
    ensure_master_key(settings)
    assert settings.database_url is not None
    accounts = open_accounts(settings, settings.database_url)
    try:
        customer_id = accounts.register_customer(
            organisation="Fuzz BV", contact_name="Fay Fuzz", email="fay@fuzz.example",
            phone="+31612345670", billing_address="Fuzzweg 1, Delft",
        )  # fmt: skip
        accounts.start_subscription(customer_id)
        add_customer_user(
            accounts,
            customer_id=customer_id,
            login="fuzz-admin",
            role=Role.CUSTOMER_ADMIN,
            password=PASSWORD,
        )
    finally:
        accounts.close()
    return env


@pytest.fixture
def api_url(api_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """`picasse api` as a process; its base URL once it listens."""
    errors = tmp_path / "api.stderr"
    with errors.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "picasse.runners.cli", "api"],
            env=api_env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        try:
            assert process.stdout is not None
            ready, _, _ = select.select([process.stdout], [], [], 60)
            line = process.stdout.readline() if ready else ""
            assert line.startswith("api listening on "), errors.read_text()
            yield line.removeprefix("api listening on ").strip()
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
    # A 5xx is logged as "unhandled …" with its type: none may have happened.
    assert "unhandled" not in errors.read_text(), errors.read_text()


@pytest.mark.slow
@pytest.mark.timeout(600)  # a safety limit: every route of the API, on a busy machine
def test_no_request_the_openapi_document_allows_gets_a_server_error(
    api_url: str, tmp_path: Path
) -> None:
    with httpx.Client(base_url=api_url, timeout=20) as browser:
        logged_in = browser.post("/v1/sessions", json={"login": "fuzz-admin", "password": PASSWORD})
        assert logged_in.status_code == 201, logged_in.text
        every_scope = [scope.value for scope in Scope]
        made = browser.post("/v1/api-keys", json={"name": "fuzz", "scopes": every_scope})
        key = made.json()["key"]
        # The API builds its OpenAPI document on the first request for it; schemathesis
        # waits 10 s for it at most, which a busy machine can exceed: built here first.
        document = browser.get("/schema/openapi.json", timeout=120)
        assert document.status_code == 200, document.text

    options = {
        "--header": f"Authorization: Bearer {key}",
        "--checks": "not_a_server_error",
        "--max-examples": "6",  # per operation and phase; the coverage phase adds its own
        # Each operation on its own: the stateful phase's chains of calls would run long
        # (the API's rules across calls have tests of their own).
        "--phases": "examples,coverage,fuzzing",
        "--workers": "1",  # its generator is not safe across threads
        "--seed": "20261130",  # the same cases each run; change it to explore
        "--generation-database": "none",
        "--request-timeout": "20",
    }
    run = subprocess.run(
        [str(SCHEMATHESIS), "run", f"{api_url}/schema/openapi.json", "--no-color"]
        + [part for option in options.items() for part in option],
        capture_output=True,
        text=True,
        timeout=540,
        cwd=tmp_path,  # it may leave files behind: not in the work tree
        env={k: v for k, v in os.environ.items() if not k.startswith("PICASSE_")},
    )

    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert re.search(r"\d+ generated, \d+ passed", run.stdout), run.stdout[-3000:]
