"""The development Maildir provider: one Maildir per channel, private, atomic under concurrency."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import stat
import subprocess
import sys
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from picasse.adapters.providers import ChannelName, Delivery, PermanentFailure, Sent
from picasse.adapters.providers.maildir import MaildirProvider

NUMBER = "+31612345678"


HANDED_OVER_AT = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)


def delivery(channel: ChannelName, number: int = 0, **changes: Any) -> Delivery:
    fields: dict[str, Any] = {
        "reference": f"8f14e45f-ceea-467f-a0e4-1c9b2a6d7e01:{number}",
        "channel": channel,
        "to": "alice@customer.example" if channel == "email" else NUMBER,
        "body": f"Fire drill at 14:00 — south gate ({channel} {number})",
        "handed_over_at": HANDED_OVER_AT,
    }
    fields.update(changes)
    return Delivery(**fields)


def send(provider: MaildirProvider, *deliveries: Delivery) -> list[Sent]:
    async def scenario() -> list[Sent]:
        return list(await asyncio.gather(*(provider.send(one) for one in deliveries)))

    return asyncio.run(scenario())


def messages_in(maildir: Path) -> list[EmailMessage]:
    """What a mail client would show: the delivered messages in `new/`, nothing half-written."""
    found = []
    for path in sorted((maildir / "new").iterdir()):
        parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        found.append(parsed)
    return found


@pytest.fixture
def provider(tmp_path: Path) -> MaildirProvider:
    return MaildirProvider(tmp_path / "outbox", sender="picasse@localhost")


def test_each_channel_lands_in_its_own_maildir(provider: MaildirProvider) -> None:
    send(provider, delivery("email"), delivery("sms"), delivery("voice"))

    for channel in ("email", "sms", "voice"):
        [message] = messages_in(provider.path_for(channel))
        assert message["X-Picasse-Channel"] == channel
        assert message["X-Picasse-Reference"] == delivery(channel).reference
        assert list((provider.path_for(channel) / "tmp").iterdir()) == []


def test_an_email_is_a_normal_message_with_from_to_subject_and_body(
    provider: MaildirProvider,
) -> None:
    send(provider, delivery("email", subject="Fire drill"))

    [message] = messages_in(provider.path_for("email"))
    assert message["From"] == "picasse@localhost"
    assert message["To"] == "alice@customer.example"
    assert message["Subject"] == "Fire drill"
    assert message["Message-ID"].endswith("@localhost>")
    assert message["Date"] == "Mon, 04 May 2026 12:00:00 +0000"  # the worker's clock
    assert message.get_content().rstrip("\n") == delivery("email").body


def test_an_sms_carries_the_number_the_reference_and_the_text(provider: MaildirProvider) -> None:
    send(provider, delivery("sms", sender="ACME"))

    [message] = messages_in(provider.path_for("sms"))
    assert message["To"] == NUMBER
    assert message["X-Picasse-Sender"] == "ACME"
    assert message["X-Picasse-Reference"] == delivery("sms").reference
    assert message.get_content().rstrip("\n") == delivery("sms").body


def test_a_voice_call_carries_the_text_that_would_be_spoken(provider: MaildirProvider) -> None:
    send(provider, delivery("voice"))

    [message] = messages_in(provider.path_for("voice"))
    assert message["To"] == NUMBER
    assert message.get_content().rstrip("\n") == delivery("voice").body


def test_a_delivery_is_final_and_names_the_maildir_provider(provider: MaildirProvider) -> None:
    [sent] = send(provider, delivery("sms"))

    [stored] = (provider.path_for("sms") / "new").iterdir()
    assert sent == Sent(provider="maildir", provider_reference=stored.name, final=True)


def test_a_number_with_a_line_break_cannot_inject_headers(provider: MaildirProvider) -> None:
    with pytest.raises(PermanentFailure):
        send(provider, delivery("sms", to=f"{NUMBER}\r\nX-Picasse-Channel: email"))

    assert messages_in(provider.path_for("sms")) == []


def test_the_directories_are_private_whatever_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        provider = MaildirProvider(tmp_path / "outbox")
    finally:
        os.umask(previous)

    directories = [provider.directory]
    for channel in ("email", "sms", "voice"):
        directories += [provider.path_for(channel) / sub for sub in ("", "tmp", "new", "cur")]
    assert {oct(stat.S_IMODE(path.stat().st_mode)) for path in directories} == {oct(0o700)}


def test_every_message_file_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    """Issue 11: the files were 0644, readable by anyone who could reach them."""
    provider = MaildirProvider(tmp_path / "outbox")
    previous = os.umask(0)
    try:
        send(provider, *(delivery(channel, 3) for channel in ("email", "sms", "voice")))
    finally:
        os.umask(previous)

    files = [
        path
        for channel in ("email", "sms", "voice")
        for sub in ("tmp", "new", "cur")
        for path in (provider.path_for(channel) / sub).iterdir()
    ]
    assert len(files) == 3
    assert {oct(stat.S_IMODE(path.stat().st_mode)) for path in files} == {oct(0o600)}


def test_an_existing_directory_is_made_private_and_keeps_its_messages(tmp_path: Path) -> None:
    send(MaildirProvider(tmp_path / "outbox"), delivery("sms", 1))
    (tmp_path / "outbox").chmod(0o755)

    reopened = MaildirProvider(tmp_path / "outbox")
    send(reopened, delivery("sms", 2))

    assert stat.S_IMODE((tmp_path / "outbox").stat().st_mode) == 0o700
    assert len(messages_in(reopened.path_for("sms"))) == 2


def test_concurrent_writes_in_one_process_do_not_collide(provider: MaildirProvider) -> None:
    sent = send(provider, *(delivery("sms", n) for n in range(200)))

    references = sorted(m["X-Picasse-Reference"] for m in messages_in(provider.path_for("sms")))
    assert references == sorted(delivery("sms", n).reference for n in range(200))
    assert len({one.provider_reference for one in sent}) == 200


WRITER = """
import asyncio, sys
from pathlib import Path
from picasse.adapters.providers import Delivery
from picasse.adapters.providers.maildir import MaildirProvider

directory, worker = Path(sys.argv[1]), int(sys.argv[2])
provider = MaildirProvider(directory)  # every writer also races to create the Maildirs

async def main() -> None:
    await asyncio.gather(*(
        provider.send(Delivery(reference=f"w{worker}:{n}", channel="sms", to="+31612345678", body="x"))
        for n in range(50)
    ))

asyncio.run(main())
"""


def test_concurrent_writes_from_several_processes_do_not_collide(tmp_path: Path) -> None:
    directory = tmp_path / "outbox"
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(directory), str(worker)])
        for worker in range(4)
    ]
    assert [writer.wait(timeout=30) for writer in writers] == [0, 0, 0, 0]

    references = sorted(m["X-Picasse-Reference"] for m in messages_in(directory / "sms"))
    assert references == sorted(f"w{worker}:{n}" for worker in range(4) for n in range(50))
    assert list((directory / "sms" / "tmp").iterdir()) == []
