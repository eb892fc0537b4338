"""The one typed settings object, read from the environment here and passed inward."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import msgspec

from picasse.domain.personal import DEFAULT_VISITOR_DAYS, VISITOR_RETENTION_SETTING


class SettingsError(Exception):
    """A setting has a value the platform cannot use."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a Picasse process needs to know about where it runs."""

    data_dir: Path
    database_url: str | None = None  # None: the embedded PostgreSQL under data_dir
    database_schema: str = ""  # "" : the database's default schema
    nats_url: str | None = None  # None: the embedded NATS server under data_dir
    nats_namespace: str = ""  # prefixes stream and subject names, to share one NATS server
    # Copies JetStream keeps of each of our streams: 3 (or 5) on a NATS cluster, so a node
    # may fail; 1 on a single server, which refuses more.
    nats_replicas: int = 1
    master_key_file: Path | None = None  # None: data_dir / "master.key"
    signing_key_file: Path | None = None  # None: data_dir / "signing.key"
    traffic_retention_months: int = 6
    visitor_retention_days: int = DEFAULT_VISITOR_DAYS  # a site may set its own
    ping_retention_days: int = 30  # PICASSE_PING_RETENTION_DAYS: raw location pings (R8)
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    # The API's listening socket, already bound: a descriptor `up` hands each API child it
    # starts (PICASSE_HTTP_LISTEN_FD); None: `picasse api` binds http_host:http_port itself.
    http_listen_fd: int | None = None
    login_tracking: bool = False  # R6: possible, but off unless an operator switches it on
    tls_cert: Path | None = None  # with tls_key: serve HTTPS
    tls_key: Path | None = None
    # Where the outside world reaches our HTTP API (delivery receipt webhooks, ack links,
    # the start-up banner): `effective_public_url` of PICASSE_PUBLIC_URL and the listener.
    public_url: str = "http://127.0.0.1:8000"
    configured_public_url: str | None = None  # PICASSE_PUBLIC_URL as set (None: not set)
    # Proxies whose forwarded headers name the client (adapters/http/clients.py); none
    # by default: nobody else's X-Forwarded-For is believed.
    trusted_proxies: tuple[str, ...] = ()
    # NATS over TLS (tls:// URLs, or the embedded server's with its own certificate):
    # the CA that signed the server's certificate; the system's CAs when None.
    nats_tls_ca: Path | None = None
    # Delivery providers; with none configured, a development Maildir under data_dir.
    smtp_url: str | None = None
    smtp_sender: str = "Picasse <no-reply@picasse.invalid>"
    # SMS over SMPP 3.4 (smpp://system_id:password@host:port, smpps:// for TLS): first in
    # the SMS chain when set, the JSON gateway (if any) then its failover.
    sms_smpp_url: str | None = None
    # smpps://: the CA that signed the SMSC's certificate (PEM); the system's CAs when None.
    sms_smpp_ca: Path | None = None
    sms_gateway_url: str | None = None
    sms_gateway_token: str | None = None
    sms_failover_url: str | None = None
    sms_failover_token: str | None = None
    voice_url: str | None = None
    voice_token: str | None = None
    # Twilio's REST API (or a provider copying it), for SMS and voice.
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_from: str | None = None  # a number, or a messaging service SID ("MG…", SMS only)
    twilio_base_url: str = "https://api.twilio.com"
    # The telephony provider of conference calls: its HTTP API, and the token we call it
    # with and it signs its reports to /v1/webhooks/telephony with.
    telephony_url: str | None = None
    telephony_token: str | None = None
    # Failover order per channel, by provider kind ("smpp", "twilio", "gateway");
    # None: the configured ones in the default order (runners/wiring.py).
    sms_providers: tuple[str, ...] | None = None
    voice_providers: tuple[str, ...] | None = None
    # Webhook URLs on loopback, private or link-local addresses are refused unless this is
    # on (tests, private deployments): PICASSE_WEBHOOKS_ALLOW_PRIVATE=1.
    webhooks_allow_private: bool = False
    # Workers
    workers: int = 1
    max_attempts: int = 5
    retry_backoff: float = 2.0  # seconds before the first retry; doubles each time
    rate_per_customer: float = 100.0
    # The reconciler republishes a lost job once its delivery is this overdue.
    reconcile_grace_seconds: float = 300.0
    # Processes
    db_connections: int = 20  # PostgreSQL connections for all of `picasse up`, split by role
    drain_seconds: float = 30.0  # how long a stopping worker may finish the jobs in hand
    view_retry_max: float = 60.0  # seconds: a stopped view retries after 1 s, doubling to this
    # A test clock: the system time plus the offset in this file. Only for data dirs
    # marked as test ones (adapters/clock.py TEST_DATA_DIR_MARKER); refused otherwise.
    test_clock_file: Path | None = None
    # Fault injection for tests: a termination kills itself (SIGKILL) after this step.
    # Honoured only in a data dir marked as a test one, like the test clock.
    fault_after_step: str | None = None

    def __repr__(self) -> str:  # tokens and passwords in URLs stay out of logs
        return f"Settings(data_dir={str(self.data_dir)!r})"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        data_dir = Path(env.get("PICASSE_DATA_DIR") or ".picasse").expanduser().absolute()
        http_port = _number(env, "PICASSE_HTTP_PORT", 8000, int, minimum=0)  # 0: any free port
        master = env.get("PICASSE_MASTER_KEY_FILE")
        http_host = env.get("PICASSE_HTTP_HOST") or "127.0.0.1"
        tls_cert = _path(env.get("PICASSE_TLS_CERT"))
        return cls(
            data_dir=data_dir,
            database_url=env.get("PICASSE_DATABASE_URL") or None,
            database_schema=env.get("PICASSE_DATABASE_SCHEMA") or "",
            nats_url=env.get("PICASSE_NATS_URL") or None,
            nats_namespace=_namespace(env.get("PICASSE_NATS_NAMESPACE") or ""),
            nats_replicas=_replicas(env.get("PICASSE_NATS_REPLICAS") or "1", env),
            master_key_file=Path(master).expanduser().absolute() if master else None,
            signing_key_file=_path(env.get("PICASSE_SIGNING_KEY_FILE")),
            traffic_retention_months=_number(env, "PICASSE_TRAFFIC_RETENTION_MONTHS", 6, int),
            visitor_retention_days=_number(
                env, VISITOR_RETENTION_SETTING, DEFAULT_VISITOR_DAYS, int, minimum=1
            ),
            ping_retention_days=_number(env, "PICASSE_PING_RETENTION_DAYS", 30, int),
            http_host=http_host,
            http_port=http_port,
            http_listen_fd=_descriptor(env.get("PICASSE_HTTP_LISTEN_FD")),
            login_tracking=(env.get("PICASSE_LOGIN_TRACKING") or "").strip().lower() == "on",
            tls_cert=tls_cert,
            tls_key=_path(env.get("PICASSE_TLS_KEY")),
            public_url=effective_public_url(
                env.get("PICASSE_PUBLIC_URL"), http_host, http_port, tls=tls_cert is not None
            ),
            configured_public_url=env.get("PICASSE_PUBLIC_URL") or None,
            trusted_proxies=_networks(env.get("PICASSE_TRUSTED_PROXIES") or ""),
            nats_tls_ca=_path(env.get("PICASSE_NATS_TLS_CA")),
            smtp_url=env.get("PICASSE_SMTP_URL") or None,
            smtp_sender=env.get("PICASSE_SMTP_SENDER") or "Picasse <no-reply@picasse.invalid>",
            sms_smpp_url=env.get("PICASSE_SMS_SMPP_URL") or None,
            sms_smpp_ca=_path(env.get("PICASSE_SMS_SMPP_CA")),
            sms_gateway_url=env.get("PICASSE_SMS_GATEWAY_URL") or None,
            sms_gateway_token=env.get("PICASSE_SMS_GATEWAY_TOKEN") or None,
            sms_failover_url=env.get("PICASSE_SMS_FAILOVER_URL") or None,
            sms_failover_token=env.get("PICASSE_SMS_FAILOVER_TOKEN") or None,
            voice_url=env.get("PICASSE_VOICE_URL") or None,
            voice_token=env.get("PICASSE_VOICE_TOKEN") or None,
            twilio_account_sid=env.get("PICASSE_TWILIO_ACCOUNT_SID") or None,
            twilio_auth_token=env.get("PICASSE_TWILIO_AUTH_TOKEN") or None,
            twilio_from=env.get("PICASSE_TWILIO_FROM") or None,
            twilio_base_url=env.get("PICASSE_TWILIO_BASE_URL") or "https://api.twilio.com",
            telephony_url=env.get("PICASSE_TELEPHONY_URL") or None,
            telephony_token=env.get("PICASSE_TELEPHONY_TOKEN") or None,
            sms_providers=_names(env.get("PICASSE_SMS_PROVIDERS")),
            voice_providers=_names(env.get("PICASSE_VOICE_PROVIDERS")),
            webhooks_allow_private=_flag(env, "PICASSE_WEBHOOKS_ALLOW_PRIVATE"),
            workers=_number(env, "PICASSE_WORKERS", 1, int),
            max_attempts=_number(env, "PICASSE_MAX_ATTEMPTS", 5, int),
            retry_backoff=_number(env, "PICASSE_RETRY_BACKOFF", 2.0, float),
            rate_per_customer=_number(env, "PICASSE_RATE_PER_CUSTOMER", 100.0, float),
            reconcile_grace_seconds=_number(env, "PICASSE_RECONCILE_GRACE", 300.0, float),
            db_connections=_number(env, "PICASSE_DB_CONNECTIONS", 20, int),
            drain_seconds=_number(env, "PICASSE_DRAIN_SECONDS", 30.0, float),
            view_retry_max=_number(env, "PICASSE_VIEW_RETRY_MAX", 60.0, float),
            test_clock_file=_path(env.get("PICASSE_TEST_CLOCK_FILE")),
            fault_after_step=env.get("PICASSE_FAULT_AFTER_STEP") or None,
        )

    def on_port(self, port: int) -> Settings:
        """These settings with the API on `port`, the one picked for PICASSE_HTTP_PORT=0: a
        public URL made from the listener names that port, one configured stays as it is."""
        public_url = effective_public_url(
            self.configured_public_url, self.http_host, port, tls=self.tls_cert is not None
        )
        return msgspec.structs.replace(self, http_port=port, public_url=public_url)

    @property
    def signing_key_path(self) -> Path:
        """The platform's Ed25519 key for statements of erasure."""
        return self.signing_key_file or self.data_dir / "signing.key"

    @property
    def maildir(self) -> Path:
        return self.data_dir / "maildir"

    @property
    def master_key_path(self) -> Path:
        return self.master_key_file or self.data_dir / "master.key"

    @property
    def postgres_dir(self) -> Path:
        return self.data_dir / "postgres"

    @property
    def nats_dir(self) -> Path:
        return self.data_dir / "nats"


