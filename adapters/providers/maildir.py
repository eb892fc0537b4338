"""The development provider: each channel lands in a local Maildir standing for inboxes and phones."""

from __future__ import annotations

import asyncio
import email.utils
import mailbox
import os
import threading
from email.message import EmailMessage
from pathlib import Path

from picasse.adapters.providers import (
    ChannelName,
    Delivery,
    PermanentFailure,
    Sent,
    TemporaryFailure,
)
from picasse.adapters.providers.smtp import email_message, headers_written, message_id_for
from picasse.domain.messages import FailureReason

CHANNELS: tuple[ChannelName, ...] = ("email", "sms", "voice")
_SUBJECTS: dict[ChannelName, str] = {"sms": "SMS", "voice": "Voice call"}
# mailbox.Maildir numbers its unique file names with a counter shared by all instances
# and bumped without a lock, so two threads of one process could pick the same name.
# Other processes differ in pid, and O_EXCL plus link-into-new keep each write atomic.
_name_lock = threading.Lock()
_CLASH_RETRIES = 3


class MaildirProvider:
    """Delivers e-mail, SMS and voice into `<directory>/email`, `/sms` and `/voice` Maildirs."""

    name = "maildir"

    def __init__(self, directory: Path, *, sender: str = "picasse@localhost") -> None:
        self.directory = Path(directory)
        self.sender = sender
        # The receiving end holds message content in the clear: for the owner's eyes only.
        _private_directory(self.directory)
        self._maildirs = {channel: _open_maildir(self.path_for(channel)) for channel in CHANNELS}

    def path_for(self, channel: ChannelName) -> Path:
        """The Maildir standing for every recipient's inbox (email) or phone (sms, voice)."""
        return self.directory / channel

    def __repr__(self) -> str:
        return f"MaildirProvider({str(self.directory)!r})"

    async def send(self, delivery: Delivery) -> Sent:
        message = self._message_for(delivery)
        key = await asyncio.to_thread(self._store, delivery.channel, message)
        return Sent(provider=self.name, provider_reference=key, final=True)

    async def close(self) -> None:
        for maildir in self._maildirs.values():
            maildir.close()

    def _message_for(self, delivery: Delivery) -> EmailMessage:
        if delivery.channel == "email":
            message = email_message(delivery, sender=self.sender)
            message["X-Picasse-Channel"] = "email"
        else:
            message = _phone_message(delivery, sender=self.sender)
        message["X-Picasse-Reference"] = delivery.reference
        return message

    def _store(self, channel: ChannelName, message: EmailMessage) -> str:
        maildir = self._maildirs[channel]
        for _ in range(_CLASH_RETRIES):
            try:
                with _name_lock:
                    return maildir.add(message)
            except mailbox.ExternalClashError:
                # Another process picked the same name in the same microsecond (containers
                # sharing the directory can share pid and hostname); the next name differs.
                continue
        raise TemporaryFailure(FailureReason.PROVIDER_UNAVAILABLE)  # kept clashing on names


def _phone_message(delivery: Delivery, *, sender: str) -> EmailMessage:
    """An SMS or a call as a message: the number in To, the text (to be spoken) as body."""
    message = EmailMessage()
    message["X-Picasse-Channel"] = delivery.channel
    headers = {"To": delivery.to}
    if delivery.sender:
        headers["X-Picasse-Sender"] = delivery.sender
    if not headers_written(message, headers):
        raise PermanentFailure(FailureReason.INVALID_RECIPIENT)  # not writable into a header
    message["Subject"] = _SUBJECTS[delivery.channel]
    if delivery.handed_over_at is not None:  # the worker's clock, not this module's
        message["Date"] = email.utils.format_datetime(delivery.handed_over_at)
    message["Message-ID"] = message_id_for(delivery.reference, sender)
    message.set_content(delivery.body, charset="utf-8")
    return message


def _private_directory(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask and ignored if it existed


def _open_maildir(path: Path) -> mailbox.Maildir:
    # Made here rather than by Maildir(create=True), which fails when another process
    # creates the same directory between its existence check and its mkdir.
    for sub in ("", "tmp", "new", "cur"):
        _private_directory(path / sub)
    return _PrivateMaildir(path, factory=None, create=False)


class _PrivateMaildir(mailbox.Maildir):
    """A Maildir whose message files are 0600: the library creates them 0666 less the
    umask (0644 by default), readable by everyone on the machine who can reach them."""

    def _create_tmp(self) -> object:  # the library's one place that creates a message file
        file = super()._create_tmp()  # type: ignore[misc]  # typeshed leaves the private method out
        os.fchmod(file.fileno(), 0o600)  # before a byte of the message is written
        return file
