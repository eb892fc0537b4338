"""`picasse sites registration`: a site's visitor registration settings, for operators."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from picasse.domain.errors import InvalidInput
from picasse.runners.settings import Settings

if TYPE_CHECKING:  # imported when a command runs (runners/cli.py builds the parser)
    from picasse.domain.visitors import HostChoice, Visitors


def open_visitors(settings: Settings, database_url: str) -> Visitors:
    from picasse.domain.visitors import Visitors
    from picasse.runners.wiring import clock_from, eventsourcing_env

    env = eventsourcing_env(database_url, settings.master_key_path, schema=settings.database_schema)
    return Visitors(
        env, clock=clock_from(settings), default_keep_days=settings.visitor_retention_days
    )


def _host(text: str) -> HostChoice:
    from picasse.domain.visitors import HostChoice

    ident, sep, name = text.partition("=")
    try:
        user_id = UUID(ident.strip())
    except ValueError:
        user_id = None
    if not sep or user_id is None:
        raise argparse.ArgumentTypeError("give USER_ID=Name, e.g. 5f0c…=Ann de Vries")
    return HostChoice(user_id=user_id, name=name)


def cmd_sites_registration(args: argparse.Namespace, settings: Settings) -> int:
    from picasse.domain.visitors import RegistrationSettings
    from picasse.runners.cli import _json, _opened

    with _opened(open_visitors, settings) as visitors:
        if args.slug is not None:
            notice = args.privacy_notice
            if args.privacy_notice_file is not None:
                notice = Path(args.privacy_notice_file).read_text(encoding="utf-8")
            if notice is None:
                raise InvalidInput(
                    "privacy_notice: give --privacy-notice or --privacy-notice-file",
                    field="privacy_notice",
                )
            visitors.set_registration(
                args.customer,
                args.site,
                RegistrationSettings(
                    slug=args.slug, hosts=args.host or [], fields=args.field or [],
                    privacy_notice=notice, origins=args.origin or [], keep_days=args.keep_days,
                ),
            )  # fmt: skip
        _json(visitors.registration(args.customer, args.site))
    return 0


def add_registration_command(sites: Any, uuid: Any) -> None:
    """`picasse sites registration`, on the `sites` command's subcommands."""
    reg = sites.add_parser(
        "registration",
        help="show or set a site's visitor registration (its public form at /visit/SLUG)",
        description=(
            "Without --slug: print the site's registration as JSON. With --slug (and hosts"
            " and a privacy notice): set it, then print it."
        ),
    )
    reg.add_argument("--customer", type=uuid, required=True, metavar="ID")
    reg.add_argument("--site", type=uuid, required=True, metavar="ID")
    reg.add_argument("--slug", help="the public form's address: /visit/SLUG")
    reg.add_argument(
        "--host", type=_host, action="append", metavar="USER_ID=NAME",
        help="a user visitors may see, with the name the form shows (repeat)",
    )  # fmt: skip
    reg.add_argument(
        "--field", choices=("phone", "company"), action="append",
        help="ask for this too (repeat)",
    )  # fmt: skip
    reg.add_argument("--privacy-notice", help="the text shown beside the consent box")
    reg.add_argument("--privacy-notice-file", metavar="FILE", help="the notice, from a file")
    reg.add_argument(
        "--origin", action="append", metavar="URL",
        help="an origin that may embed the form, e.g. https://www.example.com (repeat)",
    )  # fmt: skip
    reg.add_argument(
        "--keep-days", type=int, metavar="DAYS",
        help="days visitor data is kept after the visit (default PICASSE_VISITOR_RETENTION_DAYS, 28)",
    )  # fmt: skip
    reg.set_defaults(run=cmd_sites_registration)
