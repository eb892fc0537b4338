"""Builds the applications and their adapters from settings: the one place things get wired."""

from __future__ import annotations

from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from picasse.adapters.clock import TEST_DATA_DIR_MARKER, FileClock, SystemClock
from picasse.adapters.master_key import create_master_key, read_master_key
from picasse.adapters.passwords import Argon2Passwords
from picasse.adapters.postgres.store import shredder_of
from picasse.adapters.providers import Provider
from picasse.adapters.providers.maildir import MaildirProvider
from picasse.adapters.providers.receipts import RECEIPTS_PATH
from picasse.adapters.providers.smpp import ReceiptSink, smpp_from_settings
from picasse.adapters.providers.sms import FailoverSms, sms_from_settings
from picasse.adapters.providers.smtp import SmtpProvider
from picasse.adapters.providers.voice import HttpVoiceGateway
from picasse.adapters.pseudonyms import KeyedPseudonyms
from picasse.domain.accounts import Accounts
from picasse.domain.clock import Clock
from picasse.domain.messaging import Messages
from picasse.domain.privacy import Privacy
from picasse.runners.settings import Settings, SettingsError

STORE_MODULE = "picasse.adapters.postgres.store:Factory"


def clock_from(settings: Settings) -> Clock:
    """The one clock of a process: the system's, or the test clock of a test data dir."""
    if settings.test_clock_file is None:
        return SystemClock()
    if not (settings.data_dir / TEST_DATA_DIR_MARKER).is_file():
        raise SettingsError(
            f"PICASSE_TEST_CLOCK_FILE is for tests only: {settings.data_dir} is not marked"
            f" as a test data dir (no {TEST_DATA_DIR_MARKER} file in it)"
        )
    return FileClock(settings.test_clock_file)


DATABASE_PROBE_SECONDS = 5


def reach_database(database_url: str) -> None:
    """Raises SettingsError, naming the server but never the password, unless the database
    answers within a few seconds: a command fails fast and plainly, not after pool time-outs."""
    import psycopg

    try:
        params = conninfo_to_dict(database_url)
    except Exception as error:
        raise SettingsError(f"PICASSE_DATABASE_URL is not a PostgreSQL URL: {error}") from None
    where = (
        f"{params.get('host') or '127.0.0.1'}:{params.get('port') or '5432'}"
        f"/{params.get('dbname') or 'postgres'}"
    )
    try:
        psycopg.connect(database_url, connect_timeout=DATABASE_PROBE_SECONDS).close()
    except psycopg.Error as error:
        first = (str(error).strip().splitlines() or [""])[0]
        reason = first.rpartition("failed: ")[2].strip()  # psycopg never quotes the password
        raise SettingsError(
            f"cannot reach the database at {where}" + (f": {reason}" if reason else "")
        ) from None


def eventsourcing_env(
    database_url: str, master_key_file: Path, *, schema: str = ""
) -> dict[str, str]:
    """The library's environment for our event store on the database at `database_url`."""
    try:
        params = conninfo_to_dict(database_url)
    except Exception as error:
        raise SettingsError(f"PICASSE_DATABASE_URL is not a PostgreSQL URL: {error}") from None
    env = {
        "PERSISTENCE_MODULE": STORE_MODULE,
        "POSTGRES_DBNAME": str(params.get("dbname") or "postgres"),
        "POSTGRES_HOST": str(params.get("host") or "127.0.0.1"),
        "POSTGRES_PORT": str(params.get("port") or "5432"),
        "POSTGRES_USER": str(params.get("user") or "postgres"),
        "POSTGRES_PASSWORD": str(params.get("password") or ""),
        # Small by default: a command uses one pooled connection (and one key listener);
        # the long-running processes size their pools from their share of the budget.
        "POSTGRES_POOL_SIZE": "1",
        "POSTGRES_MAX_OVERFLOW": "0",
        "POSTGRES_CONNECT_TIMEOUT": "10",
        "MASTER_KEY_FILE": str(master_key_file),
    }
    if schema:
        env["POSTGRES_SCHEMA"] = schema
    return env


