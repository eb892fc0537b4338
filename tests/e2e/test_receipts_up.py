"""Receipts under `picasse up` with a real voice gateway (issue 11, finding 3): a gateway's
token counts only for the deliveries handed to that gateway, while a receipt is awaited."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from picasse.adapters.providers.receipts import RECEIPTS_PATH, SIGNATURE_HEADER
from tests.e2e.platform import RunningUp
from tests.integration.gateway import FakeGateway
from tests.ports import free_port

VOICE_TOKEN = "voice-token-e2e"


def _delivery(up: RunningUp, message_id: str) -> dict[str, Any]:
    (delivery,) = json.loads(up.cli("messages", "show", message_id, "--json"))["deliveries"]
    assert isinstance(delivery, dict)
    return delivery


def _wait_for(up: RunningUp, message_id: str, wanted: str, provider: str) -> dict[str, Any]:
    deadline = time.monotonic() + 90  # two loaded cores
    while True:
        delivery = _delivery(up, message_id)
        if (delivery["status"], delivery["provider"]) == (wanted, provider):
            return delivery
        assert time.monotonic() < deadline, f"delivery stays {delivery}: {up.stderr()}"
        time.sleep(0.3)


def _post(url: str, receipt: dict[str, str], token: str) -> httpx.Response:
    raw = msgspec.json.encode(receipt)
    signature = hmac.new(token.encode(), raw, hashlib.sha256).hexdigest()
    return httpx.post(
        url,
        content=raw,
        headers={"Content-Type": "application/json", SIGNATURE_HEADER: f"sha256={signature}"},
        timeout=30,
    )


@pytest.mark.own_servers
@pytest.mark.slow
def test_the_voice_gateway_marks_only_its_own_call_and_only_once(fresh_data_dir: Path) -> None:
    port = free_port()
    receipts = f"http://127.0.0.1:{port}{RECEIPTS_PATH}"
    with FakeGateway(token=VOICE_TOKEN) as voice:
        up = RunningUp(
            fresh_data_dir / "data",
            PICASSE_HTTP_PORT=str(port),
            PICASSE_VOICE_URL=voice.url,
            PICASSE_VOICE_TOKEN=VOICE_TOKEN,
        )
        try:
            up.wait_until_up()
            customer = up.cli(
                "customers", "register", "--org", "Bel BV", "--contact-name", "Bea Bel",
                "--email", "bea@bel.example", "--phone", "+31 6 1111 2222",
                "--billing-address", "Belweg 1, Delft",
            ).strip()  # fmt: skip
            up.cli("customers", "subscribe", customer)

            def send(*args: str) -> str:
                sent = up.cli("messages", "send", "--customer", customer, *args, "--json")
                return str(json.loads(sent)["id"])

            mail = send("--channel", "email", "--to", "ann@bel.example", "--body", "Invoice")
            call = send("--channel", "voice", "--to", "+31612345678", "--body", "Fire drill")
            (submission,) = voice.wait_for(1, timeout=60)
            _wait_for(up, call, "sending", "voice")  # handed over: a receipt is awaited
            email = _wait_for(up, mail, "delivered", "maildir")

            # The finding: the voice gateway's token marking an e-mail delivery.
            forged = {"id": submission.id, "reference": email["id"], "status": "failed"}
            refused = _post(receipts, forged, VOICE_TOKEN)
            assert refused.status_code == 403, refused.text
            assert refused.json()["code"] == "forbidden"
            assert _delivery(up, mail)["status"] == "delivered"

            # Its own call's receipt counts, once; a replay answers 200 and records nothing.
            assert voice.send_receipt(submission.id, "answered") == 204
            assert _delivery(up, call)["status"] == "delivered"
            assert voice.send_receipt(submission.id, "no-answer") == 200
            assert _delivery(up, call)["status"] == "delivered"
        finally:
            up.terminate()
