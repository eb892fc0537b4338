"""Builds the applications and their adapters from settings: the one place things get wired."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from psycopg.conninfo import conninfo_to_dict

from picasse.adapters.clock import TEST_DATA_DIR_MARKER, FileClock, SystemClock
from picasse.adapters.master_key import create_master_key, read_master_key
from picasse.adapters.postgres.notices import NoticedCache
from picasse.adapters.postgres.store import Factory, factory_of, recorder_of, shredder_of
from picasse.adapters.pseudonyms import KeyedPseudonyms
from picasse.runners.settings import Settings, SettingsError

# Each application, and the delivery providers (httpx, SMTP, SMPP, Twilio), is imported by
# the function that opens or builds it: a CLI command loads only what it uses. (Start-up
# CPU: every command and test process paid for every application's ~200 event classes and
# every provider's client.)
if TYPE_CHECKING:
    from picasse.adapters.nats.jobs import Topology
    from picasse.adapters.nats.status_events import WebhookTopology
    from picasse.adapters.postgres.provider_health import ProviderHealthTable
    from picasse.adapters.postgres.smsc_ids import SmscIdTable
    from picasse.adapters.providers import Provider
    from picasse.adapters.providers.health import ProviderCounters
    from picasse.adapters.providers.smpp import SessionReceipts
    from picasse.adapters.providers.telephony import HttpTelephony
    from picasse.adapters.providers.twilio import TwilioCallbacks
    from picasse.domain.accounts import Accounts
    from picasse.domain.application import PicasseApplication
    from picasse.domain.clock import Clock
    from picasse.domain.conferencing import Conferences
    from picasse.domain.messaging import Messages
    from picasse.domain.privacy import Privacy

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
STARTUP_CONNECT_SECONDS = 30  # a process's first connection, on a short pool timeout


def job_topology(settings: Settings) -> Topology:
    """The delivery jobs' names on NATS and the copies a cluster keeps of them."""
    from picasse.adapters.nats.jobs import Topology

    return Topology(settings.nats_namespace, settings.nats_replicas)


def webhook_topology(settings: Settings) -> WebhookTopology:
    """The webhook status events' names on NATS, beside the jobs'."""
    from picasse.adapters.nats.status_events import WebhookTopology

    return WebhookTopology(settings.nats_namespace, settings.nats_replicas)


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
    sharing: PicasseApplication | None = None,
) -> Accounts:
    """Accounts on the process's clock (`clock_from(settings)`) unless given one: it
    measures how long set-password links live. `sharing`: use that application's store
    (its pool and key store) instead of opening one."""
    from picasse.adapters.passwords import Argon2Passwords
    from picasse.domain.accounts import Accounts

    master_key_file = settings.master_key_path
    env = eventsourcing_env(
        database_url,
        master_key_file,
        schema=settings.database_schema if schema is None else schema,
    )
    env["POSTGRES_POOL_SIZE"] = str(pool_size)
    _pool_waits(env, pool_timeout)
    return Accounts(
        env,
        passwords=Argon2Passwords(),
        pseudonyms=KeyedPseudonyms(read_master_key(master_key_file)),
        clock=clock if clock is not None else clock_from(settings),
        sharing=sharing,
    )


def _pool_waits(env: dict[str, str], pool_timeout: int | None) -> None:
    """`pool_timeout`: how long a call waits for a pooled connection (the library makes it
    also how long a new connection may take). The pool's first connection is then made
    before its first use, waited for up to STARTUP_CONNECT_SECONDS: left to the background,
    the first use waited `pool_timeout` for it, and a loaded machine can take longer than
    that (1 s for the API) to make one, so the API failed to start."""
    if pool_timeout is not None:
        env["POSTGRES_CONNECT_TIMEOUT"] = str(pool_timeout)
        env[Factory.POOL_OPEN_TIMEOUT] = str(STARTUP_CONNECT_SECONDS)


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
    from picasse.domain.messaging import Messages

    master_key_file = settings.master_key_path
    env = eventsourcing_env(
        database_url,
        master_key_file,
        schema=settings.database_schema if schema is None else schema,
    )
    env["POSTGRES_POOL_SIZE"] = str(pool_size)
    if not opens_sealed_fields:
        env["KEY_LISTENER"] = "off"
    _pool_waits(env, pool_timeout)
    return Messages(
        env,
        clock=clock if clock is not None else clock_from(settings),
        pseudonyms=KeyedPseudonyms(read_master_key(master_key_file)),
    )


# How long a customer found sending is remembered at most (besides the notices).
SENDING_LIFETIME = timedelta(seconds=60)


def remember_sending(messages: Messages) -> None:
    """Customers found sending are remembered until a notice says any customer changed
    (the API checks each send against them, a worker each batch of deliveries), and at
    most SENDING_LIFETIME by the clock."""
    notices = recorder_of(messages).keys.notices
    messages.sending = NoticedCache(messages.clock, notices, SENDING_LIFETIME)