def _names(value: str | None) -> tuple[str, ...] | None:
    """A comma-separated list of names ("smpp, twilio"); None when unset or empty."""
    names = tuple(name.strip().lower() for name in (value or "").split(",") if name.strip())
    return names or None


def effective_public_url(configured: str | None, host: str, port: int, *, tls: bool) -> str:
    """Where the world reaches us: PICASSE_PUBLIC_URL if set, else our own listener, with
    https when we serve TLS (links in e-mails must not send people to plain http)."""
    if configured:
        parts = urlsplit(configured)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise SettingsError(f"PICASSE_PUBLIC_URL must be an http(s) URL, not {configured!r}")
        return configured.rstrip("/")
    where = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{where}:{port}"


N = TypeVar("N", int, float)


def _number(
    env: Mapping[str, str], name: str, default: N, kind: type[N], *, minimum: N | None = None
) -> N:
    text = env.get(name)
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise SettingsError(f"{name} must be a number, not {text!r}") from None
    if minimum is not None and value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, not {text!r}")
    if minimum is None and value <= 0:
        raise SettingsError(f"{name} must be positive, not {text!r}")
    return value


def _descriptor(text: str | None) -> int | None:
    if not text:
        return None
    if not text.isdigit():
        raise SettingsError(f"PICASSE_HTTP_LISTEN_FD must be a file descriptor, not {text!r}")
    return int(text)


