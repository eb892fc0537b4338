"""An alert's acknowledgement link under `picasse up`, opened in a real browser (issue 11,
finding 12): opening the link acknowledges nothing; the page's button does."""

from __future__ import annotations

import email
import email.policy
import json
import re
import time
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from tests.e2e.platform import CHROMIUM, CHROMIUM_ARGS, MAIL_TIMEOUT, RunningUp

_LINK = re.compile(r"Acknowledge: (\S+/v1/ack/\S+)")


def _ack_link(up: RunningUp, address: str) -> str:
    """The link in the one e-mail to `address` in the development Maildir."""
    deadline = time.monotonic() + MAIL_TIMEOUT
    while not (mails := _mails_to(up.data_dir / "maildir", address)):
        assert time.monotonic() < deadline, f"no e-mail to {address} arrived{up.report()}"
        time.sleep(0.2)
    (message,) = mails
    body = message.get_body(("plain",))
    assert body is not None
    found = _LINK.search(body.get_content())
    assert found is not None, "the alert carries no acknowledgement link"
    return found.group(1)


def _mails_to(maildir: Path, address: str) -> list[EmailMessage]:
    """The delivered mails (new/ and cur/) to `address`: the platform is shared."""
    found = []
    for sub in ("new", "cur"):
        for path in sorted((maildir / "email" / sub).glob("*")):
            try:
                mail = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            except FileNotFoundError:
                continue  # moved from new/ to cur/ meanwhile
            if address in str(mail["To"]):
                found.append(mail)
    return found


def _acknowledged(up: RunningUp, message_id: str) -> list[bool]:
    shown = json.loads(up.cli("messages", "show", message_id, "--json"))
    return [delivery["acknowledged"] for delivery in shown["deliveries"]]


@pytest.mark.slow
def test_opening_the_link_asks_and_only_the_button_acknowledges(shared_up: RunningUp) -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"no {CHROMIUM}: run tests/e2e/ensure_chromium.sh (make test does)")
    # The session's running platform: the customer and the address are this test's own.
    up = shared_up
    customer = up.cli(
        "customers", "register", "--org", "Brand BV", "--contact-name", "Bram Brand",
        "--email", "bram@brand.example", "--phone", "+31 6 1111 2222",
        "--billing-address", "Brandweg 1, Delft",
    ).strip()  # fmt: skip
    up.cli("customers", "subscribe", customer)
    sent = up.cli(
        "messages", "send", "--customer", customer, "--channel", "email",
        "--to", "oncall@brand.example", "--subject", "Fire alarm", "--body", "Building B",
        "--priority", "alert", "--ack-within", "15", "--json",
    )  # fmt: skip
    message_id = json.loads(sent)["id"]
    link = _ack_link(up, "oncall@brand.example")
    assert urlsplit(link).netloc == urlsplit(up.api_url()).netloc  # where `up` listens

    # What a mail scanner does: fetch the link, follow it, fetch it again.
    for _ in range(2):
        assert httpx.get(link, follow_redirects=True).status_code == 200
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(10_000)
            page.goto(link)
            expect(page.get_by_role("heading")).to_have_text("Acknowledge this alert")
            assert _acknowledged(up, message_id) == [False]

            page.get_by_role("button", name="Acknowledge").click()

            expect(page.get_by_role("heading")).to_have_text("Thank you, acknowledged")
        finally:
            browser.close()
    assert _acknowledged(up, message_id) == [True]