def open_privacy(settings: Settings, database_url: str, *, schema: str | None = None) -> Privacy:
    from picasse.domain.privacy import Privacy

    env = eventsourcing_env(
        database_url,
        settings.master_key_path,
        schema=settings.database_schema if schema is None else schema,
    )
    return Privacy(env, shredder=shredder_of, clock=clock_from(settings))


# Builds one provider kind from the settings (None: not configured).
Builder = Callable[[Settings, "SessionReceipts | None"], "Provider | None"]


def _smpp(settings: Settings, receipts: SessionReceipts | None) -> Provider | None:
    """SMPP 3.4 to an SMSC or aggregator (PICASSE_SMS_SMPP_URL); it takes its receipts on
    its own session and hands them to `receipts`."""
    if not settings.sms_smpp_url:
        if settings.sms_smpp_ca is not None:
            raise ValueError("PICASSE_SMS_SMPP_CA is set but PICASSE_SMS_SMPP_URL is not")
        return None
    from picasse.adapters.providers.smpp import smpp_from_settings

    return smpp_from_settings(settings.sms_smpp_url, receipts=receipts, tls_ca=settings.sms_smpp_ca)


def _sms_gateway(settings: Settings, receipts: SessionReceipts | None) -> Provider | None:
    """Our JSON gateway, with its own failover gateway (PICASSE_SMS_FAILOVER_URL) if set."""
    from picasse.adapters.providers.receipts import RECEIPTS_PATH
    from picasse.adapters.providers.sms import sms_from_settings

    return sms_from_settings(
        settings.sms_gateway_url,
        settings.sms_gateway_token,
        settings.sms_failover_url,
        settings.sms_failover_token,
        settings.public_url + RECEIPTS_PATH,
    )


def _voice_gateway(settings: Settings, receipts: SessionReceipts | None) -> Provider | None:
    if not settings.voice_url:
        return None
    if not settings.voice_token:
        raise ValueError("PICASSE_VOICE_URL needs PICASSE_VOICE_TOKEN")
    from picasse.adapters.providers.receipts import RECEIPTS_PATH
    from picasse.adapters.providers.voice import HttpVoiceGateway

    return HttpVoiceGateway(
        "voice",
        settings.voice_url,
        settings.voice_token,
        callback_url=settings.public_url + RECEIPTS_PATH,
    )


def _twilio(channel: str) -> Builder:
    """Twilio's SMS ("sms") or calls ("voice")."""

    def build(settings: Settings, receipts: SessionReceipts | None) -> Provider | None:
        account = (settings.twilio_account_sid, settings.twilio_auth_token, settings.twilio_from)
        if not any(account):
            return None
        if not all(account):
            raise ValueError(
                "Twilio needs PICASSE_TWILIO_ACCOUNT_SID, PICASSE_TWILIO_AUTH_TOKEN and"
                " PICASSE_TWILIO_FROM"
            )
        sid, token, sender = account
        assert sid and token and sender
        if channel == "voice" and sender.startswith("MG"):
            raise ValueError("Twilio calls need PICASSE_TWILIO_FROM to be a number")
        from picasse.adapters.providers.twilio import TwilioClient, TwilioSms, TwilioVoice

        kind = TwilioVoice if channel == "voice" else TwilioSms
        client = TwilioClient(sid, token, base_url=settings.twilio_base_url)
        return kind(client, sender=sender, public_url=settings.public_url)

    return build


# The provider kinds of each channel, in the default failover order; a kind that is not
# configured (its builder answers None) is left out of the default. A new kind is one
# entry here. A provider that keeps a session may say whether it is bound through a
# `bound` attribute: the overview shows it.
SMS_KINDS: dict[str, Builder] = {
    "smpp": _smpp,
    "twilio": _twilio("sms"),
    "gateway": _sms_gateway,
}
VOICE_KINDS: dict[str, Builder] = {
    "twilio": _twilio("voice"),
    "gateway": _voice_gateway,
}


def _chain(
    settings: Settings,
    variable: str,
    order: tuple[str, ...] | None,
    kinds: Mapping[str, Builder],
    *,
    name: str,
    receipts: SessionReceipts | None,
) -> Provider | None:
    """The channel's providers in failover order: `order` as given (each must be a known
    kind and configured), or every configured kind in the default order."""
    if order is not None:
        unknown = [kind for kind in order if kind not in kinds]
        if unknown:
            raise SettingsError(
                f"{variable}: unknown provider {unknown[0]!r} (known: {', '.join(kinds)})"
            )
        if len(set(order)) != len(order):
            raise SettingsError(f"{variable} names a provider twice")
    wanted = kinds.keys() if order is None else order  # build (and open) only those used
    try:
        built = {kind: kinds[kind](settings, receipts) for kind in wanted}
    except ValueError as error:
        raise SettingsError(f"delivery provider settings: {error}") from None
    if order is None:
        chosen = [provider for provider in built.values() if provider is not None]
    else:
        missing = [kind for kind in order if built[kind] is None]
        if missing:
            raise SettingsError(f"{variable} names {missing[0]!r}, which is not configured")
        chosen = [provider for kind in order if (provider := built[kind]) is not None]
    from picasse.adapters.providers.sms import in_order

    return in_order(chosen, name=name)


