"""`picasse conferences …`: a customer's user's conferences, and the operator's dial-in pools.

`schedule`, `list` and `cancel` act as one of the customer's users (`--as LOGIN
--password-stdin`), through the same `Conferences` application and `Viewer` as the API:
staff hold no customer account. `numbers add/list/remove` act as Picasse's operator
(`OPERATOR`, support's view), as `POST/GET/DELETE /v1/dial-in-numbers` do for staff.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from uuid import UUID

from picasse.domain.access import OPERATOR, Viewer
from picasse.domain.errors import InvalidInput
from picasse.runners.cli import (
    _accounts,
    _datetime,
    _json,
    _opened,
    _out,
    _positive,
    _read_password,
    _show,
    _table,
    _uuid,
)
from picasse.runners.settings import Settings

if TYPE_CHECKING:  # imported when a conferences command runs (runners/cli.py builds the parser)
    from picasse.domain.conferencing import Conferences, ParticipantIn


@contextmanager
def _conferences(settings: Settings) -> Iterator[Conferences]:
    from picasse.runners.wiring import open_conferences, open_messages

    with _opened(open_messages, settings) as messages:
        yield open_conferences(settings, messages)


def _viewer(args: argparse.Namespace, settings: Settings) -> tuple[UUID, Viewer]:
    """The customer's user acting, checked by their password from standard input."""
    with _accounts(settings) as accounts:
        user = accounts.authenticate(args.as_login, _read_password())
    if user.customer_id is None:
        raise InvalidInput("--as: conferences are for a customer's users", field="as")
    return user.customer_id, Viewer(role=user.role, customer_id=user.customer_id, user_id=user.id)


def _participant(text: str) -> ParticipantIn:
    """A user's id, a +number or an e-mail address."""
    from picasse.domain.conferencing import ParticipantIn

    try:
        return ParticipantIn(user_id=UUID(text))
    except ValueError:
        pass
    if "@" in text:
        return ParticipantIn(email=text)
    return ParticipantIn(phone=text)


def cmd_schedule(args: argparse.Namespace, settings: Settings) -> int:
    from picasse.domain.conferencing import ScheduleRequest

    customer_id, viewer = _viewer(args, settings)
    request = ScheduleRequest(
        title=args.title,
        start=args.start,
        duration_minutes=args.duration,
        participants=[_participant(p) for p in args.participant or []],
        host_id=args.host,
    )
    with _conferences(settings) as conferences:
        scheduled = conferences.schedule(customer_id, request, viewer)
    if args.json:
        _json(scheduled)
        return 0
    _out().print(f"conference {scheduled.conference_id}  dial in {scheduled.number}")
    if scheduled.participant_pin:
        _out().print(f"participant PIN {scheduled.participant_pin}  host PIN {scheduled.host_pin}")
    return 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:

    customer_id, viewer = _viewer(args, settings)
    with _conferences(settings) as conferences:
        found = conferences.conferences(customer_id, viewer)
    if args.json:
        _json(found)
        return 0
    table = _table("id", "start", "minutes", "title", "status", "number", "invited", "called in")
    for c in found:
        table.add_row(
            str(c.id), c.start.isoformat(timespec="minutes"), str(c.duration_minutes),
            _show(c.title) if c.title is not None else "-", c.status, c.number,
            str(len(c.participants)), str(len(c.legs)),
        )  # fmt: skip
    _out().print(table)
    return 0


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    customer_id, viewer = _viewer(args, settings)
    with _conferences(settings) as conferences:
        conferences.cancel(customer_id, args.id, viewer)
    return 0


def cmd_numbers_add(args: argparse.Namespace, settings: Settings) -> int:
    with _conferences(settings) as conferences:
        number = conferences.add_dial_in_number(args.customer, args.number, OPERATOR)
    print(number)
    return 0


def cmd_numbers_list(args: argparse.Namespace, settings: Settings) -> int:
    with _conferences(settings) as conferences:
        numbers = conferences.dial_in_numbers(args.customer)
    if args.json:
        _json(numbers)
    else:
        for number in numbers:
            print(number)
    return 0


def cmd_numbers_remove(args: argparse.Namespace, settings: Settings) -> int:
    with _conferences(settings) as conferences:
        conferences.remove_dial_in_number(args.number, OPERATOR)
    return 0


def _acting_as(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--as", dest="as_login", required=True, metavar="LOGIN", help="the customer's user acting"
    )
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        required=True,
        help="read that user's password from standard input",
    )


def add_commands(commands: Any) -> None:
    conferences = commands.add_parser(
        "conferences", help="schedule, list and cancel a customer's conference calls"
    ).add_subparsers(title="conference commands", metavar="COMMAND", required=True)

    schedule = conferences.add_parser(
        "schedule",
        help="schedule a conference call; prints its id, dial-in number and PINs",
        description=(
            "Schedule a conference on a number of the customer's dial-in pool, with two new"
            " PINs (participants' and host's; shown to the host only, this once), and invite"
            " the participants through the messaging pipeline."
        ),
    )
    _acting_as(schedule)
    schedule.add_argument("--title", required=True)
    schedule.add_argument(
        "--start", type=_datetime, required=True, metavar="TIME", help="ISO time with zone"
    )
    schedule.add_argument("--duration", type=_positive, required=True, metavar="MINUTES")
    schedule.add_argument(
        "--participant",
        action="append",
        metavar="WHO",
        help="a user's id, a +number (invited by SMS) or an e-mail address (repeat)",
    )
    schedule.add_argument("--host", type=_uuid, metavar="USER_ID", help="default: --as")
    schedule.add_argument("--json", action="store_true", help="print JSON")
    schedule.set_defaults(run=cmd_schedule)

    listing = conferences.add_parser("list", help="the customer's conferences, past and upcoming")
    _acting_as(listing)
    listing.add_argument(
        "--json", action="store_true", help="print JSON with participants and calls"
    )
    listing.set_defaults(run=cmd_list)

    cancel = conferences.add_parser(
        "cancel",
        help="cancel a conference before it starts (its host or the customer's admins)",
        description="Cancel a conference: its PINs are freed and its participants are told.",
    )
    _acting_as(cancel)
    cancel.add_argument("id", type=_uuid, metavar="ID")
    cancel.set_defaults(run=cmd_cancel)

    numbers = conferences.add_parser(
        "numbers",
        help="a customer's dial-in pool (Picasse's operator)",
        description=(
            "The numbers a customer's conferences are dialled in on. A conference gets the"
            " first number of its customer's pool; a number is in one customer's pool at most."
        ),
    ).add_subparsers(title="dial-in number commands", metavar="COMMAND", required=True)
    add = numbers.add_parser(
        "add",
        help="add a number to a customer's pool; prints it in E.164 (again: no change)",
    )
    add.add_argument("--customer", type=_uuid, required=True, metavar="ID")
    add.add_argument(
        "number", metavar="NUMBER", help="the number callers dial, e.g. +31 20 123 4567"
    )
    add.set_defaults(run=cmd_numbers_add)
    listed = numbers.add_parser("list", help="a customer's pool, in the order it was added")
    listed.add_argument("--customer", type=_uuid, required=True, metavar="ID")
    listed.add_argument("--json", action="store_true", help="print a JSON list")
    listed.set_defaults(run=cmd_numbers_list)
    remove = numbers.add_parser(
        "remove",
        help="take a number out of its customer's pool",
        description="Conferences scheduled on it keep it; new ones get another of the pool.",
    )
    remove.add_argument("number", metavar="NUMBER")
    remove.set_defaults(run=cmd_numbers_remove)
