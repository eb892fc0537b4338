"""The HTTP app under uvicorn in a thread of the test process, on a free port, and the
people and data the API tests act on."""

from __future__ import annotations

import datetime as dt
import ipaddress
import select
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import argon2
import httpx
import msgspec
import psycopg
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from litestar import Litestar
from psycopg import sql

from picasse.adapters.clock import SystemClock
from picasse.adapters.http.app import HttpDeps
from picasse.adapters.master_key import create_master_key
from picasse.adapters.passwords import Argon2Passwords
from picasse.domain.messaging import SendRequest
from picasse.domain.values import Role
from picasse.runners.settings import Settings
from tests.integration.projection_runners import caught_up, running
from tests.users import add_customer_user

PASSWORD = "correct horse battery staple"
# argon2id still, with the cheapest parameters: the tests check who gets in, not the cost.
CHEAP_ARGON2 = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def with_cheap_passwords(deps: HttpDeps) -> HttpDeps:
    """The same deps, hashing passwords in a millisecond (set before any user is added)."""
    deps.accounts.passwords = Argon2Passwords(CHEAP_ARGON2)
    return deps


@contextmanager
def serving(app: Litestar, *, cert: Path | None = None, key: Path | None = None) -> Iterator[str]:
    """Serve `app` until the block ends; its base URL (https when given a certificate)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # NODELAY
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    scheme = "https" if cert else "http"
    base_url = f"{scheme}://127.0.0.1:{listener.getsockname()[1]}"
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_config=None,
            log_level="warning",
            proxy_headers=False,  # the app settles client addresses (adapters/http/clients.py)
            access_log=False,
            ssl_certfile=cert,
            ssl_keyfile=key,
            # A test's clients may leave a connection idle for seconds on a busy machine
            # (one of several roles' sessions); uvicorn's 5 s would close it as a request
            # is sent on it, which httpx reports as a reset rather than retrying.
            timeout_keep_alive=300,
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.01)
    try:
        yield base_url
    finally:
        server.should_exit = True
        thread.join(10)
        listener.close()


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (its own CA) and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = SystemClock().now()  # a certificate is checked against the real time
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


class Tenant(msgspec.Struct, frozen=True):
    """One customer with an admin and a user, and a message it sent."""

    customer_id: UUID
    organisation: str
    contact_email: str
    admin_login: str
    user_login: str
    admin_id: UUID
    user_id: UUID
    message_id: UUID
    recipient: str
    body: str


def make_tenant(deps: HttpDeps, name: str) -> Tenant:
    """Registers and subscribes a customer, adds its users and sends one message."""
    accounts = deps.accounts
    organisation = f"{name} Holding {uuid4().hex[:6]}"
    email = f"contact.{name.lower()}@{name.lower()}.example"
    customer_id = accounts.register_customer(
        organisation=organisation, contact_name=f"{name} Contact", email=email,
        phone="+31612345670", billing_address=f"{name}straat 1, Utrecht",
    )  # fmt: skip
    accounts.start_subscription(customer_id)
    admin_login, user_login = f"{name.lower()}-admin", f"{name.lower()}-user"
    admin_id = add_customer_user(
        accounts,
        customer_id=customer_id,
        login=admin_login,
        role=Role.CUSTOMER_ADMIN,
        password=PASSWORD,
    )
    user_id = add_customer_user(
        accounts,
        customer_id=customer_id,
        login=user_login,
        role=Role.CUSTOMER_USER,
        password=PASSWORD,
    )
    recipient = f"recipient.{name.lower()}@rcpt.example"
    body = f"Secret body of {name}: the vault code is {uuid4().hex}"
    message_id = deps.messages.send(
        customer_id,
        SendRequest(channel="email", to=[recipient], body=body, subject="Hello"),
        requested_by=user_id,
        client_ip="192.0.2.10",
    )
    return Tenant(
        customer_id=customer_id, organisation=organisation, contact_email=email,
        admin_login=admin_login, user_login=user_login, admin_id=admin_id, user_id=user_id,
        message_id=message_id, recipient=recipient, body=body,
    )  # fmt: skip


def add_staff(deps: HttpDeps) -> dict[Role, str]:
    """One Picasse staff member per platform role; their logins."""
    logins = {}
    for role in (Role.PLATFORM_ADMIN, Role.SUPPORT, Role.AUDITOR):
        login = f"staff-{role.value.replace('_', '-')}"
        deps.accounts.add_user(customer_id=None, login=login, role=role, password=PASSWORD)
        logins[role] = login
    return logins


def bearer(deps: HttpDeps, login: str) -> dict[str, str]:
    """An Authorization header with a new API key of the user with this login."""
    user = deps.accounts.user_by_login(login)
    issued = deps.api_keys.issue(user_id=user.id, customer_id=user.customer_id)
    return {"Authorization": f"Bearer {issued.key}"}


def logged_in(base_url: str, login: str, **kwargs: object) -> httpx.Client:
    """A client holding a session cookie of this user (close it when done)."""
    client = httpx.Client(base_url=base_url, timeout=20, **kwargs)  # type: ignore[arg-type]
    response = client.post("/v1/sessions", json={"login": login, "password": PASSWORD})
    assert response.status_code == 201, response.text
    return client


def catch_up_views(settings: Settings, database_url: str, timeout: float = 120) -> None:
    """Run the projections until every view holds the whole log, as `picasse project` would."""
    with running(settings, database_url, ["accounts", "traffic"]) as runners:
        caught_up(runners, timeout)


@contextmanager
def module_settings(tmp_path_factory: Any, database_url: str, label: str) -> Iterator[Settings]:
    """Settings on a schema of the calling test module's own, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    settings = Settings(
        data_dir=tmp_path_factory.mktemp(label) / "data",
        database_url=database_url,
        database_schema=schema,
        # An API in a test serves a few requests at a time: a small pool, so that the
        # suite's two workers stay within the server's connection limit.
        db_connections=10,
    )
    create_master_key(settings.master_key_path)
    try:
        yield settings
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


API_PROGRAM = (
    "import sys; from picasse.runners.api import main;"
    " from picasse.runners.settings import Settings;"
    " sys.exit(main(Settings.from_environ()))"
)


def start_api_process(
    env: dict[str, str], stderr_path: Path, *, within: float = 60.0
) -> tuple[subprocess.Popen[bytes], bytes]:
    """`picasse.runners.api.main` as a process of its own, its standard error to
    `stderr_path`: the process, and its first line on standard output (b"" if none came
    within `within` seconds)."""
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-c", API_PROGRAM], env=env, stdout=subprocess.PIPE, stderr=stderr
        )
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], within)
    return process, process.stdout.readline() if ready else b""
