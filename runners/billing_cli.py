"""`picasse billing …`: price plans, the monthly invoicing run, payments and invoices.

The commands act as Picasse's operator (the support role): they set plans and record
payments, and read invoices; they never read a message's content.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from picasse.domain.access import OPERATOR
from picasse.runners.settings import Settings

if TYPE_CHECKING:  # imported when a billing command runs (runners/cli.py builds the parser)
    from picasse.domain.billing import Billing, InvoiceDetails


@contextmanager
def _billing(settings: Settings) -> Iterator[Billing]:
    from picasse.domain.billing import Billing
    from picasse.runners import servers, wiring

    database_url = servers.postgres_url(settings)
    wiring.reach_database(database_url)
    wiring.ensure_master_key(settings)
    messages = wiring.open_messages(settings, database_url)
    try:
        yield Billing(clock=messages.clock, sharing=messages)
    finally:
        messages.close()


def cmd_plan(args: argparse.Namespace, settings: Settings) -> int:
    from picasse.domain.billing import PricePlan, price_plan

    plan = price_plan({name: getattr(args, name) for name in PricePlan.__struct_fields__})
    with _billing(settings) as billing:
        billing.set_plan(args.customer, plan, by=OPERATOR)
    print(f"price plan set for customer {args.customer}")
    return 0


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from picasse.adapters.invoice_pdf import euros
    from picasse.runners.cli import _json, _out, _table

    err = Console(stderr=True)
    with (
        _billing(settings) as billing,
        Progress(
            TextColumn("rating {task.fields[month]}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=err,
            transient=True,
        ) as bar,
    ):
        task = bar.add_task("run", total=None, month=args.month)
        lines = billing.run(
            args.month,
            dry_run=args.dry_run,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    if args.json:
        _json(lines)
        return 0
    table = _table("customer", "counts", "total", "invoice", "", ids=("customer",))
    for line in lines:
        counts = ", ".join(f"{k}={v}" for k, v in sorted(line.counts.items())) or "-"
        state = "would issue" if args.dry_run else ("issued" if line.issued else "issued before")
        if not args.dry_run and line.number is None:
            state = "none (terminated)"
        table.add_row(
            str(line.customer_id),
            counts,
            euros(line.total_cents),
            "-" if line.number is None else str(line.number),
            state,
        )
    _out().print(table)
    issued = sum(line.issued for line in lines)
    verb = "dry run: nothing issued" if args.dry_run else f"{issued} invoice(s) issued"
    print(f"{args.month}: {len(lines)} customer(s) rated; {verb}")
    return 0


def _amount_cents(text: str) -> int:
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not an amount in euros: {text!r}") from None
    exponent = amount.as_tuple().exponent  # a letter for NaN and infinity, else an int
    if not isinstance(exponent, int) or exponent < -2:
        raise argparse.ArgumentTypeError(f"give euros with at most two decimals: {text!r}")
    return int(amount * 100)


def cmd_pay(args: argparse.Namespace, settings: Settings) -> int:
    from picasse.adapters.invoice_pdf import euros

    with _billing(settings) as billing:
        invoice = billing.pay(args.invoice, args.amount, by=OPERATOR)
    print(
        f"invoice {invoice.number}: paid {euros(invoice.paid_cents)} of"
        f" {euros(invoice.total_cents)} ({invoice.status.value})"
    )
    return 0


def cmd_invoices(args: argparse.Namespace, settings: Settings) -> int:
    from picasse.adapters.invoice_pdf import euros
    from picasse.projections.accounts import PAGE_SIZE
    from picasse.runners.cli import _every_row, _json, _out, _table

    def page(view: Any, last: Any) -> list[Any]:  # by number
        after = None if last is None else last.number
        return list(view.invoices(customer_id=args.customer, after=after, limit=PAGE_SIZE))

    found: list[InvoiceDetails] = []
    with _billing(settings) as billing:
        rows = _every_row(settings, "invoices", page)
        for start in range(0, len(rows), PAGE_SIZE):
            chunk = rows[start : start + PAGE_SIZE]
            found += billing.invoices_by_id([row.id for row in chunk], by=OPERATOR)
    if args.json:
        _json(found)
        return 0
    table = _table(
        "number", "id", "customer", "month", "total", "paid", "status", ids=("id", "customer")
    )
    for i in found:
        table.add_row(
            str(i.number), str(i.id), str(i.customer_id), i.month,
            euros(i.total_cents), euros(i.paid_cents), i.status.value,
        )  # fmt: skip
    _out().print(table)
    return 0


def add_billing_commands(commands: Any, uuid: Any) -> None:
    """The `billing` command group (`uuid`: the CLI's id argument type). No command writes
    an invoice's PDF to disk: it holds the billing name and address in plaintext, so it is
    drawn on request only (GET /v1/invoices/{id}/pdf)."""
    billing = commands.add_parser(
        "billing", help="price plans, the monthly invoicing run, payments, invoices"
    ).add_subparsers(title="billing commands", metavar="COMMAND", required=True)

    plan = billing.add_parser(
        "plan",
        help="set a customer's price plan",
        description="Prices in euros as decimals (e.g. 0.075), VAT in percent.",
    )
    plan.add_argument("customer", type=uuid, help="the customer's id")
    for name, what in (
        ("monthly_fee", "the monthly fee"),
        ("per_sms_segment", "per SMS segment"),
        ("per_email", "per e-mail"),
        ("per_voice_minute", "per voice minute"),
        ("per_conference_minute", "per conference minute"),
        ("vat_percent", "the VAT rate in percent"),
    ):
        plan.add_argument(f"--{name.replace('_', '-')}", dest=name, required=True, help=what)
    plan.set_defaults(run=cmd_plan)

    run = billing.add_parser(
        "run",
        help="rate every customer's month from the log and issue its invoice",
        description=(
            "Counts each customer's billable traffic of the month from the events and rates"
            " it with its plan. Re-running issues nothing twice; --dry-run issues nothing."
        ),
    )
    run.add_argument("--month", required=True, help="the month, YYYY-MM (must be over)")
    run.add_argument("--dry-run", action="store_true", help="rate and show, issue nothing")
    run.add_argument("--json", action="store_true", help="print the run's lines as JSON")
    run.set_defaults(run=cmd_run)

    pay = billing.add_parser("pay", help="record a payment of an invoice, full or partial")
    pay.add_argument("invoice", type=uuid, help="the invoice's id")
    pay.add_argument("--amount", required=True, type=_amount_cents, help="euros, e.g. 12.50")
    pay.set_defaults(run=cmd_pay)

    invoices = billing.add_parser("invoices", help="list invoices (all, or one customer's)")
    invoices.add_argument("--customer", type=uuid, help="only this customer's")
    invoices.add_argument("--json", action="store_true", help="print as JSON")
    invoices.set_defaults(run=cmd_invoices)
