"""The SMTP provider: hands e-mail deliveries to a relay over (STARTTLS-upgraded) SMTP."""

from __future__ import annotations

import asyncio
import email.utils
import ssl
from email.message import EmailMessage
from urllib.parse import SplitResult, unquote, urlsplit

import aiosmtplib

from picasse.adapters.providers import (
    Delivery,
    DeliveryError,
    PermanentFailure,
    Sent,
    TemporaryFailure,
)
from picasse.adapters.qr import qr_png
from picasse.domain.errors import InvalidInput
from picasse.domain.messages import FailureReason
from picasse.domain.values import header_text

DEFAULT_SUBJECT = "Message"
_DEFAULT_PORTS = {"smtp": 25, "smtps": 465}
_ENCODING_HINT = "(is a '#', '/' or '?' in the password not percent-encoded?)"
# Characters kept as they are in a Message-ID local part; all others are escaped, so
# the mapping from reference to Message-ID is one-to-one and always valid RFC 5322.
_MESSAGE_ID_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class SmtpProvider:
    """Sends e-mail deliveries through one SMTP server, reusing a few connections."""

    name = "smtp"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        implicit_tls: bool,
        username: str | None,
        password: str | None,
        sender: str,
        tls_context: ssl.SSLContext | None = None,
        timeout: float = 10,
        max_connections: int = 4,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.host = host
        self.port = port
        self.implicit_tls = implicit_tls
        self.username = username
        self._password = password
        self.sender = sender
        self.envelope_sender = _sender_address(sender)
        if not self.envelope_sender:
            raise ValueError("SMTP sender must be an e-mail address")
        self.tls_context = tls_context
        self.timeout = timeout
        self.max_connections = max_connections
        # Connections belong to the event loop that opened them; the pool follows the loop.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[aiosmtplib.SMTP] = []
        self._closed = False

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        sender: str,
        tls_context: ssl.SSLContext | None = None,
        timeout: float = 10,
        max_connections: int = 4,
    ) -> SmtpProvider:
        """Build from `smtp://[user:pass@]host[:port]` (STARTTLS) or `smtps://…` (implicit TLS).

        Error messages never repeat the URL: it may hold a password.
        """
        split = _split_url(url)
        if split is None:
            raise ValueError(f"SMTP URL cannot be parsed {_ENCODING_HINT}")
        parts, port = split
        scheme, host = parts.scheme.lower(), parts.hostname
        if scheme not in _DEFAULT_PORTS:
            raise ValueError("SMTP URL must start with smtp:// or smtps://")
        if not host:
            raise ValueError("SMTP URL has no host")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"SMTP URL must not have a path, query or fragment {_ENCODING_HINT}")
        username = unquote(parts.username) if parts.username is not None else None
        password = unquote(parts.password) if parts.password is not None else None
        if (username is None) != (password is None) or username == "":
            raise ValueError("SMTP URL must give both a user and a password, or neither")
        return cls(
            host=host,
            port=port or _DEFAULT_PORTS[scheme],
            implicit_tls=scheme == "smtps",
            username=username,
            password=password,
            sender=sender,
            tls_context=tls_context,
            timeout=timeout,
            max_connections=max_connections,
        )

    def __repr__(self) -> str:  # the password stays out of every log line
        scheme = "smtps" if self.implicit_tls else "smtp"
        user = "<user>@" if self.username is not None else ""
        return f"SmtpProvider({scheme}://{user}{self.host}:{self.port})"

    async def send(self, delivery: Delivery) -> Sent:
        if self._closed:
            raise RuntimeError("SmtpProvider is closed")
        if delivery.channel != "email":
            raise PermanentFailure(FailureReason.NO_PROVIDER)
        message = email_message(delivery, sender=self.sender)
        self._follow_running_loop()
        failure: DeliveryError
        async with self._slots:
            try:
                await self._transmit(message, delivery.to)
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
                failure = failure_for(error)
            else:
                return Sent(
                    provider=self.name, provider_reference=str(message["Message-ID"]), final=True
                )
        # Raised outside the handler: the server's reply may quote the address, and even
        # a suppressed __context__ is walked by some error reporters.
        raise failure

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for client in idle:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                pass  # saying goodbye is a courtesy; the socket closes either way
            finally:
                client.close()

    async def _transmit(self, message: EmailMessage, recipient: str) -> None:
        client = self._idle.pop() if self._idle else None
        if client is not None:
            if client.is_connected:
                try:
                    await self._send_on(client, message, recipient)
                    return
                except aiosmtplib.SMTPServerDisconnected:
                    # Servers drop idle connections whenever they like, which says
                    # nothing about this message: try once more on a fresh connection.
                    # (Should the server have dropped us after taking the message, the
                    # resend carries the same Message-ID for the recipient to de-duplicate.)
                    pass
            client.close()
        await self._send_on(await self._connect(), message, recipient)

    async def _send_on(
        self, client: aiosmtplib.SMTP, message: EmailMessage, recipient: str
    ) -> None:
        """Send on `client`, then pool it again if the conversation left it usable."""
        unsendable = False
        try:
            await client.send_message(message, sender=self.envelope_sender, recipients=[recipient])
        except ValueError:
            # aiosmtplib refuses, before writing a byte, an address that could smuggle
            # SMTP commands; its message quotes the address, so it is not passed on.
            unsendable = True
        except (aiosmtplib.SMTPRecipientsRefused, aiosmtplib.SMTPResponseException):
            # aiosmtplib has reset the transaction; the connection is good for the next one
            self._release(client)
            raise
        except BaseException:
            client.close()
            raise
        self._release(client)
        if unsendable:
            raise PermanentFailure(FailureReason.INVALID_RECIPIENT)

    def _release(self, client: aiosmtplib.SMTP) -> None:
        if client.is_connected and not self._closed:
            self._idle.append(client)
        else:
            client.close()

    async def _connect(self) -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            use_tls=self.implicit_tls,
            start_tls=False,  # upgraded below, where we can refuse to log in in the clear
            tls_context=self.tls_context,
            timeout=self.timeout,
        )
        try:
            await client.connect()
            await _greet(client)
            if not self.implicit_tls:
                if client.supports_extension("starttls"):
                    await client.starttls()
                    await _greet(client)  # extensions offered before TLS no longer count
                elif self.username is not None:
                    # no STARTTLS: we refuse to send credentials in the clear
                    raise PermanentFailure(FailureReason.TLS_FAILED)
            if self.username is not None:
                if not client.supports_extension("auth"):
                    raise PermanentFailure(FailureReason.CREDENTIALS_REFUSED)
                await client.login(self.username, self._password or "")
        except BaseException:
            client.close()
            raise
        return client

    def _follow_running_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is self._loop:
            return
        stale, self._idle = self._idle, []
        for client in stale:
            client.close()
        self._loop = loop
        self._slots = asyncio.Semaphore(self.max_connections)


