"""`picasse api`: serves the HTTP API with uvicorn until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from eventsourcing.postgres import PostgresTrackingRecorder

from picasse.adapters.group_commit import GroupCommit
from picasse.adapters.http.acklinks import ack_links_from
from picasse.adapters.http.app import HttpDeps, attendance_on, create_app
from picasse.adapters.http.auth import CallerCache
from picasse.adapters.http.health import HealthProbe, JobQueueProbe, WatchedView
from picasse.adapters.master_key import read_master_key
from picasse.adapters.nats.reconciler import ReconcilerLog
from picasse.adapters.postgres.sessions import PostgresAuthStore
from picasse.adapters.postgres.store import factory_of, recorder_of
from picasse.adapters.postgres.webhook_log import WebhookLog
from picasse.adapters.pseudonyms import KeyedPseudonyms
from picasse.domain.api_keys import ApiKeys
from picasse.domain.clock import Clock
from picasse.domain.messaging import Messages
from picasse.domain.sites import Sites
from picasse.domain.visitors import Visitors
from picasse.domain.webhooks import Webhooks
from picasse.runners import listening, relay, servers
from picasse.runners.processes import connect_nats, run_loop
from picasse.runners.project import VIEWS, view_on_pool_of
from picasse.runners.settings import Settings, SettingsError
from picasse.runners.signals import StopRequest, stop_requested
from picasse.runners.wiring import (
    ensure_master_key,
    job_topology,
    open_accounts,
    open_conferences,
    open_messages,
    provider_health_table,
    receipt_tokens,
    remember_sending,
    telephony_tokens,
    twilio_callbacks,
)

# Connections besides the messages pool: the sessions pool and the notice listener. Accounts
# and API keys share the messages pool: a request reads its key and its user (unless the
# API keeps its caller), and a pool of their own, kept small, was where requests queued.
OTHER_CONNECTIONS = 2
SMALL_POOL = 1  # sessions: one short query per request
# How long a request waits for a pooled connection before it is answered 503; the
# library tries a failed database call a few times more, so keep it short.
POOL_TIMEOUT = 1  # seconds; the library takes whole seconds only
GRACEFUL_SHUTDOWN = 10  # seconds open requests get to finish after SIGTERM


def main(settings: Settings, *, tls_cert: Path | None = None, tls_key: Path | None = None) -> int:
    """Serve until SIGTERM/SIGINT (exit 0); one line on stdout once the socket listens."""
    if (tls_cert is None) != (tls_key is None):
        raise SettingsError("TLS needs both PICASSE_TLS_CERT and PICASSE_TLS_KEY")
    with stop_requested() as stop:
        listener = (
            listening.bind(settings.http_host, settings.http_port)
            if settings.http_listen_fd is None
            else listening.inherited(settings.http_listen_fd)  # up's: kept through restarts
        )
        try:
            database_url = servers.postgres_url(settings)
            ensure_master_key(settings)
            with http_deps(settings, database_url, secure=tls_cert is not None) as deps:
                app = create_app(deps)
                config = uvicorn.Config(
                    app,
                    ssl_certfile=tls_cert,
                    ssl_keyfile=tls_key,
                    # Access logs hold client IPs: usage tracking, which we do not do (R6).
                    access_log=False,
                    # The app settles the client's address itself, from the proxies the
                    # operator trusts (adapters/http/clients.py); uvicorn would believe
                    # any X-Forwarded-For from 127.0.0.1.
                    proxy_headers=False,
                    log_config=None,
                    log_level="warning",
                    server_header=False,
                    timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
                )
                try:
                    config.load()  # reads the certificate: a bad one is a setting, not a crash
                except OSError as error:
                    raise SettingsError(f"TLS certificate or key: {error}") from None
                where = f"{'https' if tls_cert else 'http'}://{listening.address(listener)}"
                if not stop.requested:
                    threads = max(1, settings.db_connections)
                    run_loop(_serve(_Server(config), listener, where, stop, threads))
        finally:
            listener.close()
    return 0


@contextmanager
def http_deps(
    settings: Settings, database_url: str, *, secure: bool = False, clock: Clock | None = None
) -> Iterator[HttpDeps]:
    """Everything the app needs, opened on `settings.database_schema`; closed on leaving.

    `secure`: served over TLS here; a public URL with https means TLS at a proxy in front.
    `clock`: the one clock of sessions, throttling and sending (default: `clock_from(settings)`).
    """
    master_key = read_master_key(settings.master_key_path)
    with ExitStack() as stack:
        # The messages pool also serves the views and the health checks.
        messages = open_messages(
            settings,
            database_url,
            pool_size=max(1, settings.db_connections - OTHER_CONNECTIONS),
            pool_timeout=POOL_TIMEOUT,
            clock=clock,
        )
        stack.callback(messages.close)
        # Concurrent sends are written together, one transaction per group, each request
        # answered after its group's commit.
        messages.saving = GroupCommit(messages)
        remember_sending(messages)
        pseudonyms = KeyedPseudonyms(master_key)
        accounts = open_accounts(settings, database_url, clock=messages.clock, sharing=messages)
        api_keys = ApiKeys(sharing=messages)
        auth_store = PostgresAuthStore(
            database_url, schema=settings.database_schema, pool_size=SMALL_POOL
        )
        stack.callback(auth_store.close)
        views = {name: view_on_pool_of(messages, name) for name in VIEWS}
        datastore = factory_of(messages).datastore
        webhook_log = WebhookLog(lambda: datastore.transaction(commit=True), datastore.schema)
        webhook_log.create_tables()
        yield HttpDeps(
            messages=messages,
            accounts=accounts,
            api_keys=api_keys,
            callers=CallerCache(messages.clock, recorder_of(messages).keys.notices),
            accounts_view=views["accounts"],
            traffic_view=views["traffic"],
            ledger_view=views["ledger"],
            invoices_view=views["invoices"],
            health=_health_probe(settings, messages, views),
            auth_store=auth_store,
            pseudonyms=pseudonyms,
            receipt_tokens=receipt_tokens(settings),
            twilio_callbacks=twilio_callbacks(settings),
            ack_links=ack_links_from(master_key, settings.public_url),
            webhooks=Webhooks(clock=messages.clock, sharing=messages),
            webhook_log=webhook_log,
            webhooks_allow_private=settings.webhooks_allow_private,
            secure_cookies=secure or settings.public_url.startswith("https://"),
            hsts=secure,
            login_tracking=settings.login_tracking,
            clock=messages.clock,
            trusted_proxies=settings.trusted_proxies,
            sites=Sites(clock=messages.clock, sharing=messages),
            visitors=Visitors(
                clock=messages.clock,
                sharing=messages,
                default_keep_days=settings.visitor_retention_days,
            ),
            attendance=attendance_on(messages, messages.clock),
            conferences=open_conferences(settings, messages),
            telephony_tokens=telephony_tokens(settings),
        )


def _health_probe(settings: Settings, messages: Messages, views: dict[str, Any]) -> HealthProbe:
    """What the overview shows of the platform: views' and relay's lag, the job queue.

    The queue is asked only when NATS is configured (as `picasse up` does for its API):
    serving pages is no reason for this process to start an embedded NATS of its own.
    """
    nats_url = settings.nats_url
    return HealthProbe(
        log=recorder_of(messages),
        views=[WatchedView(name, view, VIEWS[name][0].topics) for name, view in views.items()],
        relay=PostgresTrackingRecorder(
            factory_of(messages).datastore,
            tracking_table_name=relay.TRACKING_TABLE,
        ),
        jobs=JobQueueProbe(
            lambda: connect_nats(nats_url, "picasse-api-health", tls_ca=settings.nats_tls_ca),
            job_topology(settings),
        )
        if nats_url
        else None,
        # Read over the log's own connections: only its table's name is needed.
        reconciler=ReconcilerLog(
            {},
            factory_of(messages).datastore.schema,
            relay_tracking_table=relay.TRACKING_TABLE,
        ),
        clock=messages.clock,
        data_dir=settings.data_dir,
        providers=provider_health_table(messages),
    )


async def _serve(
    server: uvicorn.Server, listener: socket.socket, where: str, stop: StopRequest, threads: int
) -> None:
    # The one pool of threads for the API's blocking work: Litestar runs sync handlers in
    # the loop's default executor, and the middleware and pages use asyncio.to_thread,
    # which takes the same. Its own size (CPUs + 4) let 6 requests at a time at the
    # database on 2 cores while connections sat idle; as many threads as connections.
    executor = ThreadPoolExecutor(threads, thread_name_prefix="picasse-api")
    asyncio.get_running_loop().set_default_executor(executor)
    serving = asyncio.create_task(server.serve(sockets=[listener]))

    async def exit_on_stop() -> None:
        await stop.stopped()
        server.should_exit = True  # open requests get GRACEFUL_SHUTDOWN seconds

    stopping = asyncio.create_task(exit_on_stop())
    try:
        while not server.started and not serving.done():
            await asyncio.sleep(0.02)
        if server.started and not server.should_exit:
            print(f"api listening on {where}", flush=True)
        await serving
    finally:
        stopping.cancel()


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the process's one StopRequest stops it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