def _flag(env: Mapping[str, str], name: str) -> bool:
    text = (env.get(name) or "").strip().lower()
    if text in ("", "0", "off", "no", "false"):
        return False
    if text in ("1", "on", "yes", "true"):
        return True
    raise SettingsError(f"{name} must be 1 or 0, not {text!r}")


def _namespace(text: str) -> str:
    if text and not text.replace("_", "").isalnum():
        raise SettingsError(
            f"PICASSE_NATS_NAMESPACE may hold letters, digits and _ only, not {text!r}"
        )
    return text.lower()


MAX_NATS_REPLICAS = 5  # JetStream's own limit


def _replicas(text: str, env: Mapping[str, str]) -> int:
    try:
        replicas = int(text)
    except ValueError:
        replicas = 0
    if not 1 <= replicas <= MAX_NATS_REPLICAS:
        raise SettingsError(
            f"PICASSE_NATS_REPLICAS must be a whole number from 1 to {MAX_NATS_REPLICAS},"
            f" not {text!r}"
        )
    if replicas > 1 and not env.get("PICASSE_NATS_URL"):
        raise SettingsError(
            f"PICASSE_NATS_REPLICAS={replicas} needs a NATS cluster in PICASSE_NATS_URL:"
            " the embedded server keeps one copy"
        )
    return replicas


def nats_servers(url: str) -> list[str]:
    """The servers of PICASSE_NATS_URL: one URL, or a comma-separated list of a cluster's
    nodes (`nats://a:4222,nats://b:4222`), each with its own credentials if any."""
    return [part.strip() for part in url.split(",") if part.strip()]


def _networks(text: str) -> tuple[str, ...]:
    """`10.0.0.1, 192.168.0.0/16, ::1` → its networks, written out; refused if one is bad."""
    networks = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        try:
            networks.append(str(ipaddress.ip_network(entry, strict=False)))
        except ValueError:
            raise SettingsError(
                f"PICASSE_TRUSTED_PROXIES: {entry!r} is not an address or a CIDR network"
            ) from None
    return tuple(networks)


def _path(text: str | None) -> Path | None:
    return Path(text).expanduser().absolute() if text else None
