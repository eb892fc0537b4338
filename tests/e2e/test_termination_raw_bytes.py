"""The termination proof, against `picasse up` as a process: after a customer is terminated
with the real CLI and a CHECKPOINT, none of its personal values is in any file under the
embedded PostgreSQL data directory (heap, indexes, pg_wal) or the JetStream store,
searched as raw bytes in UTF-8, UTF-16LE and UTF-16BE.

Each search can fail: a second customer's canaries go through the very same path first,
and the search is shown to find what is stored of them (its ids, and its recipient's
blind index as computed from the canary), while none of its personal values is stored
readable either (views and events hold ciphertext only). The second customer stays readable through the API, and staff
find its deliveries by recipient (a blind index, never the recipient's text).
"""

from __future__ import annotations

import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import httpx
import psycopg
import pytest

from picasse.adapters.crypto import blind_index
from picasse.adapters.postgres.store import factory_of
from picasse.domain.messaging import recipient_lookup_form
from picasse.runners.settings import Settings
from picasse.runners.wiring import open_accounts
from tests.e2e.platform import RunningUp, picasse_command

pytestmark = pytest.mark.own_servers

PASSWORD = "a long enough staff password"
ENCODINGS = ("utf-8", "utf-16-le", "utf-16-be")


class Canaries:
    """High-entropy values, in the forms they are stored in (E.164, lower-cased e-mail)."""

    def __init__(self) -> None:
        tag = secrets.token_hex(6)
        digits = f"{secrets.randbelow(10**7):07d}"
        self.values = {
            "organisation": f"Org{tag}Kanarie",
            "contact_name": f"Name{tag}Kanarie",
            "email": f"mail{tag}@kanarie.example",
            "phone": f"+3161{digits}",
            "billing_address": f"Straat{tag}Kanarie 1",
            "recipient_email": f"rcpt{tag}@kanarie.example",
            "recipient_phone": f"+3162{digits}",
            "group": f"Group{tag}Kanarie",
            "body": f"Body{tag}Kanarie",
        }


@pytest.fixture
def up(fresh_data_dir: Path) -> Iterator[RunningUp]:
    running = RunningUp(fresh_data_dir)
    try:
        running.wait_until_up()
        yield running
    finally:
        running.terminate()


def _customer(up: RunningUp, c: Canaries) -> str:
    v = c.values
    customer = up.cli(
        "customers", "register", "--org", v["organisation"], "--contact-name", v["contact_name"],
        "--email", v["email"], "--phone", v["phone"], "--billing-address", v["billing_address"],
    ).strip()  # fmt: skip
    up.cli("customers", "subscribe", customer)
    up.cli(
        "groups", "set", "--customer", customer, "--name", v["group"],
        "--member", v["recipient_phone"],
    )  # fmt: skip
    up.cli(
        "messages", "send", "--customer", customer, "--channel", "email",
        "--to", v["recipient_email"], "--body", v["body"],
    )  # fmt: skip
    up.cli(
        "messages", "send", "--customer", customer, "--channel", "sms",
        "--group", v["group"], "--body", v["body"],
    )  # fmt: skip
    return customer


def _stored_files(up: RunningUp) -> list[Path]:
    roots = [up.data_dir / "postgres", up.data_dir / "nats"]
    for root in roots:
        assert root.is_dir(), root
    return [p for root in roots for p in root.rglob("*") if p.is_file()]


def _found(files: list[Path], needles: list[str] | list[bytes]) -> set[str | bytes]:
    """The needles present in any file, text in any of the three encodings, as raw bytes."""
    patterns = {
        needle: [needle] if isinstance(needle, bytes) else [needle.encode(e) for e in ENCODINGS]
        for needle in needles
    }
    found: set[str | bytes] = set()
    for path in files:
        try:
            data = path.read_bytes()
        except (FileNotFoundError, PermissionError):  # a segment recycled meanwhile
            continue
        for needle, forms in patterns.items():
            if needle not in found and any(form in data for form in forms):
                found.add(needle)
    return found


