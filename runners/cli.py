"""The `picasse` command: every subcommand goes through the domain's applications."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn
from uuid import UUID

import msgspec
from eventsourcing.persistence import PersistenceError
from rich.console import Console
from rich.table import Table

from picasse.adapters.master_key import MasterKeyError
from picasse.domain.accounts import Accounts
from picasse.domain.errors import DomainError, InvalidInput
from picasse.domain.personal import Erased
from picasse.domain.values import Role
from picasse.runners.settings import Settings, SettingsError

EXIT_REFUSED = 1  # the domain said no: bad input, conflict, not found
EXIT_USAGE = 2  # argparse's own code for a malformed command line
EXIT_ENVIRONMENT = 3  # the platform cannot run here: no database, no master key, …

out = Console(highlight=False, soft_wrap=True)


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


def _json(value: Any) -> None:
    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")


def _read_password() -> str:
    line = sys.stdin.readline()
    password = line[:-1] if line.endswith("\n") else line
    if not password:
        raise InvalidInput("password: nothing was given on standard input", field="password")
    return password


@contextmanager
def _accounts(settings: Settings) -> Iterator[Accounts]:
    from picasse.runners import servers, wiring

    database_url = servers.postgres_url(settings)
    wiring.ensure_master_key(settings)
    accounts = wiring.open_accounts(settings, database_url)
    try:
        yield accounts
    finally:
        accounts.close()


# Commands


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from picasse.runners import up

    return up.main(settings)


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
    out.print(table)
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


def cmd_customers_subscribe(args: argparse.Namespace, settings: Settings) -> int:
    with _accounts(settings) as accounts:
        accounts.start_subscription(args.id, args.plan)
    return 0


def cmd_users_add(args: argparse.Namespace, settings: Settings) -> int:
    if not args.password_stdin:
        raise InvalidInput("give the password on standard input with --password-stdin")
    password = _read_password()
    with _accounts(settings) as accounts:
        user_id = accounts.add_user(
            customer_id=args.customer, login=args.login, role=args.role, password=password
        )
    if args.json:
        _json({"id": user_id, "login": args.login.strip().lower(), "role": args.role.value})
    else:
        print(user_id)
    return 0


def cmd_users_passwd(args: argparse.Namespace, settings: Settings) -> int:
    if not args.password_stdin:
        raise InvalidInput("give the new password on standard input with --password-stdin")
    password = _read_password()
    with _accounts(settings) as accounts:
        accounts.set_password(args.login, password)
    return 0


def cmd_users_disable(args: argparse.Namespace, settings: Settings) -> int:
    with _accounts(settings) as accounts:
        accounts.disable_user(args.login)
    return 0


def cmd_users_show(args: argparse.Namespace, settings: Settings) -> int:
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
        out.print(table)
    return 0


def cmd_audit_verify(args: argparse.Namespace, settings: Settings) -> int:
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from picasse.adapters.postgres.audit import verify_chains

    with _accounts(settings) as accounts:
        datastore = accounts.factory.datastore  # type: ignore[attr-defined]
        table = accounts.recorder.events_table_name  # type: ignore[attr-defined]
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
    up.set_defaults(run=cmd_up)

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

    users = commands.add_parser(
        "users", help="add users, set passwords, disable users"
    ).add_subparsers(title="user commands", metavar="COMMAND", required=True)
    add = users.add_parser(
        "add",
        help="add a user and print its id",
        description="Add a user with a login and a role. Customer roles need --customer; platform roles (platform_admin, support, auditor) take none. The password is read from standard input and stored only as an argon2id hash.",
    )
    add.add_argument(
        "--customer", type=_uuid, metavar="ID", help="the customer the user belongs to"
    )
    add.add_argument("--login", required=True, metavar="LOGIN")
    add.add_argument(
        "--role", required=True, type=_role, metavar="ROLE", help=", ".join(r.value for r in Role)
    )
    add.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input (one line)",
    )
    add.add_argument("--json", action="store_true", help="print JSON")
    add.set_defaults(run=cmd_users_add)

    passwd = users.add_parser(
        "passwd",
        help="set a user's password",
        description="Set a new password for LOGIN, read from standard input.",
    )
    passwd.add_argument("login", metavar="LOGIN")
    passwd.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input (one line)",
    )
    passwd.set_defaults(run=cmd_users_passwd)

    disable = users.add_parser("disable", help="disable a user: it can no longer log in")
    disable.add_argument("login", metavar="LOGIN")
    disable.set_defaults(run=cmd_users_disable)

    user_show = users.add_parser("show", help="show a user")
    user_show.add_argument("login", metavar="LOGIN")
    user_show.add_argument("--json", action="store_true", help="print JSON")
    user_show.set_defaults(run=cmd_users_show)

    audit = commands.add_parser("audit", help="verify the event log").add_subparsers(
        title="audit commands", metavar="COMMAND", required=True
    )
    verify = audit.add_parser(
        "verify",
        help="check every aggregate's hash chain",
        description="Recompute every event's hash from the stored bytes and its predecessor's hash; report the first broken link and exit 1 if there is one.",
    )
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(run=cmd_audit_verify)
    return parser


def _fail(message: str, code: int) -> NoReturn:
    sys.stderr.write(f"picasse: {' '.join(message.split())}\n")
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace, Settings], int] = args.run
    try:
        settings = Settings.from_environ()
        return run(args, settings)
    except DomainError as error:
        _fail(str(error), EXIT_REFUSED)
    except CommandFailed as error:
        _fail(str(error), error.code)
    except (SettingsError, MasterKeyError) as error:
        _fail(str(error), EXIT_ENVIRONMENT)
    except PersistenceError as error:
        _fail(
            f"database: {str(error).splitlines()[0] if str(error) else type(error).__name__}",
            EXIT_ENVIRONMENT,
        )
    except KeyboardInterrupt:
        _fail("interrupted", 130)


if __name__ == "__main__":
    raise SystemExit(main())