def email_message(delivery: Delivery, *, sender: str) -> EmailMessage:
    """The RFC 5322 message for an e-mail delivery; From is the customer's sender if it has one."""
    to = delivery.to
    local, at, domain = to.rpartition("@")
    if not (at and local and domain) or any(c.isspace() or c in "<>,;" for c in to):
        raise PermanentFailure(FailureReason.INVALID_RECIPIENT)
    from_ = delivery.sender or sender
    if not _sender_address(from_):
        raise PermanentFailure(FailureReason.SENDER_REFUSED)
    subject = " ".join((delivery.subject or "").split()) or DEFAULT_SUBJECT
    try:  # a subject recorded before the API refused encoded line breaks
        header_text(subject, "subject")
    except InvalidInput:
        raise PermanentFailure(FailureReason.CONTENT_REFUSED) from None
    # RFC 5322 §3.6.2: when the author is the customer, the platform is the Sender
    sender_header = {"Sender": sender} if from_ != sender else {}
    message = EmailMessage()
    if not headers_written(message, {"From": from_, **sender_header, "To": to, "Subject": subject}):
        raise PermanentFailure(FailureReason.INVALID_RECIPIENT)
    if delivery.handed_over_at is not None:  # the worker's clock, not this module's
        message["Date"] = email.utils.format_datetime(delivery.handed_over_at)
    message["Message-ID"] = message_id_for(delivery.reference, sender)
    message.set_content(delivery.body, charset="utf-8")
    if delivery.qr_code is not None:
        message.add_attachment(
            qr_png(delivery.qr_code), maintype="image", subtype="png", filename="qr-code.png"
        )
    return message


