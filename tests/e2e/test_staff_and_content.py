"""Finding 1 of issue 11, against `picasse up` as a process: no sequence of staff actions
ends with staff reading a message body (R7). Customer users get their password through a
one-time link mailed to them (the development Maildir here); staff add a customer's first
admin only; every staff change to a customer's users is in its privacy ledger and pages."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import httpx
import pytest

from tests.e2e.platform import RunningUp, picasse_command, wait_for_links

TIMEOUT = 120.0
STAFF_PASSWORD = "quartz meadow lantern 17"
USER_PASSWORD = "velvet orchard compass 42"
SECRET = "the vault code is 7391-quokka"


@pytest.fixture
def up(shared_up: RunningUp) -> RunningUp:
    """The session's running platform: this test adds staff and a customer of its own (their
    logins are taken by no other test) and stops nothing. Mailed links name the port `up`
    picked (PICASSE_HTTP_PORT=0), which the public URL names too."""
    return shared_up


def cli(up: RunningUp, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*picasse_command(), *args], input=stdin, capture_output=True, text=True, env=up.env,
        timeout=120,
    )  # fmt: skip


def base_url(up: RunningUp) -> str:
    return up.api_url()


def session(up: RunningUp, login: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=base_url(up), timeout=30, follow_redirects=False)
    logged = client.post("/v1/sessions", json={"login": login, "password": password})
    assert logged.status_code == 201, logged.text
    return client


def wait_for(check: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.5)


@pytest.mark.slow
def test_no_sequence_of_staff_actions_ends_with_staff_reading_a_body(up: RunningUp) -> None:
    for login, role in (("boss", "platform_admin"), ("helper", "support")):
        added = cli(up, "users", "add", "--login", login, "--role", role, "--password-stdin",
                    stdin=STAFF_PASSWORD + "\n")  # fmt: skip
        assert added.returncode == 0, added.stderr
    customer = cli(up, "customers", "register", "--org", "Kluis BV", "--contact-name",
                   "Karel Kluis", "--email", "karel@kluis.example", "--phone", "+31 6 1234 5000",
                   "--billing-address", "Kluisweg 1, Urk").stdout.strip()  # fmt: skip
    assert cli(up, "customers", "subscribe", customer).returncode == 0
    boss = session(up, "boss", STAFF_PASSWORD)
    helper = session(up, "helper", STAFF_PASSWORD)
    users = f"/v1/customers/{customer}/users"

    # Staff add the first admin: no password of theirs, a link to the user's address.
    first = boss.post(users, json={"login": "karel", "role": "customer_admin",
                                   "email": "karel@kluis.example"})  # fmt: skip
    assert first.status_code == 201, first.text
    refused = {
        "password in the body": boss.post(users, json={"login": "mallory", "role": "customer_admin",
                                                       "password": STAFF_PASSWORD}),
        "a second admin": boss.post(users, json={"login": "mallory", "role": "customer_admin",
                                                 "email": "mallory@evil.example"}),
        "a user": boss.post(users, json={"login": "mallory", "role": "customer_user",
                                         "email": "mallory@evil.example"}),
        "support adds": helper.post(users, json={"login": "mallory", "role": "customer_admin",
                                                 "email": "mallory@evil.example"}),
        "a guessed link": boss.post("/v1/password-links/" + "A" * 43,
                                    json={"new_password": STAFF_PASSWORD}),
        "logging in as the new admin": httpx.post(f"{base_url(up)}/v1/sessions",
                                                  json={"login": "karel", "password": ""}),
    }  # fmt: skip
    for what, response in refused.items():
        assert response.status_code in (400, 401, 403, 404, 422), (what, response.text)
    cli_refusals = [
        cli(up, "users", "add", "--customer", customer, "--login", "mallory", "--role",
            "customer_user", "--email", "mallory@evil.example"),
        cli(up, "users", "add", "--customer", customer, "--login", "mallory", "--role",
            "customer_admin", "--password-stdin", stdin=STAFF_PASSWORD + "\n"),
        cli(up, "users", "passwd", "karel", "--password-stdin", stdin=STAFF_PASSWORD + "\n"),
    ]  # fmt: skip
    for result in cli_refusals:
        assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    # A staff reset: a new link, to the user. From a shell that does not say where `up`
    # listens: the link names the running platform's address all the same.
    elsewhere = {k: v for k, v in up.env.items() if k != "PICASSE_HTTP_PORT"}
    reset = subprocess.run(
        [*picasse_command(), "users", "passwd", "karel"],
        capture_output=True, text=True, env=elsewhere, timeout=120,
    )  # fmt: skip
    assert reset.returncode == 0 and "http" not in reset.stdout, reset.stderr

    # The user, at their inbox: two links, only the newest works; opening it uses nothing up.
    first_link, newest = wait_for_links(up, "karel@kluis.example", 2)
    assert first_link.startswith(base_url(up) + "/set-password/")
    assert newest.startswith(base_url(up) + "/set-password/"), newest
    for link in (first_link, newest):
        assert link.rsplit("/", 1)[1] not in reset.stdout + first.text
    user = httpx.Client(timeout=30, follow_redirects=False)
    assert user.get(first_link).status_code == 404
    for _ in range(2):
        form = user.get(newest)
        assert form.status_code == 200 and 'name="new_password"' in form.text
    weak = user.post(newest, data={"new_password": "password1234", "repeat": "password1234"})
    assert weak.status_code == 422 and "too easy to guess" in weak.text
    done = user.post(newest, data={"new_password": USER_PASSWORD, "repeat": USER_PASSWORD})
    assert done.status_code == 200 and 'data-result="password-set"' in done.text
    assert user.get(newest).status_code == 404  # once only

    karel = session(up, "karel", USER_PASSWORD)
    sent = karel.post("/v1/messages", json={"channel": "email", "to": ["x@rcpt.example"],
                                            "subject": "Code", "body": SECRET})  # fmt: skip
    assert sent.status_code == 202, sent.text
    message_id = sent.json()["id"]
    own = karel.get(f"/v1/messages/{message_id}", params={"reveal_content": "true"})
    assert own.json()["body"] == SECRET  # the control: the customer's own user reads it

    # Staff, every way they have: the message, and every message in the customer's traffic.
    def traffic_ids() -> set[str]:
        rows = boss.get("/v1/traffic", params={"customer_id": customer}).json()
        return {row["message_id"] for row in rows}

    wait_for(lambda: message_id in traffic_ids() and len(traffic_ids()) >= 3, "traffic view")
    for staff in (boss, helper):
        for mid in traffic_ids():
            for query in ({"reveal_content": "true"}, {}):
                answer = staff.get(f"/v1/messages/{mid}", params=query)
                assert SECRET not in answer.text and "/set-password/" not in answer.text
                if query:
                    assert answer.status_code == 403
    # Nor does the customer's admin read back the links mailed to its users.
    for mid in traffic_ids() - {message_id}:
        answer = karel.get(f"/v1/messages/{mid}", params={"reveal_content": "true"})
        assert answer.status_code == 403 and "/set-password/" not in answer.text

    # The privacy ledger and the customer's page show what staff did to its users.
    def ledger() -> str:
        return boss.get("/admin/ledger", params={"customer_id": customer}).text

    wait_for(lambda: "set-password link" in ledger(), "the ledger")
    assert "added as customer_admin by Picasse staff (platform_admin)" in ledger()
    assert "sent to the user by Picasse staff (CLI)" in ledger()
    page = boss.get(f"/admin/customers/{customer}").text
    assert "Staff changes to users" in page and "added as customer_admin" in page