def _blind_index(up: RunningUp, customer: UUID, month: str, recipient: str) -> bytes:
    """The stored blind index of a recipient: under the customer's month key."""
    url = up.url_of("PostgreSQL")
    accounts = open_accounts(Settings(data_dir=up.data_dir, database_url=url), url)
    try:
        key = factory_of(accounts).keys.subject_key(customer, f"traffic/{month}")
        assert key is not None
        return blind_index(key, recipient_lookup_form(recipient))
    finally:
        accounts.close()


def _api(up: RunningUp) -> str:
    for line in up.lines:
        if found := re.search(r"api listening on (\S+)", line):
            return found.group(1)
    return up.wait_for_line("api listening on").split()[-1]


def _delivered(up: RunningUp, n: int) -> bool:
    with psycopg.connect(up.url_of("PostgreSQL"), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM traffic_view_deliveries WHERE status = 'delivered'"
        ).fetchone()
    return bool(row and row[0] >= n)


@pytest.mark.slow
def test_a_terminated_customers_values_are_in_no_stored_byte_and_the_search_can_fail(
    up: RunningUp, tmp_path: Path
) -> None:
    staying, leaving = Canaries(), Canaries()
    kept = _customer(up, staying)  # planted first, through the same path
    gone = _customer(up, leaving)
    deadline = time.monotonic() + 90
    while not _delivered(up, 4):  # two messages each, one recipient each: all delivered
        assert time.monotonic() < deadline, "the deliveries are not done"
        time.sleep(0.2)

    up.cli("customers", "terminate", gone, "--out", str(tmp_path / "statement"))
    with psycopg.connect(up.url_of("PostgreSQL"), autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        rows = conn.execute(
            "SELECT id, month FROM traffic_view_messages WHERE customer_id = %s", (kept,)
        ).fetchall()
    message_ids, month = [str(r[0]) for r in rows], rows[0][1]
    files = _stored_files(up)
    index = _blind_index(up, UUID(kept), month, staying.values["recipient_email"])

    # The search can fail: the staying customer's readable forms (its ids, written through
    # the same commands into the same heap, index, WAL and stream files) are found ...
    assert _found(files, [kept, *message_ids]) == {kept, *message_ids}
    # ... and so is what the views store of its recipient: the blind index, as the key
    # store (master key in the data dir) computes it from the canary ...
    assert _found(files, [index]) == {index}
    # ... while no personal value of either customer is stored readable anywhere.
    assert _found(files, list(staying.values.values())) == set()
    assert _found(files, list(leaving.values.values())) == set()

    # The staying customer stays readable, and staff find its deliveries by recipient.
    added = subprocess.run(
        [*picasse_command(), "users", "add", "--login", "proof-admin", "--role",
         "platform_admin", "--password-stdin"],
        input=PASSWORD, capture_output=True, text=True, env=up.env, timeout=60,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    with httpx.Client(base_url=_api(up), timeout=30) as api:
        logged_in = api.post("/v1/sessions", json={"login": "proof-admin", "password": PASSWORD})
        assert logged_in.status_code in (200, 201), logged_in.text
        customer = api.get(f"/v1/customers/{kept}").json()
        assert customer["organisation"] == staying.values["organisation"]
        wanted = staying.values["recipient_email"].upper()  # looked up in its lower-cased form
        found = api.get("/v1/traffic", params={"customer_id": kept, "recipient": wanted})
        assert found.status_code == 200, found.text
        assert [r["recipient"] for r in found.json()] == [staying.values["recipient_email"]]
        by_phone = api.get(
            "/v1/traffic",
            params={"customer_id": kept, "recipient": staying.values["recipient_phone"]},
        ).json()
        assert [r["recipient"] for r in by_phone] == [staying.values["recipient_phone"]]
        nobody = api.get(
            "/v1/traffic",
            params={"customer_id": kept, "recipient": leaving.values["recipient_email"]},
        ).json()
        assert nobody == []
        gone_now = api.get(f"/v1/customers/{gone}").json()
        assert staying.values["organisation"] not in str(gone_now)
        assert leaving.values["organisation"] not in str(gone_now)