def headers_written(message: EmailMessage, headers: dict[str, str]) -> bool:
    """Set the headers, or say False when one cannot be (a line break that would inject more,
    typed or in an RFC 2047 encoded word: `header_text`, the check the API applies).

    The error is dropped rather than chained: its traceback would show the value.
    """
    try:
        for name, value in headers.items():
            header_text(value, name)
            message[name] = value
    except (ValueError, InvalidInput):
        return False
    return True


def message_id_for(reference: str, sender: str) -> str:
    """The same Message-ID for every attempt at one delivery, so a resend can be de-duplicated."""
    local = "".join(
        char if char in _MESSAGE_ID_SAFE else "".join(f"={byte:02X}" for byte in char.encode())
        for char in reference
    )
    domain = _sender_address(sender).rpartition("@")[2] or "picasse.invalid"
    return f"<{local}@{domain}>"


def failure_for(error: BaseException) -> DeliveryError:
    """Temporary or permanent, by SMTP's own rule (4xx/5xx), with a reason code read from
    the reply code and the step it answered; the server's text is never kept."""
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        code = error.recipients[0].code if error.recipients else 550
        return _by_code(code, FailureReason.INVALID_RECIPIENT)
    if isinstance(error, aiosmtplib.SMTPSenderRefused):
        return _by_code(error.code, FailureReason.SENDER_REFUSED)
    if isinstance(error, aiosmtplib.SMTPAuthenticationError):
        return _by_code(error.code, FailureReason.CREDENTIALS_REFUSED)
    if isinstance(error, aiosmtplib.SMTPDataError):
        return _by_code(error.code, FailureReason.CONTENT_REFUSED)
    if isinstance(error, aiosmtplib.SMTPConnectResponseError):
        return _by_code(error.code, FailureReason.REJECTED_BY_GATEWAY)
    if isinstance(error, aiosmtplib.SMTPResponseException):
        return _by_code(error.code, FailureReason.REJECTED_BY_GATEWAY)
    if isinstance(error, aiosmtplib.SMTPNotSupported):
        return PermanentFailure(FailureReason.REJECTED_BY_GATEWAY)
    if isinstance(error, TimeoutError):  # aiosmtplib's timeouts are TimeoutErrors too
        return TemporaryFailure(FailureReason.TIMED_OUT)
    if _caused_by(error, ssl.SSLError):
        return TemporaryFailure(FailureReason.TLS_FAILED)
    if isinstance(error, aiosmtplib.SMTPConnectError):
        return TemporaryFailure(FailureReason.UNREACHABLE)
    if isinstance(error, OSError):  # includes ConnectionError and SMTPServerDisconnected
        return TemporaryFailure(FailureReason.CONNECTION_LOST)
    return TemporaryFailure(FailureReason.PROVIDER_ERROR)


def _by_code(code: int, refused: FailureReason) -> DeliveryError:
    """A reply code: 452 and 552 say the mailbox (or the server's storage) is full; other
    5xx codes mean `refused` for good; other 4xx codes that the server cannot now."""
    permanent = 500 <= code < 600
    if code in (452, 552):
        reason = FailureReason.MAILBOX_FULL
    elif permanent:
        reason = refused
    else:
        reason = FailureReason.PROVIDER_UNAVAILABLE
    return PermanentFailure(reason) if permanent else TemporaryFailure(reason)


def _split_url(url: str) -> tuple[SplitResult, int | None] | None:
    """The URL's parts and port, or None; urlsplit's own errors quote the netloc's password."""
    try:
        parts = urlsplit(url)
        return parts, parts.port
    except ValueError:
        return None


async def _greet(client: aiosmtplib.SMTP) -> None:
    try:
        await client.ehlo()
    except aiosmtplib.SMTPHeloError:
        await client.helo()  # an old server without ESMTP: no STARTTLS, no AUTH


def _caused_by(error: BaseException, kind: type[BaseException]) -> bool:
    chain: list[BaseException] = []
    link: BaseException | None = error
    while link is not None and link not in chain:  # a context chain can loop
        if isinstance(link, kind):
            return True
        chain.append(link)
        link = link.__cause__ or link.__context__
    return False


def _sender_address(sender: str) -> str:
    _, address = email.utils.parseaddr(sender)
    return address if "@" in address else ""
