"""`picasse sites …`: a customer's sites (premises), for operators on the command line."""

from __future__ import annotations

import argparse
from contextlib import AbstractContextManager
from typing import Any

from rich.table import Table

from picasse.domain.sites import Sites
from picasse.runners.settings import Settings


def open_sites(settings: Settings, database_url: str) -> Sites:
    from picasse.runners.wiring import clock_from, eventsourcing_env

    env = eventsourcing_env(database_url, settings.master_key_path, schema=settings.database_schema)
    return Sites(env, clock=clock_from(settings))


def _sites(settings: Settings) -> AbstractContextManager[Sites]:
    from picasse.runners.cli import _opened

    return _opened(open_sites, settings)


def cmd_sites_add(args: argparse.Namespace, settings: Settings) -> int:
    with _sites(settings) as sites:
        print(sites.add(args.customer, args.name, args.address))
    return 0


def cmd_sites_list(args: argparse.Namespace, settings: Settings) -> int:
    from picasse.runners.cli import _json, out

    with _sites(settings) as sites:
        found = sites.sites(args.customer)
    if args.json:
        _json(found)
        return 0
    table = Table("id", "name", "address")
    for s in found:
        table.add_row(str(s.id), s.name or "[erased]", s.address or "[erased]")
    out.print(table)
    return 0


def cmd_sites_remove(args: argparse.Namespace, settings: Settings) -> int:
    with _sites(settings) as sites:
        sites.remove(args.customer, args.site)
    return 0


def add_commands(commands: Any, uuid: Any) -> None:
    """`picasse sites add/list/remove`, on the top-level parser's subcommands."""
    sites = commands.add_parser("sites", help="a customer's sites (premises)").add_subparsers(
        title="site commands", metavar="COMMAND", required=True
    )
    add = sites.add_parser("add", help="add a site to a customer; prints its id")
    add.add_argument("--customer", type=uuid, required=True, metavar="ID")
    add.add_argument("--name", required=True, help="what the site is called")
    add.add_argument("--address", required=True, help="its postal address, one line")
    add.set_defaults(run=cmd_sites_add)
    listed = sites.add_parser("list", help="a customer's sites: id, name, address")
    listed.add_argument("--customer", type=uuid, required=True, metavar="ID")
    listed.add_argument("--json", action="store_true", help="print JSON")
    listed.set_defaults(run=cmd_sites_list)
    remove = sites.add_parser("remove", help="remove a site (and what belongs to it)")
    remove.add_argument("--customer", type=uuid, required=True, metavar="ID")
    remove.add_argument("site", type=uuid, metavar="SITE", help="the site's id")
    remove.set_defaults(run=cmd_sites_remove)
    from picasse.runners.visitors_cli import add_registration_command

    add_registration_command(sites, uuid)