def providers_from(
    settings: Settings,
    counters: ProviderCounters | None = None,
    *,
    receipts: SessionReceipts | None = None,
) -> dict[str, Provider]:
    """One provider per channel: those configured, the development Maildir for the rest.
    With `counters` (a worker's), each SMS and voice provider's answers are counted.
    `receipts` records the receipts that providers speaking a session protocol (SMPP)
    receive themselves, rather than through our receipt webhook."""
    from picasse.adapters.providers.health import counted
    from picasse.adapters.providers.maildir import MaildirProvider
    from picasse.adapters.providers.smtp import SmtpProvider

    try:
        email = (
            SmtpProvider.from_url(settings.smtp_url, sender=settings.smtp_sender)
            if settings.smtp_url
            else None
        )
    except ValueError as error:
        raise SettingsError(f"delivery provider settings: {error}") from None
    chosen: dict[str, Provider | None] = {
        "email": email,
        "sms": _chain(
            settings,
            "PICASSE_SMS_PROVIDERS",
            settings.sms_providers,
            SMS_KINDS,
            name="sms",
            receipts=receipts,
        ),
        "voice": _chain(
            settings,
            "PICASSE_VOICE_PROVIDERS",
            settings.voice_providers,
            VOICE_KINDS,
            name="voice",
            receipts=receipts,
        ),
    }
    if counters is not None:
        for channel in ("sms", "voice"):
            if (provider := chosen[channel]) is not None:
                chosen[channel] = counted(provider, counters, channel)
    development: MaildirProvider | None = None  # one, made only if a channel has none
    providers = {}
    for channel, provider in chosen.items():
        if provider is None:
            if development is None:
                development = MaildirProvider(settings.maildir)
            provider = development
        providers[channel] = provider
    return providers


def provider_health_table(messages: Messages) -> ProviderHealthTable:
    """The providers' health table (workers write it, the overview reads it) on the
    messages pool: no connection of its own."""
    from picasse.adapters.postgres.provider_health import ProviderHealthTable

    datastore = factory_of(messages).datastore
    table = ProviderHealthTable(lambda: datastore.transaction(commit=True), datastore.schema)
    table.create_table()
    return table


def smsc_id_table(app: Messages | Privacy, clock: Clock) -> SmscIdTable:
    """The SMPP provider's record of SMSC ids (workers write and read it, the retention
    job prunes it) on the application's pool: no connection of its own."""
    from picasse.adapters.postgres.smsc_ids import SmscIdTable

    datastore = factory_of(app).datastore
    table = SmscIdTable(lambda: datastore.transaction(commit=True), datastore.schema, clock)
    table.create_table()
    return table


def check_providers(settings: Settings) -> None:
    """SettingsError unless the delivery provider settings make providers (which are then
    closed again): `up` checks before it starts workers that would fail on them."""
    asyncio.run(close_providers(providers_from(settings)))


async def close_providers(providers: Mapping[str, Provider]) -> None:
    """Closes each provider once (channels may share one, like the development Maildir)."""
    await asyncio.gather(
        *(p.close() for p in {id(p): p for p in providers.values()}.values()),
        return_exceptions=True,
    )


def twilio_callbacks(settings: Settings) -> TwilioCallbacks | None:
    """What checks Twilio's signatures on its callbacks, when a Twilio account is set."""
    if not settings.twilio_auth_token:
        return None
    from picasse.adapters.providers.twilio import TwilioCallbacks

    return TwilioCallbacks(settings.twilio_auth_token, settings.public_url)


def _telephony(settings: Settings) -> HttpTelephony | None:
    if not settings.telephony_url:
        return None
    from picasse.adapters.providers.telephony import HttpTelephony

    return HttpTelephony(settings.telephony_url, settings.telephony_token or "")


def open_conferences(settings: Settings, messages: Messages) -> Conferences:
    """Conferencing on the messages application's store and clock (it invites through it)."""
    from picasse.domain.conferencing import Conferences

    return Conferences(
        clock=messages.clock,
        pseudonyms=messages.pseudonyms,
        messages=messages,
        telephony=_telephony(settings),
        sharing=messages,
    )


def recording_eraser(settings: Settings, app: Privacy) -> Conferences:
    """Conferencing on an erasing process's store, to ask the provider to delete
    recordings before the keys sealing their references go (it invites nobody)."""
    from picasse.domain.conferencing import Conferences

    return Conferences(
        clock=clock_from(settings),
        pseudonyms=KeyedPseudonyms(read_master_key(settings.master_key_path)),
        messages=None,
        telephony=_telephony(settings),
        sharing=app,
    )


def telephony_tokens(settings: Settings) -> dict[str, str]:
    """The telephony provider's name → the token its reports are signed with."""
    from picasse.adapters.providers.telephony import PROVIDER_NAME as TELEPHONY_PROVIDER

    token = settings.telephony_token
    return {TELEPHONY_PROVIDER: token} if token else {}


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
