"""An invoice as PDF, rendered in memory on request from the sealed invoice (never stored).

fpdf2 writes the document to bytes in this process; nothing touches the disk, so the
billing name and address never rest in plaintext outside their sealed event.
"""

from __future__ import annotations

from decimal import Decimal

from picasse.domain.billing import InvoiceDetails

ITEM_NAMES = {
    "monthly_fee": "Monthly fee",
    "sms_segments": "SMS segments",
    "emails": "E-mails",
    "voice_minutes": "Voice minutes",
    "conference_minutes": "Conference minutes",
}
SELLER = "Picasse B.V."


def euros(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    return f"{sign}EUR {abs(cents) // 100:,}.{abs(cents) % 100:02d}"


def _latin(text: str) -> str:
    """The PDF's core fonts hold Latin-1 only: anything else shows as '?'."""
    return text.encode("latin-1", "replace").decode("latin-1")


def invoice_pdf(invoice: InvoiceDetails) -> bytes:
    from fpdf import FPDF  # here, not at the top: every CLI start would load fpdf's fonts

    pdf = FPDF(format="A4")
    pdf.set_title(f"Invoice {invoice.number}")
    pdf.set_creator("Picasse")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(0, 10, f"Invoice {invoice.number}", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=10)
    for line in (
        SELLER,
        "",
        "Billed to:",
        _latin(invoice.billed_to_name or "[erased]"),
        *_latin(invoice.billed_to_address or "[erased]").splitlines(),
        "",
        f"Period: {invoice.month}",
        f"Issued: {invoice.issued_on.isoformat()}    Due: {invoice.due_on.isoformat()}",
        f"Customer: {invoice.customer_id}",
        "",
    ):
        pdf.cell(0, 5, line, new_x="LMARGIN", new_y="NEXT")
    widths = (70, 30, 40, 40)
    pdf.set_font("Helvetica", "B", 10)
    for width, head in zip(widths, ("Item", "Quantity", "Unit price", "Amount"), strict=True):
        pdf.cell(width, 7, head, border="B", align="L" if head == "Item" else "R")
    pdf.ln()
    pdf.set_font("Helvetica", size=10)
    for item in invoice.lines:
        row = (
            ITEM_NAMES.get(item.item, item.item),
            f"{item.quantity:,}",
            f"EUR {item.unit_price.normalize():f}",
            euros(item.amount_cents),
        )
        for width, text in zip(widths, row, strict=True):
            pdf.cell(width, 6, text, align="L" if text is row[0] else "R")
        pdf.ln()
    pdf.ln(2)
    vat = f"VAT {Decimal(invoice.vat_percent).normalize():f}%"
    for label, cents in (
        ("Subtotal", invoice.subtotal_cents),
        (vat, invoice.vat_cents),
        ("Total", invoice.total_cents),
        ("Paid", invoice.paid_cents),
        ("Outstanding", invoice.total_cents - invoice.paid_cents),
    ):
        pdf.cell(widths[0] + widths[1] + widths[2], 6, label, align="R")
        pdf.cell(widths[3], 6, euros(cents), align="R", new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
