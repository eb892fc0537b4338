"""A real SMTP server for tests: aiosmtpd in its own thread, recording every message it accepts."""

from __future__ import annotations

import email
import email.policy
import ipaddress
import logging
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Self
from urllib.parse import quote

import msgspec
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from picasse.adapters.clock import SystemClock


class _WithoutAiosmtpdsOwnDeprecation(logging.Filter):
    """aiosmtpd warns on every login about an attribute it sets itself; that is not news."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "login_data is deprecated" not in record.getMessage()


_aiosmtpd_log = logging.getLogger("mail.log")
if not any(isinstance(f, _WithoutAiosmtpdsOwnDeprecation) for f in _aiosmtpd_log.filters):
    _aiosmtpd_log.addFilter(_WithoutAiosmtpdsOwnDeprecation())


class ReceivedMessage(msgspec.Struct, frozen=True, kw_only=True):
    """One accepted mail transaction, as the server saw it."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes  # the DATA exactly as received
    over_tls: bool  # implicit TLS or STARTTLS
    login: str | None  # who authenticated on the connection, if anyone
    peer: str  # client "host:port": one per connection

    def message(self) -> EmailMessage:
        # SMTP's CRLF line ends would otherwise linger in 8bit bodies as "\r"
        text = self.content.replace(b"\r\n", b"\n")
        parsed = email.message_from_bytes(text, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


class TlsContexts(NamedTuple):
    server: ssl.SSLContext  # presents a certificate for localhost and 127.0.0.1
    client: ssl.SSLContext  # trusts only the test CA that signed it


def make_tls_contexts(hostname: str = "localhost", ip: str = "127.0.0.1") -> TlsContexts:
    """A CA and a server certificate made now, with contexts for both ends."""
    now = SystemClock().now()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Picasse test CA")])
    ca_cert = (
        _certificate_builder(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    server_cert = (
        _certificate_builder(server_name, ca_name, server_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address(ip))]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # load_cert_chain reads only files; they live just long enough to be read
    with tempfile.TemporaryDirectory() as directory:
        cert_path, key_path = Path(directory, "cert.pem"), Path(directory, "key.pem")
        cert_path.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            server_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        server.load_cert_chain(cert_path, key_path)
    client = ssl.create_default_context(
        cadata=ca_cert.public_bytes(serialization.Encoding.PEM).decode()
    )
    return TlsContexts(server=server, client=client)


class RecordingSmtpServer:
    """An aiosmtpd server on 127.0.0.1 that records accepted messages, thread-safely.

    `reject`: recipients answered with 550 at RCPT (the reply quotes the address, as
    real servers do). `fail_first_n`: that many transactions answered 451 at DATA.
    `auth`: user → password; a client must log in to send. `tls_context` offers
    STARTTLS; `implicit_tls_context` makes it an smtps server instead.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        tls_context: ssl.SSLContext | None = None,
        implicit_tls_context: ssl.SSLContext | None = None,
        require_starttls: bool = False,
        auth: Mapping[str, str] | None = None,
        auth_require_tls: bool = True,
        reject: Iterable[str] = (),
        fail_first_n: int = 0,
    ) -> None:
        self.host = host
        self._requested_port = port
        self._tls_context = tls_context
        self._implicit_tls_context = implicit_tls_context
        self._require_starttls = require_starttls
        self._auth = dict(auth) if auth is not None else None
        self._auth_require_tls = auth_require_tls
        self._reject = {address.lower() for address in reject}
        self._changed = threading.Condition()
        self._received: list[ReceivedMessage] = []
        self._failures_left = fail_first_n
        self._peers: set[str] = set()
        self._auth_attempts = 0
        self._controller: _PreboundController | None = None
        self.port = 0

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> Self:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Bound before the thread starts, so port 0 yields a port nobody else can take.
        listener.bind((self.host, self._requested_port))
        self.port = listener.getsockname()[1]
        kwargs: dict[str, Any] = {
            "server_hostname": "picasse-test-smtp",  # not socket.getfqdn(): no DNS wait
            "ready_timeout": 5.0,
            "require_starttls": self._require_starttls,
        }
        if self._tls_context is not None:
            kwargs["tls_context"] = self._tls_context
        if self._auth is not None:
            kwargs["authenticator"] = self._authenticate
            kwargs["auth_required"] = True
            # aiosmtpd counts only STARTTLS as TLS; on an smtps port everything already is
            kwargs["auth_require_tls"] = (
                self._auth_require_tls and self._implicit_tls_context is None
            )
        self._controller = _PreboundController(
            _Handler(self),
            listener,
            ssl_context=self._implicit_tls_context,
            **kwargs,
        )
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what a test asks ---------------------------------------------------------------

    @property
    def url(self) -> str:
        scheme = "smtps" if self._implicit_tls_context is not None else "smtp"
        return f"{scheme}://{self.host}:{self.port}"

    def url_with(self, user: str, password: str) -> str:
        scheme, rest = self.url.split("://")
        return f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{rest}"

    @property
    def received(self) -> list[ReceivedMessage]:
        with self._changed:
            return list(self._received)

    @property
    def connections(self) -> int:
        """Connections that started a mail transaction (the startup probe does not count)."""
        with self._changed:
            return len(self._peers)

    @property
    def auth_attempts(self) -> int:
        with self._changed:
            return self._auth_attempts

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedMessage]:
        """The first `count` messages, once that many have arrived; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{len(self._received)} of {count} messages arrived in {timeout}s"
                    )
                self._changed.wait(left)
            return self._received[:count]

    def fail_next(self, count: int) -> None:
        """Answer the next `count` transactions with 451, e.g. to make a run flaky midway."""
        with self._changed:
            self._failures_left = count

    # -- called on the server's thread --------------------------------------------------

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        with self._changed:
            self._auth_attempts += 1
        assert self._auth is not None
        if isinstance(auth_data, LoginPassword):
            login = auth_data.login.decode()
            if self._auth.get(login) == auth_data.password.decode():
                return AuthResult(success=True, auth_data=login)
        return AuthResult(success=False, handled=False)

    def _rcpt(self, session: Session, address: str) -> bool:
        with self._changed:
            self._peers.add(_peer(session))
        return address.lower() not in self._reject

    def _data(self, server: SMTP, session: Session, envelope: Envelope) -> bool:
        with self._changed:
            if self._failures_left > 0:
                self._failures_left -= 1
                return False
            content = envelope.original_content or envelope.content
            assert isinstance(content, bytes)
            assert server.transport is not None
            self._received.append(
                ReceivedMessage(
                    mail_from=envelope.mail_from or "",
                    rcpt_tos=tuple(envelope.rcpt_tos),
                    content=content,
                    over_tls=server.transport.get_extra_info("ssl_object") is not None,
                    login=session.auth_data if session.authenticated else None,
                    peer=_peer(session),
                )
            )
            self._changed.notify_all()
            return True


class _Handler:
    """aiosmtpd's hooks, answering as a real mail server would."""

    def __init__(self, recorder: RecordingSmtpServer) -> None:
        self._recorder = recorder

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if not self._recorder._rcpt(session, address):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if not self._recorder._data(server, session, envelope):
            first = envelope.rcpt_tos[0] if envelope.rcpt_tos else ""
            return f"451 4.3.0 <{first}>: Temporary lookup failure, try again later"
        return "250 2.0.0 Ok: queued"


class _PreboundController(Controller):
    """aiosmtpd's Controller serving on a socket bound beforehand (aiosmtpd cannot use port 0)."""

    def __init__(self, handler: Any, listener: socket.socket, **kwargs: Any) -> None:
        self._listener = listener
        host, port = listener.getsockname()[:2]
        super().__init__(handler, hostname=host, port=port, **kwargs)

    def _create_server(self) -> Any:
        return self.loop.create_server(
            self._factory_invoker, sock=self._listener, ssl=self.ssl_context
        )


def _certificate_builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePublicKey, now: datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _peer(session: Session) -> str:
    peer = session.peer
    if isinstance(peer, tuple):
        host, port = peer[:2]
        return f"{host}:{port}"
    return str(peer)