def open_accounts(
    settings: Settings,
    database_url: str,
    *,
    schema: str | None = None,
    pool_size: int = 1,
    pool_timeout: int | None = None,
    clock: Clock | None = None,
) -> Accounts:
    """Accounts on the process's clock (`clock_from(settings)`) unless given one: it
    measures how long set-password links live."""
    master_key_file = settings.master_key_path
    env = eventsourcing_env(
        database_url,
        master_key_file,
        schema=settings.database_schema if schema is None else schema,
    )
    env["POSTGRES_POOL_SIZE"] = str(pool_size)
    if pool_timeout is not None:  # also how long a new connection may take
        env["POSTGRES_CONNECT_TIMEOUT"] = str(pool_timeout)
    return Accounts(
        env,
        passwords=Argon2Passwords(),
        pseudonyms=KeyedPseudonyms(read_master_key(master_key_file)),
        clock=clock if clock is not None else clock_from(settings),
    )


def open_messages(
    settings: Settings,
    database_url: str,
    *,
    schema: str | None = None,
    pool_size: int = 1,
    pool_timeout: int | None = None,
    clock: Clock | None = None,
    opens_sealed_fields: bool = True,
) -> Messages:
    """Messages on the process's clock (`clock_from(settings)`) unless given one."""
    master_key_file = settings.master_key_path
    env = eventsourcing_env(
        database_url,
        master_key_file,
        schema=settings.database_schema if schema is None else schema,
    )
    env["POSTGRES_POOL_SIZE"] = str(pool_size)
    if not opens_sealed_fields:
        env["KEY_LISTENER"] = "off"
    if pool_timeout is not None:  # also how long a new connection may take
        env["POSTGRES_CONNECT_TIMEOUT"] = str(pool_timeout)
    return Messages(
        env,
        clock=clock if clock is not None else clock_from(settings),
        pseudonyms=KeyedPseudonyms(read_master_key(master_key_file)),
    )


def open_privacy(settings: Settings, database_url: str, *, schema: str | None = None) -> Privacy:
    env = eventsourcing_env(
        database_url,
        settings.master_key_path,
        schema=settings.database_schema if schema is None else schema,
    )
    return Privacy(env, shredder=shredder_of)


def providers_from(
    settings: Settings, *, receipts: ReceiptSink | None = None
) -> dict[str, Provider]:
    """One provider per channel: those configured, the development Maildir for the rest.
    `receipts` records the receipts that providers speaking a session protocol (SMPP)
    receive themselves, rather than through our receipt webhook."""
    callback_url = settings.public_url + RECEIPTS_PATH
    try:
        chosen: dict[str, Provider | None] = {
            "email": (
                SmtpProvider.from_url(settings.smtp_url, sender=settings.smtp_sender)
                if settings.smtp_url
                else None
            ),
            "sms": sms_from_settings(
                settings.sms_gateway_url,
                settings.sms_gateway_token,
                settings.sms_failover_url,
                settings.sms_failover_token,
                callback_url,
            ),
            "voice": (
                HttpVoiceGateway(
                    "voice",
                    settings.voice_url,
                    settings.voice_token or "",
                    callback_url=callback_url,
                )
                if settings.voice_url
                else None
            ),
        }
    except ValueError as error:
        raise SettingsError(f"delivery provider settings: {error}") from None
    if settings.sms_smpp_url:
        chosen["sms"] = _smpp_first(settings.sms_smpp_url, chosen["sms"], receipts)
    if settings.voice_url and not settings.voice_token:
        raise SettingsError("PICASSE_VOICE_URL needs PICASSE_VOICE_TOKEN")
    missing = [channel for channel, provider in chosen.items() if provider is None]
    development = MaildirProvider(settings.maildir) if missing else None
    return {
        channel: provider if provider is not None else development  # type: ignore[misc]
        for channel, provider in chosen.items()
    }


def _smpp_first(url: str, then: Provider | None, receipts: ReceiptSink | None) -> Provider:
    """SMPP, with the JSON gateway (if one is configured) as its failover."""
    try:
        smpp = smpp_from_settings(url, receipts=receipts)
    except ValueError as error:
        raise SettingsError(f"PICASSE_SMS_SMPP_URL: {error}") from None
    return smpp if then is None else FailoverSms(smpp, then)


def receipt_tokens(settings: Settings) -> dict[str, str]:
    """Gateway name → the token its receipts are signed with."""
    tokens = {
        "sms-primary": settings.sms_gateway_token,
        "sms-failover": settings.sms_failover_token,
        "voice": settings.voice_token,
    }
    return {name: token for name, token in tokens.items() if token}


def ensure_master_key(settings: Settings) -> None:
    """First start: create the data dir and the master key file (idempotent)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    create_master_key(settings.master_key_path)


def prepare(settings: Settings, database_url: str) -> None:
    """First start: the master key file and the event store's tables (idempotent)."""
    ensure_master_key(settings)
    open_accounts(settings, database_url).close()
