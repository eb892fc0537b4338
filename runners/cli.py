"""The `picasse` command: every subcommand goes through the domain's applications."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TypeVar
from uuid import UUID

import msgspec
import psycopg
from eventsourcing.persistence import PersistenceError

from picasse.adapters.archive import ArchiveError
from picasse.adapters.master_key import MasterKeyError
from picasse.adapters.postgres.keystore import TenantErased
from picasse.adapters.postgres.store import StoreSettingRefused, factory_of, recorder_of
from picasse.domain.errors import DomainError, InvalidInput
from picasse.domain.personal import Erased
from picasse.domain.values import Role
from picasse.runners.logs import configure_logging
from picasse.runners.settings import Settings, SettingsError

# A command imports the applications it opens (in wiring) and the modules of its own group
# when it runs: one command should not load every application's event classes.
if TYPE_CHECKING:
    from rich.console import Console

    from picasse.domain.accounts import Accounts, IssuedLink
    from picasse.domain.messaging import Messages


class _Closable(Protocol):
    def close(self) -> None: ...


A = TypeVar("A", bound=_Closable)
R = TypeVar("R")

EXIT_REFUSED = 1  # the domain said no: bad input, conflict, not found
EXIT_USAGE = 2  # argparse's own code for a malformed command line
EXIT_ENVIRONMENT = 3  # the platform cannot run here: no database, no master key, …

_console: Console | None = None


def _out() -> Console:
    """Standard output's console (tables, rich text), made on first use: rich takes ~30 ms
    to import, which the commands that print none need not pay."""
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console(highlight=False, soft_wrap=True, markup=False)  # values as given
        if not _console.is_terminal and "COLUMNS" not in os.environ:
            _console.width = PIPED_WIDTH  # piped or redirected: nothing cut to 80 columns
    return _console


PIPED_WIDTH = 1000
UUID_WIDTH = 36


def _table(*headers: str, ids: tuple[str, ...] = ("id",)) -> Any:
    """A table for standard output whose id columns (`ids`, UUIDs) are never cut short or
    wrapped on a narrow terminal, so that they can be copied into the next command: the
    other columns give way."""
    from rich.table import Column, Table

    return Table(
        *(Column(h, no_wrap=True, min_width=UUID_WIDTH) if h in ids else h for h in headers)
    )


class CommandFailed(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _uuid(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an id: {text!r}") from None


def _role(text: str) -> Role:
    try:
        return Role(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"unknown role {text!r} (choose from {', '.join(r.value for r in Role)})"
        ) from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return value


def _datetime(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date-time: {text!r}") from None


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _datetime_utc(text: str) -> datetime:
    moment = _datetime(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _json(value: Any) -> None:
    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")


def _read_password() -> str:
    line = sys.stdin.readline()
    password = line[:-1] if line.endswith("\n") else line
    if not password:
        raise InvalidInput("password: nothing was given on standard input", field="password")
    return password


@contextmanager
def _opened(open_app: Callable[[Settings, str], A], settings: Settings) -> Iterator[A]:
    """An application on the configured (or embedded) database, closed afterwards."""
    from picasse.runners import servers, wiring

    database_url = servers.postgres_url(settings)
    wiring.reach_database(database_url)
    wiring.ensure_master_key(settings)
    app = open_app(settings, database_url)
    try:
        yield app
    finally:
        app.close()


def _accounts(settings: Settings) -> AbstractContextManager[Accounts]:
    from picasse.runners.wiring import open_accounts

    return _opened(open_accounts, settings)


def _messages(settings: Settings) -> AbstractContextManager[Messages]:
    from picasse.runners.wiring import open_messages

    return _opened(open_messages, settings)


# Commands


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from picasse.runners import children, up
    from picasse.runners.wiring import check_providers, clock_from

    clock_from(settings)  # a test clock on an unmarked data dir: refused before anything starts
    check_providers(settings)  # unknown or unconfigured providers: refused before anything starts
    settings = msgspec.structs.replace(settings, workers=args.workers or settings.workers)
    children.connection_shares(settings.db_connections, settings.workers)  # refused if too few

    services = [
        # First, while `up` is the only process using the database: this one looks once.
        children.first_administrator,
        children.relay,
        children.projections,
        children.scheduler,
        *(children.worker(n + 1) for n in range(settings.workers)),
        children.api,  # the last to start, the first to stop
    ]
    return up.main(settings, extra_services=services, serve_http=True)


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    from picasse.runners import api

    return api.main(settings, tls_cert=settings.tls_cert, tls_key=settings.tls_key)


def cmd_scheduler(args: argparse.Namespace, settings: Settings) -> int:
    from picasse.runners import scheduler_process

    return scheduler_process.main(settings)


def cmd_relay(args: argparse.Namespace, settings: Settings) -> int:
    from picasse.runners import relay

    return relay.main(settings)


def cmd_project(args: argparse.Namespace, settings: Settings) -> int:
    from picasse.runners import project

    return project.main(settings, rebuild=args.rebuild, once=args.once)


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from picasse.runners import worker

    return worker.main(settings, concurrency=args.concurrency, ack_wait=args.ack_wait)


def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from picasse.runners import reconcile

    try:
        return reconcile.main(settings, grace=args.grace)
    except reconcile.Refused as refused:
        raise CommandFailed(str(refused), EXIT_REFUSED) from None


def cmd_messages_send(args: argparse.Namespace, settings: Settings) -> int:
    from picasse.domain.messaging import SendRequest

    request = SendRequest(
        channel=args.channel,
        to=args.to or [],
        group=args.group,
        body=args.body,
        subject=args.subject,
        priority=args.priority,
        schedule_at=args.schedule_at,
        idempotency_key=args.idempotency_key,
        ack_within_minutes=args.ack_within,
        escalation_groups=args.escalate_to or [],
    )
    with _messages(settings) as messages:
        message_id = messages.send(args.customer, request)
    if args.json:
        _json({"id": message_id})
    else:
        print(message_id)
    return 0


def cmd_messages_show(args: argparse.Namespace, settings: Settings) -> int:
    from rich.table import Table

    from picasse.domain.access import OPERATOR, Viewer

    viewer = OPERATOR
    if args.reveal_content:
        if not args.as_login or not args.password_stdin:
            raise InvalidInput(
                "--reveal-content needs --as LOGIN --password-stdin: a user of the message's customer"
            )
        with _accounts(settings) as accounts:
            user = accounts.authenticate(args.as_login, _read_password())
        viewer = Viewer(role=user.role, customer_id=user.customer_id, user_id=user.id)
    with _messages(settings) as messages:
        details = messages.message(args.id, viewer, reveal_content=args.reveal_content)
    if args.json:
        _json(details)
        return 0
    _out().print(
        f"message {details.id}  {details.channel.value}  {details.priority.value}"
        f"  requested {details.requested_at.isoformat(timespec='seconds')}"
    )
    if details.body is not None:
        _out().print(f"body: {_show(details.body)}")
    table = Table("#", "to", "status", "attempts", "reason")
    for d in details.deliveries:
        table.add_row(
            str(d.index),
            _show(d.to) if d.to is not None else "-",
            d.status.value,
            str(d.attempts),
            d.reason or "",
        )
    _out().print(table)
    return 0


def cmd_groups_set(args: argparse.Namespace, settings: Settings) -> int:
    with _messages(settings) as messages:
        group = messages.create_group(args.customer, args.name, args.member)
    print(group)
    return 0


def cmd_groups_list(args: argparse.Namespace, settings: Settings) -> int:
    with _messages(settings) as messages:
        groups = messages.groups(args.customer)
    if args.json:
        _json([{"id": g.id, "name": g.name, "member_count": len(g.members)} for g in groups])
        return 0
    table = _table("id", "name", "members")
    for g in groups:
        table.add_row(str(g.id), _show(g.name), str(len(g.members)))
    _out().print(table)
    return 0


def cmd_groups_show(args: argparse.Namespace, settings: Settings) -> int:
    with _messages(settings) as messages:
        group = messages.group(args.customer, messages.group_id_of(args.customer, args.group))
    if args.json:
        _json(group)
        return 0
    _out().print(f"group {group.id}  {_show(group.name)}  {len(group.members)} members")
    for member in group.members:
        _out().print(f"  {_show(member)}")
    return 0


def cmd_groups_delete(args: argparse.Namespace, settings: Settings) -> int:
    with _messages(settings) as messages:
        messages.delete_group(args.customer, messages.group_id_of(args.customer, args.group))
    return 0


def cmd_customers_register(args: argparse.Namespace, settings: Settings) -> int:
    with _accounts(settings) as accounts:
        customer_id = accounts.register_customer(
            organisation=args.org,
            contact_name=args.contact_name,
            email=args.email,
            phone=args.phone,
            billing_address=args.billing_address,
        )
    if args.json:
        _json({"id": customer_id})
    else:
        print(customer_id)
    return 0


def _show(value: Any) -> str:
    return "[erased]" if isinstance(value, Erased) else str(value)


def cmd_customers_show(args: argparse.Namespace, settings: Settings) -> int:
    from rich.table import Table

    with _accounts(settings) as accounts:
        customer = accounts.customer(args.id)
    if args.json:
        _json(customer)
        return 0
    table = Table(show_header=False, box=None)
    for label, value in (
        ("id", customer.id),
        ("organisation", customer.organisation),
        ("contact name", customer.contact.name),
        ("e-mail", customer.contact.email),
        ("phone", customer.contact.phone),
        ("billing address", customer.billing_address),
        ("subscription", customer.subscription.value),
        ("plan", customer.plan or "-"),
        ("registered", customer.registered_at),
    ):
        table.add_row(label, _show(value))
    _out().print(table)
    return 0


def _every_row(
    settings: Settings, view_name: str, page: Callable[[Any, R | None], list[R]]
) -> list[R]:
    """Every row a view lists, page by page (`page(view, last row of the previous page)`),
    the view brought up to date first: it holds everything recorded so far."""
    from picasse.projections.accounts import PAGE_SIZE
    from picasse.runners import servers, wiring
    from picasse.runners.project import live_views

    database_url = servers.postgres_url(settings)
    wiring.reach_database(database_url)
    wiring.ensure_master_key(settings)
    found: list[R] = []
    with live_views(settings, database_url, [view_name]) as views:
        views.catch_up()
        view, last = views.view(view_name), None
        while True:
            rows = page(view, last)
            found += rows
            if len(rows) < PAGE_SIZE:
                return found
            last = rows[-1]


def cmd_customers_list(args: argparse.Namespace, settings: Settings) -> int:
    def page(view: Any, last: Any) -> list[Any]:  # in the order they were registered
        after = None if last is None else (last.registered_at, last.id)
        return list(view.customer_page(after=after))

    found = [row for row in _every_row(settings, "accounts", page) if args.all or not row.erased]
    if args.json:
        _json(
            [
                {"id": row.id, "organisation": row.organisation, "subscription": row.subscription,
                 "plan": row.plan, "registered_at": row.registered_at, "erased": row.erased}
                for row in found
            ]
        )  # fmt: skip
        return 0
    table = _table("id", "organisation", "subscription", "plan", "registered")
    for row in found:
        table.add_row(
            str(row.id),
            "[erased]" if row.organisation is None else row.organisation,
            row.subscription,
            row.plan or "-",
            row.registered_at.isoformat(timespec="seconds"),
        )
    _out().print(table)
    return 0


def cmd_customers_change(args: argparse.Namespace, settings: Settings) -> int:
    if not any((args.contact_name, args.email, args.phone, args.billing_address)):
        raise InvalidInput("nothing to change: give at least one of the options")
    with _accounts(settings) as accounts:
        accounts.change_contact(
            args.id,
            contact_name=args.contact_name,
            email=args.email,
            phone=args.phone,
            billing_address=args.billing_address,
        )
    return 0


def cmd_customers_terminate(args: argparse.Namespace, settings: Settings) -> int:
    from picasse.runners import gdpr

    return gdpr.terminate_main(
        settings, args.id, args.out, export=not args.no_export, force=args.force
    )


def cmd_gdpr_export(args: argparse.Namespace, settings: Settings) -> int:
    from picasse.runners import gdpr

    return gdpr.export_main(settings, args.customer, args.out, force=args.force)


def cmd_gdpr_verify_statement(args: argparse.Namespace, settings: Settings) -> int:
    from picasse.runners import gdpr

    try:
        return gdpr.verify_statement_main(settings, args.file)
    except gdpr.StatementInvalid as error:
        raise CommandFailed(f"statement does not verify: {error}", EXIT_REFUSED) from None


def cmd_gdpr_erase(args: argparse.Namespace, settings: Settings) -> int:
    from picasse.runners import gdpr

    return gdpr.erase_main(
        settings, customer_id=args.customer, contact=args.contact, login=args.login
    )


def cmd_gdpr_disclose(args: argparse.Namespace, settings: Settings) -> int:
    from picasse.runners import gdpr

    return gdpr.disclose_main(
        settings,
        args.customer,
        start=args.start,
        end=args.end,
        authority=args.authority,
        legal_basis=args.legal_basis,
        out=args.out,
        force=args.force,
    )


def cmd_retention_run(args: argparse.Namespace, settings: Settings) -> int:
    from picasse.runners import retention

    return retention.main(settings, dry_run=args.dry_run, as_of=args.as_of)


def cmd_customers_subscribe(args: argparse.Namespace, settings: Settings) -> int:
    with _accounts(settings) as accounts:
        accounts.start_subscription(args.id, args.plan)
    return 0


def cmd_users_add(args: argparse.Namespace, settings: Settings) -> int:
    customer_role = not args.role.is_platform
    if customer_role or args.customer is not None:
        # A customer's user chooses their own password through a link: staff never know it.
        if args.password_stdin:
            raise InvalidInput(
                "--password-stdin is for Picasse staff accounts only: a customer's user gets"
                " a set-password link at --email",
                field="password",
            )
        if not args.email:
            raise InvalidInput(
                "give the user's e-mail address with --email: the set-password link goes there",
                field="email",
            )
        if args.customer is None:
            raise InvalidInput(f"role {args.role.value} needs a customer", field="customer")
        with _accounts(settings) as accounts:
            link = accounts.invite_user(
                customer_id=args.customer, login=args.login, role=args.role, email=args.email
            )
        _mail_link(settings, link)
        user_id = link.user_id
    else:
        if args.email:
            raise InvalidInput(
                "--email is for a customer's users; a staff account's password is given"
                " with --password-stdin",
                field="email",
            )
        if not args.password_stdin:
            raise InvalidInput("give the password on standard input with --password-stdin")
        password = _read_password()
        with _accounts(settings) as accounts:
            user_id = accounts.add_user(
                customer_id=None, login=args.login, role=args.role, password=password
            )
    if args.json:
        _json({"id": user_id, "login": args.login.strip().lower(), "role": args.role.value})
    else:
        print(user_id)
    return 0


def _mail_link(settings: Settings, link: IssuedLink) -> None:
    """Sends the set-password link to the user, the way every mail goes (the pipeline)."""
    from picasse.adapters.password_links import mail_password_link

    with _messages(settings) as messages:
        mail_password_link(messages, _public_url(settings), link)


def _public_url(settings: Settings) -> str:
    """Where links in mail should point: where the `up` running on this data dir is
    reached (it may listen elsewhere than this shell's settings say), else the settings'."""
    from picasse.adapters.up_state import read_state

    state = read_state(settings.data_dir)
    return state.public_url if state and state.public_url else settings.public_url


def cmd_users_passwd(args: argparse.Namespace, settings: Settings) -> int:
    with _accounts(settings) as accounts:
        user = accounts.user_by_login(args.login)
        if user.customer_id is not None:  # a customer's user: a new link, sent to them
            if args.password_stdin:
                raise InvalidInput(
                    "--password-stdin is for Picasse staff accounts only: a customer's user"
                    " gets a new set-password link at their e-mail address",
                    field="password",
                )
            link = accounts.reset_password(args.login)
        else:
            if not args.password_stdin:
                raise InvalidInput("give the new password on standard input with --password-stdin")
            user_id = accounts.set_password(args.login, _read_password())
            _end_sessions(settings, user_id)
            return 0
    _mail_link(settings, link)
    print(
        f"a set-password link was sent to the user (valid until {link.expires_at:%Y-%m-%d %H:%M} UTC)"
    )
    return 0


def _end_sessions(settings: Settings, user_id: UUID) -> None:
    """A new password: every session of the user ends (API keys stay until revoked)."""
    ended = _end_sessions_of(settings, user_id)
    print(f"password set; {ended} session(s) ended; API keys stay valid until revoked")


def _end_sessions_of(settings: Settings, user_id: UUID) -> int:
    from picasse.adapters.postgres.sessions import PostgresAuthStore
    from picasse.runners import servers

    store = PostgresAuthStore(
        servers.postgres_url(settings), schema=settings.database_schema, pool_size=1
    )
    try:
        store.create_tables()
        return store.end_sessions_of(user_id)
    finally:
        store.close()


def cmd_users_disable(args: argparse.Namespace, settings: Settings) -> int:
    with _accounts(settings) as accounts:
        user_id = accounts.disable_user(args.login)
    ended = _end_sessions_of(settings, user_id)
    print(f"user disabled; {ended} session(s) ended; their API keys open nothing while disabled")
    return 0


def cmd_users_enable(args: argparse.Namespace, settings: Settings) -> int:
    with _accounts(settings) as accounts:
        accounts.enable_user(args.login)
    print("user enabled: they can log in again, and their API keys work again")
    return 0


def cmd_users_show(args: argparse.Namespace, settings: Settings) -> int:
    from rich.table import Table

    with _accounts(settings) as accounts:
        user = accounts.user_by_login(args.login)
    if args.json:
        _json(user)
    else:
        table = Table(show_header=False, box=None)
        for label, value in (
            ("id", user.id),
            ("login", user.login),
            ("role", user.role.value),
            ("customer", user.customer_id or "- (Picasse staff)"),
            ("disabled", "yes" if user.disabled else "no"),
        ):
            table.add_row(label, _show(value))
        _out().print(table)
    return 0


def cmd_users_list(args: argparse.Namespace, settings: Settings) -> int:
    from picasse.projections.accounts import PAGE_SIZE

    def page(view: Any, last: Any) -> list[Any]:  # in the order they were added
        after = None if last is None else (last.added_at, last.id)
        return list(
            view.users(customer_id=args.customer, platform=args.staff, after=after, limit=PAGE_SIZE)
        )

    found = _every_row(settings, "accounts", page)
    if args.json:
        _json(found)
        return 0
    table = _table("id", "login", "role", "disabled", "added", "e-mail")
    for row in found:
        table.add_row(
            str(row.id), "[erased]" if row.login is None else row.login, row.role,
            "yes" if row.disabled else "no", row.added_at.isoformat(timespec="seconds"),
            row.email or "-",
        )  # fmt: skip
    _out().print(table)
    return 0


def cmd_audit_verify(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from picasse.adapters.postgres.audit import verify_chains

    with _accounts(settings) as accounts:
        datastore = factory_of(accounts).datastore
        table = recorder_of(accounts).events_table_name
        err = Console(stderr=True)
        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), console=err, transient=True
        ) as bar:
            task = bar.add_task("verifying hash chains…")
            report = verify_chains(
                datastore,
                table,
                progress=lambda n: bar.update(task, description=f"verified {n} events…"),
            )
    if args.json:
        _json(report)
    if report.broken is not None:
        b = report.broken
        raise CommandFailed(
            f"broken hash chain at notification {b.notification_id}"
            f" ({b.originator_id} v{b.originator_version}): {b.reason}",
            EXIT_REFUSED,
        )
    if not args.json:
        print(
            f"ok: {report.events} events in {report.aggregates} aggregates, every hash chain intact"
        )
    return 0


def cmd_audit_replay(args: argparse.Namespace, settings: Settings) -> int:
    from picasse.runners import audit

    if args.start is not None and args.end is not None and args.end < args.start:
        raise InvalidInput("period: 'to' lies before 'from'", field="to")
    start, end = audit.period(args.start, args.end)
    return audit.replay_main(
        settings, customer=args.customer, start=start, end=end, as_json=args.json
    )


# The command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="picasse",
        description=(
            "Picasse: a GDPR-first, event-sourced communications platform. With no"
            " configuration everything runs on embedded servers under PICASSE_DATA_DIR"
            " (default ./.picasse); PICASSE_DATABASE_URL and PICASSE_NATS_URL point it at"
            " external PostgreSQL and NATS servers instead."
        ),
        epilog="Exit status: 0 done, 1 refused (the reason is printed), 2 bad command line, 3 cannot run here.",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    up = commands.add_parser(
        "up",
        help="run the whole platform until Ctrl-C / SIGTERM",
        description="Start PostgreSQL and NATS (embedded unless configured) and the platform's processes; stop them all cleanly on Ctrl-C or SIGTERM.",
    )
    up.add_argument(
        "--workers",
        type=_positive,
        metavar="N",
        help="delivery worker processes (default 1, or PICASSE_WORKERS)",
    )
    up.set_defaults(run=cmd_up)

    api = commands.add_parser(
        "api",
        help="serve the HTTP API and pages",
        description="Serve the HTTP API on PICASSE_HTTP_HOST:PICASSE_HTTP_PORT (default 127.0.0.1:8000), over TLS when PICASSE_TLS_CERT and PICASSE_TLS_KEY name a certificate and its key. Prints one line once it listens; SIGTERM or Ctrl-C lets open requests finish, then exits.",
    )
    api.set_defaults(run=cmd_api)

    relay = commands.add_parser(
        "relay",
        help="publish delivery jobs from the event log to NATS",
        description="Follow the event log and publish one job per queued delivery to the DELIVERIES stream, exactly once; resumes where it stopped. SIGTERM stops it cleanly.",
    )
    relay.set_defaults(run=cmd_relay)

    scheduler = commands.add_parser(
        "scheduler",
        help="run the periodic jobs (retention, …) when they are due",
        description="Run every periodic job of the platform when it is due on the platform's clock: retention hourly (destroys traffic and content keys of months past PICASSE_TRAFFIC_RETENTION_MONTHS). Each job runs in one process only, however many schedulers run; a failing job is retried with a back-off and stops nothing else. SIGTERM stops it cleanly. `picasse up` runs one.",
    )
    scheduler.set_defaults(run=cmd_scheduler)

    project = commands.add_parser(
        "project",
        help="keep the views (accounts, traffic, privacy ledger) up to date",
        description="Follow the event log into the views the API and dashboard read. Each view commits its rows and its position together, so a restart resumes exactly. --rebuild empties one view and builds it again from the whole log, with a progress bar.",
    )
    project.add_argument(
        "--rebuild",
        metavar="VIEW",
        help="rebuild this view from the log: accounts, traffic or ledger",
    )
    project.add_argument(
        "--once", action="store_true", help="catch up with the log, print each view's lag, and exit"
    )
    project.set_defaults(run=cmd_project)

    worker = commands.add_parser(
        "worker",
        help="deliver queued messages (run as many as needed)",
        description="Pull delivery jobs, send them through the configured providers (or the development Maildir) and record each outcome. SIGTERM finishes the jobs in hand, then exits.",
    )
    worker.add_argument(
        "--concurrency",
        type=_positive,
        default=32,
        metavar="N",
        help="jobs handled at once (default 32)",
    )
    worker.add_argument(
        "--ack-wait",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long a job may take before NATS hands it to another worker (default 30)",
    )
    worker.set_defaults(run=cmd_worker)

    messages = commands.add_parser(
        "messages", help="send messages and follow their deliveries"
    ).add_subparsers(title="message commands", metavar="COMMAND", required=True)
    send = messages.add_parser(
        "send",
        help="send a message and print its id",
        description="Queue a message to one or more recipients (or a group). The same --idempotency-key within 24 hours returns the first message's id and sends nothing again.",
    )
    send.add_argument("--customer", type=_uuid, required=True, metavar="ID")
    send.add_argument("--channel", required=True, choices=["sms", "email", "voice"])
    send.add_argument(
        "--to",
        action="append",
        metavar="ADDR",
        help="recipient (repeat for more): +31… for sms/voice, an address for e-mail",
    )
    send.add_argument("--group", metavar="NAME", help="send to the members of this recipient group")
    send.add_argument("--body", metavar="TEXT")
    send.add_argument("--subject", metavar="TEXT", help="e-mail subject")
    send.add_argument("--priority", default="normal", choices=["normal", "alert"])
    send.add_argument(
        "--schedule-at",
        type=_datetime,
        metavar="TIME",
        help="ISO time with zone, at most 7 days ahead",
    )
    send.add_argument("--idempotency-key", metavar="K")
    send.add_argument(
        "--ack-within",
        type=_positive,
        metavar="MINUTES",
        help="alerts: recipients must acknowledge within this time",
    )
    send.add_argument(
        "--escalate-to",
        action="append",
        metavar="GROUP",
        help="alerts: group alerted next when not acknowledged (repeat for more levels)",
    )
    send.add_argument("--json", action="store_true", help='print {"id": …} as JSON')
    send.set_defaults(run=cmd_messages_send)

    message_show = messages.add_parser(
        "show",
        help="per-recipient delivery status",
        description="Show a message's deliveries. The body is shown only with --reveal-content, to a user of the message's own customer (--as LOGIN --password-stdin); never to Picasse staff (R7).",
    )
    message_show.add_argument("id", type=_uuid, metavar="ID")
    message_show.add_argument(
        "--reveal-content",
        action="store_true",
        help="show the body (the customer's own users only)",
    )
    message_show.add_argument("--as", dest="as_login", metavar="LOGIN", help="the user asking")
    message_show.add_argument(
        "--password-stdin",
        action="store_true",
        help="read that user's password from standard input",
    )
    message_show.add_argument("--json", action="store_true", help="print JSON")
    message_show.set_defaults(run=cmd_messages_show)

    groups = commands.add_parser("groups", help="recipient groups of a customer").add_subparsers(
        title="group commands", metavar="COMMAND", required=True
    )
    group_set = groups.add_parser(
        "set", help="create a group or replace its members; prints its id"
    )
    group_set.add_argument("--customer", type=_uuid, required=True, metavar="ID")
    group_set.add_argument("--name", required=True)
    group_set.add_argument(
        "--member",
        action="append",
        required=True,
        metavar="ADDR",
        help="a phone number or e-mail address (repeat)",
    )
    group_set.set_defaults(run=cmd_groups_set)
    group_list = groups.add_parser("list", help="a customer's groups: id, name, member count")
    group_list.add_argument("--customer", type=_uuid, required=True, metavar="ID")
    group_list.add_argument("--json", action="store_true", help="print JSON")
    group_list.set_defaults(run=cmd_groups_list)
    group_show = groups.add_parser("show", help="one group with its members")
    group_show.add_argument("--customer", type=_uuid, required=True, metavar="ID")
    group_show.add_argument("group", metavar="GROUP", help="the group's name or id")
    group_show.add_argument("--json", action="store_true", help="print JSON")
    group_show.set_defaults(run=cmd_groups_show)
    group_delete = groups.add_parser(
        "delete", help="delete a group: nobody is sent to it again, its name is free again"
    )
    group_delete.add_argument("--customer", type=_uuid, required=True, metavar="ID")
    group_delete.add_argument("group", metavar="GROUP", help="the group's name or id")
    group_delete.set_defaults(run=cmd_groups_delete)

    customers = commands.add_parser(
        "customers", help="register and look after customers"
    ).add_subparsers(title="customer commands", metavar="COMMAND", required=True)
    register = customers.add_parser(
        "register",
        help="register a customer and print its id",
        description="Register a customer (R1). Phone numbers must be international (+31 6 …); the contact's details are sealed as personal data.",
    )
    register.add_argument("--org", required=True, metavar="ORG", help="organisation name")
    register.add_argument(
        "--contact-name", required=True, metavar="NAME", help="contact person's name"
    )
    register.add_argument(
        "--email", required=True, metavar="EMAIL", help="contact's e-mail address"
    )
    register.add_argument(
        "--phone", required=True, metavar="PHONE", help="contact's phone number, international form"
    )
    register.add_argument(
        "--billing-address", required=True, metavar="ADDR", help="billing address"
    )
    register.add_argument("--json", action="store_true", help='print {"id": …} as JSON')
    register.set_defaults(run=cmd_customers_register)

    show = customers.add_parser(
        "show",
        help="show a customer, personal data opened",
        description="Show a customer's current state; erased personal data reads [erased].",
    )
    show.add_argument("id", type=_uuid, metavar="ID")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(run=cmd_customers_show)

    listing = customers.add_parser(
        "list",
        help="every customer: id, organisation, subscription",
        description=(
            "Every customer in the order they were registered, from the accounts view (brought"
            " up to date first). Terminated customers whose data is erased are left out unless"
            " --all is given."
        ),
    )
    listing.add_argument("--all", action="store_true", help="also the erased ones")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(run=cmd_customers_list)

    change = customers.add_parser(
        "change-contact", help="change contact details or billing address"
    )
    change.add_argument("id", type=_uuid, metavar="ID")
    change.add_argument("--contact-name", metavar="NAME")
    change.add_argument("--email", metavar="EMAIL")
    change.add_argument("--phone", metavar="PHONE")
    change.add_argument("--billing-address", metavar="ADDR")
    change.set_defaults(run=cmd_customers_change)

    subscribe = customers.add_parser("subscribe", help="start a customer's subscription")
    subscribe.add_argument("id", type=_uuid, metavar="ID")
    subscribe.add_argument("--plan", default="standard", help="plan name (default: standard)")
    subscribe.set_defaults(run=cmd_customers_subscribe)

    terminate = customers.add_parser(
        "terminate",
        help="end a subscription: export, erase, and issue a signed statement of erasure",
        description="Terminate a customer (R10): write its data to DIR/export.zip (unless --no-export), record the termination, destroy its keys (crypto-shredding), wait until every view has forgotten its personal data, and write a signed written statement of erasure to DIR/statement.json with a readable DIR/statement.html. Each step is recorded: run again, it resumes an interrupted termination at its next step; on a customer terminated already it writes the stored statement into DIR again and changes nothing else. A file in DIR is replaced only if it is a leftover partial file, or with --force.",
    )
    terminate.add_argument("id", type=_uuid, metavar="ID")
    terminate.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help="where export and statement are written",
    )
    terminate.add_argument("--no-export", action="store_true", help="do not write export.zip")
    terminate.add_argument(
        "--force",
        action="store_true",
        help="replace files in DIR that this termination did not write",
    )
    terminate.set_defaults(run=cmd_customers_terminate)

    gdpr = commands.add_parser(
        "gdpr", help="export, erasure, statements, lawful disclosure"
    ).add_subparsers(title="gdpr commands", metavar="COMMAND", required=True)
    export = gdpr.add_parser(
        "export",
        help="write a customer's personal data to a zip (portability)",
        description="Export every kind of personal data held for a customer (contact and its history, users, traffic still held) as JSON and CSV per kind with a manifest. The file is written only at --out.",
    )
    export.add_argument("--customer", type=_uuid, required=True, metavar="ID")
    export.add_argument("--out", type=Path, required=True, metavar="FILE.zip")
    export.add_argument("--force", action="store_true", help="replace FILE.zip if it exists")
    export.set_defaults(run=cmd_gdpr_export)

    verify_statement = gdpr.add_parser(
        "verify-statement",
        help="check a statement of erasure: signature and claims",
        description="Check the statement's Ed25519 signature with the platform's key, then re-check its claims against the database: the keys it names are destroyed, none exists again, no view holds the customer's personal data.",
    )
    verify_statement.add_argument("file", type=Path, metavar="FILE")
    verify_statement.set_defaults(run=cmd_gdpr_verify_statement)

    erase = gdpr.add_parser(
        "erase",
        help="erase one data subject: a user, or a customer's contact person",
        description="Destroy one data subject's key (their personal data reads [erased] from then on) and record the erasure.",
    )
    erase.add_argument("--login", metavar="LOGIN", help="erase this user's personal data")
    erase.add_argument(
        "--customer",
        type=_uuid,
        metavar="ID",
        help="with --contact: that customer's contact person",
    )
    erase.add_argument("--contact", action="store_true", help="erase the customer's contact person")
    erase.set_defaults(run=cmd_gdpr_erase)

    disclose = gdpr.add_parser(
        "disclose",
        help="hand traffic data to a competent authority, and record it (R9)",
        description="Export the customer's traffic data still held for the period to FILE and record the disclosure (who, when, to whom, on what basis; no personal data) in the log.",
    )
    disclose.add_argument("--customer", type=_uuid, required=True, metavar="ID")
    disclose.add_argument("--from", dest="start", type=_date, required=True, metavar="DATE")
    disclose.add_argument("--to", dest="end", type=_date, required=True, metavar="DATE")
    disclose.add_argument("--authority", required=True, metavar="NAME")
    disclose.add_argument("--legal-basis", required=True, metavar="TEXT")
    disclose.add_argument("--out", type=Path, required=True, metavar="FILE")
    disclose.add_argument("--force", action="store_true", help="replace FILE if it exists")
    disclose.set_defaults(run=cmd_gdpr_disclose)

    retention = commands.add_parser(
        "retention", help="apply the retention periods (R5)"
    ).add_subparsers(title="retention commands", metavar="COMMAND", required=True)
    retention_run = retention.add_parser(
        "run",
        help="destroy traffic and content keys of months past the retention period",
        description="Destroy each customer's traffic and content keys for months older than the retention period (PICASSE_TRAFFIC_RETENTION_MONTHS, default 6); the views forget that traffic's recipients, counts stay. A month is erased once it lies six months before the current month. Runs once; `picasse scheduler` (under `picasse up`) runs it every hour.",
    )
    retention_run.add_argument(
        "--dry-run", action="store_true", help="only say what would be erased"
    )
    retention_run.add_argument(
        "--as-of",
        type=_datetime_utc,
        metavar="TIME",
        help="apply the policy as of this time (default: now)",
    )
    retention_run.set_defaults(run=cmd_retention_run)

    reconcile = commands.add_parser(
        "reconcile",
        help="give lost delivery jobs back to the workers, once",
        description="Find deliveries that the event log says are queued or awaiting a retry,"
        " overdue by the grace period, and that have no job in the DELIVERIES stream (after"
        " a purge, a lost NATS server, or jobs that outlived the stream's max age); publish"
        " their jobs again. A delivery that still has a job gets no second one; scheduled"
        " sends not yet due and deliveries of terminated customers are left alone. Prints"
        " each republished delivery id and the figures of the run. `picasse up` runs the"
        " same every minute; while it does, this command refuses.",
    )
    reconcile.add_argument(
        "--grace",
        type=float,
        metavar="SECONDS",
        help="how long past due a delivery must be (default 300, or PICASSE_RECONCILE_GRACE)",
    )
    reconcile.set_defaults(run=cmd_reconcile)

    users = commands.add_parser(
        "users", help="add users, set passwords, disable users"
    ).add_subparsers(title="user commands", metavar="COMMAND", required=True)
    add = users.add_parser(
        "add",
        help="add a user and print its id",
        description="Add a user with a login and a role. Customer roles need --customer and --email: the user gets a one-time set-password link (24 hours) there, so nobody else ever knows their password; staff add a customer's admin only while it has none who can log in (its first, or one after the last was erased), its admins add the rest. Platform roles (platform_admin, support, auditor) take no customer; their password is read from standard input (--password-stdin) and stored only as an argon2id hash.",
    )
    add.add_argument(
        "--customer", type=_uuid, metavar="ID", help="the customer the user belongs to"
    )
    add.add_argument("--login", required=True, metavar="LOGIN")
    add.add_argument(
        "--role", required=True, type=_role, metavar="ROLE", help=", ".join(r.value for r in Role)
    )
    add.add_argument(
        "--email",
        metavar="ADDRESS",
        help="a customer's user: where their one-time set-password link is sent",
    )
    add.add_argument(
        "--password-stdin",
        action="store_true",
        help="Picasse staff accounts only: read the password from standard input (one line)",
    )
    add.add_argument("--json", action="store_true", help="print JSON")
    add.set_defaults(run=cmd_users_add)

    passwd = users.add_parser(
        "passwd",
        help="reset a user's password",
        description="A customer's user: send them a new one-time set-password link (staff never set it). A Picasse staff account: set its new password, read from standard input (--password-stdin). Either way, once the new password is set, every session of the user ends; API keys stay valid until revoked.",
    )
    passwd.add_argument("login", metavar="LOGIN")
    passwd.add_argument(
        "--password-stdin",
        action="store_true",
        help="Picasse staff accounts only: read the password from standard input (one line)",
    )
    passwd.set_defaults(run=cmd_users_passwd)

    disable = users.add_parser(
        "disable",
        help="disable a user: it can no longer log in",
        description="Disable a user: their sessions end, they cannot log in and their API keys open nothing until they are enabled again. A customer's last active admin is not disabled (exit 1).",
    )
    disable.add_argument("login", metavar="LOGIN")
    disable.set_defaults(run=cmd_users_disable)

    enable = users.add_parser(
        "enable",
        help="enable a disabled user again",
        description="Enable a disabled user: they can log in again with their password, and their API keys work again.",
    )
    enable.add_argument("login", metavar="LOGIN")
    enable.set_defaults(run=cmd_users_enable)

    user_list = users.add_parser(
        "list",
        help="a customer's users, or Picasse's staff",
        description="Every user of one customer (or of Picasse's staff) in the order they were"
        " added, from the accounts view (brought up to date first); an erased login reads"
        " [erased].",
    )
    whose = user_list.add_mutually_exclusive_group(required=True)
    whose.add_argument("--customer", type=_uuid, metavar="ID", help="this customer's users")
    whose.add_argument("--staff", action="store_true", help="Picasse's staff")
    user_list.add_argument("--json", action="store_true", help="print JSON")
    user_list.set_defaults(run=cmd_users_list)

    user_show = users.add_parser("show", help="show a user")
    user_show.add_argument("login", metavar="LOGIN")
    user_show.add_argument("--json", action="store_true", help="print JSON")
    user_show.set_defaults(run=cmd_users_show)

    from picasse.runners import conferences_cli

    conferences_cli.add_commands(commands)

    audit = commands.add_parser("audit", help="verify and replay the event log").add_subparsers(
        title="audit commands", metavar="COMMAND", required=True
    )
    verify = audit.add_parser(
        "verify",
        help="check every aggregate's hash chain",
        description="Recompute every event's hash from the stored bytes and its predecessor's hash; report the first broken link and exit 1 if there is one.",
    )
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(run=cmd_audit_verify)

    replay = audit.add_parser(
        "replay",
        help="replay the log into scratch views and compare them with the live views",
        description=(
            "Replay the whole event log into scratch copies of the views and compare them row by"
            " row, column by column, with the live views, each at the position its live view has"
            " reached (so a running platform causes no false mismatch). Values whose keys were"
            " destroyed replay as erased. Mismatches are listed by view, table, row and column,"
            " never with personal data. The scratch tables are dropped at the end, also on Ctrl-C."
            " Exit 0 when the views equal the replay, 1 on any mismatch, 3 when it cannot run"
            " (for instance before the views were ever built)."
        ),
    )
    replay.add_argument(
        "--customer", type=_uuid, metavar="ID", help="compare only this customer's rows"
    )
    replay.add_argument(
        "--from",
        dest="start",
        type=_date,
        metavar="DATE",
        help="compare only rows registered, added, requested or queued from this day (UTC) on",
    )
    replay.add_argument(
        "--to", dest="end", type=_date, metavar="DATE", help="… up to and including this day"
    )
    replay.add_argument("--json", action="store_true", help="print the report as JSON")
    replay.set_defaults(run=cmd_audit_replay)

    from picasse.runners import sites_cli

    sites_cli.add_commands(commands, _uuid)
    from picasse.runners.billing_cli import add_billing_commands

    add_billing_commands(commands, _uuid)
    return parser


def _fail(message: str, code: int) -> NoReturn:
    sys.stderr.write(f"picasse: {' '.join(message.split())}\n")
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(sys.argv[1:] if argv is None else argv)
    run: Callable[[argparse.Namespace, Settings], int] = args.run
    try:
        settings = Settings.from_environ()
        return run(args, settings)
    except DomainError as error:
        _fail(str(error), EXIT_REFUSED)
    except CommandFailed as error:
        _fail(str(error), error.code)
    except (TenantErased, ArchiveError) as error:
        _fail(str(error), EXIT_REFUSED)
    except (SettingsError, MasterKeyError, StoreSettingRefused) as error:
        _fail(str(error), EXIT_ENVIRONMENT)
    except (PersistenceError, psycopg.Error) as error:
        _fail(
            f"database: {str(error).splitlines()[0] if str(error) else type(error).__name__}",
            EXIT_ENVIRONMENT,
        )
    except KeyboardInterrupt:
        _fail("interrupted", 130)


if __name__ == "__main__":
    raise SystemExit(main())
