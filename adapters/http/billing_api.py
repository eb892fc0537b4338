"""Price plans, invoices and payments under /v1 (R3).

| route                                   | platform_admin, support | auditor | customer_admin | customer_user |
|-----------------------------------------|-------------------------|---------|----------------|---------------|
| PUT /v1/customers/{customer_id}/plan    | ✓                       | no      | no             | no            |
| GET /v1/invoices[/{invoice_id}[/pdf]]   | all                     | all     | own            | no            |
| POST /v1/invoices/{invoice_id}/payments | ✓                       | no      | no             | no            |

Amounts are whole cents; prices are decimal strings (never floats). The PDF is drawn in
memory from the sealed invoice each time it is asked for, and never stored.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Request, Response, get, post, put
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter, QueryParameter

from picasse.adapters.http.api import AfterCursor, CustomerId, S, _answers, paged
from picasse.adapters.http.auth import Caller, allowed, scoped
from picasse.adapters.http.cursors import decode_cursor, encode_cursor
from picasse.adapters.invoice_pdf import invoice_pdf
from picasse.domain.access import Viewer
from picasse.domain.api_keys import Scope
from picasse.domain.billing import Billing, InvoiceDetails, InvoiceStatus, PricePlan, price_plan
from picasse.domain.errors import Forbidden, NotFound
from picasse.projections.accounts import PAGE_SIZE
from picasse.projections.invoices import InvoicesView

SCOPE = scoped(Scope.BILLING)
InvoiceId = Annotated[UUID, PathParameter(description="the invoice's id")]
_price_setters = allowed(Viewer.may_set_price_plans, "only Picasse's support and admins set plans")
_invoice_readers = allowed(
    Viewer.sees_invoices_of, "invoices are for staff and the customer's admins"
)
_payment_recorders = allowed(
    Viewer.may_record_payments, "only Picasse's support and admins record payments"
)
Price = Annotated[str, msgspec.Meta(description='euros as a decimal string, e.g. "0.075"')]


class PlanIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    monthly_fee: Price
    per_sms_segment: Price
    per_email: Price
    per_voice_minute: Price
    per_conference_minute: Price
    vat_percent: Annotated[str, msgspec.Meta(description='VAT in percent, e.g. "21"')]


class PlanOut(msgspec.Struct, frozen=True):
    customer_id: Annotated[UUID, msgspec.Meta(description="whose plan it is")]
    monthly_fee: Price
    per_sms_segment: Price
    per_email: Price
    per_voice_minute: Price
    per_conference_minute: Price
    vat_percent: Annotated[str, msgspec.Meta(description="VAT in percent")]


class PaymentIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    amount_cents: Annotated[int, msgspec.Meta(description="what was paid, in cents (part or all)")]


class LineOut(msgspec.Struct, frozen=True):
    item: Annotated[
        str,
        msgspec.Meta(
            description="monthly_fee, sms_segments, emails, voice_minutes or conference_minutes"
        ),
    ]
    quantity: Annotated[int, msgspec.Meta(description="how many (a count, never who)")]
    unit_price: Price
    amount_cents: Annotated[
        int, msgspec.Meta(description="quantity times unit price, in whole cents")
    ]


class InvoiceOut(msgspec.Struct, frozen=True):
    id: Annotated[UUID, msgspec.Meta(description="the invoice's id")]
    customer_id: Annotated[UUID, msgspec.Meta(description="whose invoice it is")]
    number: Annotated[int, msgspec.Meta(description="its number: gapless, never repeated")]
    month: Annotated[str, msgspec.Meta(description="the month it rates, YYYY-MM")]
    issued_on: Annotated[date, msgspec.Meta(description="when it was issued")]
    due_on: Annotated[date, msgspec.Meta(description="when it is to be paid")]
    billed_to_name: Annotated[
        str | None, msgspec.Meta(description="billing name; None once the fiscal key is destroyed")
    ]
    billed_to_address: Annotated[
        str | None, msgspec.Meta(description="billing address; None once destroyed")
    ]
    lines: Annotated[list[LineOut], msgspec.Meta(description="counts and amounts")]
    subtotal_cents: Annotated[int, msgspec.Meta(description="the lines' sum")]
    vat_percent: Annotated[str, msgspec.Meta(description="VAT in percent")]
    vat_cents: Annotated[int, msgspec.Meta(description="VAT on the subtotal")]
    total_cents: Annotated[int, msgspec.Meta(description="subtotal plus VAT")]
    paid_cents: Annotated[int, msgspec.Meta(description="what was paid so far")]
    status: Annotated[InvoiceStatus, msgspec.Meta(description="open, paid or overdue")]


def _plan_out(customer_id: UUID, plan: PricePlan) -> PlanOut:
    return PlanOut(
        customer_id=customer_id, **{n: str(getattr(plan, n)) for n in PricePlan.__struct_fields__}
    )


def invoice_out(i: InvoiceDetails) -> InvoiceOut:
    return InvoiceOut(
        id=i.id,
        customer_id=i.customer_id,
        number=i.number,
        month=i.month,
        issued_on=i.issued_on,
        due_on=i.due_on,
        billed_to_name=i.billed_to_name,
        billed_to_address=i.billed_to_address,
        lines=[
            LineOut(
                item=li.item,
                quantity=li.quantity,
                unit_price=str(li.unit_price),
                amount_cents=li.amount_cents,
            )
            for li in i.lines
        ],
        subtotal_cents=i.subtotal_cents,
        vat_percent=str(i.vat_percent),
        vat_cents=i.vat_cents,
        total_cents=i.total_cents,
        paid_cents=i.paid_cents,
        status=i.status,
    )


@put(
    "/customers/{customer_id:uuid}/plan",
    sync_to_thread=True,
    opt=SCOPE,
    guards=[_price_setters],
    summary="Set a customer's price plan",
    description=(
        "A monthly fee, prices per SMS segment, e-mail, voice minute and conference minute,"
        " and a VAT rate, each a decimal string (floats are refused: 422 naming the field)."
        " The next invoicing run rates with it."
    ),
    responses=_answers(S.NOT_FOUND, S.CONFLICT, S.UNPROCESSABLE_ENTITY),
    tags=["billing"],
)
def set_plan(
    customer_id: CustomerId,
    data: JSONBody[PlanIn],
    caller: NamedDependency[Caller],
    billing: NamedDependency[Billing],
) -> PlanOut:
    plan = price_plan(msgspec.structs.asdict(data))
    billing.set_plan(customer_id, plan, by=caller.viewer())
    return _plan_out(customer_id, plan)


@get(
    "/invoices",
    sync_to_thread=True,
    opt=SCOPE,
    guards=[_invoice_readers],
    summary="Invoices: the customer's own, or every customer's for staff",
    description=(
        "Staff may narrow to one customer with `customer_id`. Ordered by number, read from"
        " the invoices view (a moment behind the log), 200 invoices a page; a"
        ' `Link: <…?after=…>; rel="next"` header names the next page (none on the last).'
    ),
    responses=_answers(S.NOT_FOUND, S.UNPROCESSABLE_ENTITY),
    tags=["billing"],
)
def list_invoices(
    request: Request[Any, Any, Any],
    caller: NamedDependency[Caller],
    billing: NamedDependency[Billing],
    invoices_view: NamedDependency[InvoicesView],
    customer_id: Annotated[
        UUID | None, QueryParameter(description="only this customer's (staff)")
    ] = None,
    after: AfterCursor = None,
) -> Response[list[InvoiceOut]]:
    viewer = caller.viewer()
    whose = caller.customer_id if caller.customer_id is not None else customer_id
    if whose is not None and not viewer.sees_invoices_of(whose):
        raise NotFound(f"customer {whose} not found")
    position = decode_cursor(after, int, "after") if after else None
    rows = invoices_view.invoices(customer_id=whose, after=position, limit=PAGE_SIZE + 1)
    last = rows[PAGE_SIZE - 1] if len(rows) > PAGE_SIZE else None
    found = billing.invoices_by_id([row.id for row in rows[:PAGE_SIZE]], by=viewer)
    following = None if last is None else encode_cursor(last.number)
    return paged(request, [invoice_out(i) for i in found], following)


@get(
    "/invoices/{invoice_id:uuid}",
    sync_to_thread=True,
    opt=SCOPE,
    guards=[_invoice_readers],
    summary="One invoice",
    description="Its lines (counts and amounts), totals, payments and status; another customer's answers 404.",
    responses=_answers(S.NOT_FOUND),
    tags=["billing"],
)
def show_invoice(
    invoice_id: InvoiceId, caller: NamedDependency[Caller], billing: NamedDependency[Billing]
) -> InvoiceOut:
    return invoice_out(billing.invoice(invoice_id, by=caller.viewer()))


@get(
    "/invoices/{invoice_id:uuid}/pdf",
    sync_to_thread=True,
    opt=SCOPE,
    guards=[_invoice_readers],
    summary="One invoice as PDF",
    description="Drawn from the sealed invoice when asked for; never stored.",
    responses=_answers(S.NOT_FOUND),
    tags=["billing"],
    media_type="application/pdf",
)
def invoice_as_pdf(
    invoice_id: InvoiceId, caller: NamedDependency[Caller], billing: NamedDependency[Billing]
) -> Response[bytes]:
    invoice = billing.invoice(invoice_id, by=caller.viewer())
    return Response(
        invoice_pdf(invoice),
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="invoice-{invoice.number}.pdf"'},
    )


@post(
    "/invoices/{invoice_id:uuid}/payments",
    sync_to_thread=True,
    opt=SCOPE,
    guards=[_payment_recorders],
    summary="Record a payment of an invoice, full or partial",
    description="More than is outstanding answers 409 invoice-overpaid; nothing is recorded.",
    responses=_answers(S.NOT_FOUND, S.CONFLICT, S.UNPROCESSABLE_ENTITY),
    tags=["billing"],
)
def record_payment(
    invoice_id: InvoiceId,
    data: JSONBody[PaymentIn],
    caller: NamedDependency[Caller],
    billing: NamedDependency[Billing],
) -> InvoiceOut:
    if caller.customer_id is not None:
        raise Forbidden("only Picasse's support and admins record payments")
    return invoice_out(billing.pay(invoice_id, data.amount_cents, by=caller.viewer()))


ROUTES: tuple[Any, ...] = (set_plan, list_invoices, show_invoice, invoice_as_pdf, record_payment)
STRICT_BODIES = (PlanIn, PaymentIn)
