"""Issue 11 against `picasse up` as a process: who may log in after others failed, which
address counts, NATS credentials, and what TLS changes in links, banner and headers."""

from __future__ import annotations

import asyncio
import json
import stat
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import nats
import pytest

from picasse.adapters.clock import move_file_clock
from tests.e2e.platform import RunningUp, on_test_clock
from tests.integration.api_server import self_signed_certificate
from tests.ports import free_port

pytestmark = pytest.mark.own_servers
ADMIN_PASSWORD = "quartz-Lantern-79-ferry-Oboe"  # strong: passes any strength rule
# The trusted proxy: requests from this loopback address may say whom they forward;
# those from 127.0.0.1 (where uvicorn would have believed anyone) may not.
PROXY = "127.0.0.2"
# Longer than any slow-down before a pair's lock (1 s, then 2 s), far shorter than the lock.
PAST_A_SLOW_DOWN = timedelta(seconds=5)


@pytest.fixture(scope="module")
def up(servers_root: Path) -> Iterator[RunningUp]:
    """`picasse up` serving HTTPS behind a proxy at 127.0.0.2, with two staff users."""
    data_dir = servers_root / "transport-up"
    _, clock_env = on_test_clock(data_dir)  # the throttle's slow-downs are passed, not waited
    cert, key = self_signed_certificate(servers_root)
    running = RunningUp(
        data_dir,
        **clock_env,
        PICASSE_HTTP_PORT=str(free_port()),
        PICASSE_TLS_CERT=str(cert),
        PICASSE_TLS_KEY=str(key),
        PICASSE_TRUSTED_PROXIES=PROXY,
    )
    try:
        running.wait_until_up()
        running.cli(
            "users", "add", "--login", "admin", "--role", "platform_admin", "--password-stdin",
            stdin=ADMIN_PASSWORD + "\n",
        )  # fmt: skip
        running.cli(
            "users", "add", "--login", "support", "--role", "support", "--password-stdin",
            stdin=ADMIN_PASSWORD + "\n",
        )  # fmt: skip
        yield running
    finally:
        running.terminate()


def _clock_file(up: RunningUp) -> Path:
    return Path(up.env["PICASSE_TEST_CLOCK_FILE"])


def _api(up: RunningUp) -> str:
    return f"https://127.0.0.1:{up.env['PICASSE_HTTP_PORT']}"


def _log_in(
    up: RunningUp, password: str, address: str, *, login: str = "admin", via: str = PROXY
) -> httpx.Response:
    """POST /v1/sessions from `via` (a local address), claiming to forward for `address`."""
    transport = httpx.HTTPTransport(local_address=via, verify=False)
    with httpx.Client(transport=transport, timeout=30) as client:
        return client.post(
            f"{_api(up)}/v1/sessions",
            json={"login": login, "password": password},
            headers={"X-Forwarded-For": address},
        )


def test_five_wrong_passwords_from_five_addresses_do_not_lock_out_the_owner(up: RunningUp) -> None:
    for n in range(1, 6):
        assert _log_in(up, "not the password", f"203.0.113.{n}").status_code == 401

    owner = _log_in(up, ADMIN_PASSWORD, "198.51.100.6")

    assert owner.status_code == 201, owner.text


def test_a_forwarded_address_from_a_peer_that_is_no_trusted_proxy_is_ignored(
    up: RunningUp,
) -> None:
    # Five failures lock a pair (account, address) for 15 minutes. From the third on, the
    # pair must wait a second or two between attempts (429, nothing counted): the test
    # clock is moved past each wait, so all five count however slow the machine is.
    failures, n = 0, 0
    while failures < 5:
        n += 1  # each attempt claims another address: all are 127.0.0.1's
        refused = _log_in(up, "not the password", f"192.0.2.{n}", login="support", via="127.0.0.1")
        assert refused.status_code in (401, 429), refused.text
        if refused.status_code == 429:
            assert n < 20, "the pair stays slowed down after the clock passed its wait"
            move_file_clock(_clock_file(up), PAST_A_SLOW_DOWN)
        else:
            failures += 1
    move_file_clock(_clock_file(up), PAST_A_SLOW_DOWN)  # what refuses now is a lock

    locked = _log_in(up, ADMIN_PASSWORD, "192.0.2.99", login="support", via="127.0.0.1")
    from_the_proxy = _log_in(up, ADMIN_PASSWORD, "192.0.2.7", login="support")

    assert locked.status_code == 429, locked.text  # the pair (support, 127.0.0.1) is locked
    assert from_the_proxy.status_code == 201, from_the_proxy.text


def test_with_tls_the_banner_and_the_admin_line_say_https(up: RunningUp) -> None:
    public = _api(up)
    assert f"Public URL  {public}" in up.lines, up.lines
    assert any(line.startswith("API") and "https://127.0.0.1:" in line for line in up.lines)
    assert not any("http://" in line for line in up.lines if not line.startswith("PostgreSQL"))


def test_with_tls_responses_say_hsts_and_no_store_and_json_routes_want_json(up: RunningUp) -> None:
    with httpx.Client(base_url=_api(up), verify=False, timeout=30) as client:
        health = client.get("/health")
        form = client.post("/v1/sessions", data={"login": "admin", "password": ADMIN_PASSWORD})

    assert health.headers["strict-transport-security"].startswith("max-age=")
    assert health.headers["cache-control"] == "no-store"
    assert form.status_code == 415
    assert form.headers["cache-control"] == "no-store"


def test_the_embedded_nats_refuses_clients_without_its_credentials(up: RunningUp) -> None:
    shown = up.url_of("NATS")
    credentials = up.data_dir / "nats" / "credentials.json"
    password = json.loads(credentials.read_text())["password"]

    async def connect() -> None:
        client = await nats.connect(
            shown, connect_timeout=5, allow_reconnect=False, max_reconnect_attempts=0
        )
        await client.close()

    with pytest.raises(Exception, match=r"(?i)authoriz"):
        asyncio.run(connect())
    assert urlsplit(shown).password is None
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert password not in "\n".join(up.lines)
    assert password not in (up.data_dir / "up-state.json").read_text()
    assert password not in up.stderr()
    health = httpx.get(f"{_api(up)}/health", verify=False, timeout=30)
    assert health.status_code == 200 and password not in health.text


def test_an_alerts_acknowledgement_link_is_https_and_its_mail_file_is_0600(up: RunningUp) -> None:
    customer = up.cli(
        "customers", "register", "--org", "Link BV", "--contact-name", "Lies Link",
        "--email", "lies@link.example", "--phone", "+31 6 1111 2223",
        "--billing-address", "Linkweg 1, Delft",
    ).strip()  # fmt: skip
    up.cli("customers", "subscribe", customer)
    up.cli(
        "messages", "send", "--customer", customer, "--channel", "email",
        "--to", "piet@link.example", "--subject", "Drill", "--body", "Fire drill",
        "--priority", "alert", "--ack-within", "30",
    )  # fmt: skip

    inbox = up.data_dir / "maildir" / "email" / "new"
    deadline = time.monotonic() + 60
    while not (files := list(inbox.iterdir()) if inbox.is_dir() else []):
        assert time.monotonic() < deadline, f"no mail delivered; up said: {up.stderr()}"
        time.sleep(0.25)

    text = files[0].read_bytes().decode(errors="replace")
    assert f"Acknowledge: {_api(up)}/v1/ack/" in text.replace("=\n", "")
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
