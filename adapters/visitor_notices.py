"""What a visitor's registration sends: the host's notice and the visitor's confirmation.

Both go through the messaging pipeline as mail Picasse sends for the customer
(`Messages.send` by `PICASSE_SENDER`: relay, worker, the e-mail provider or the
development Maildir), their bodies sealed as content. Neither body names the visitor:
content is kept six months under the month's key, the visitor's details only as long as
the site keeps them, under the visitor's own key. The visitor's address is the
delivery's recipient (traffic data, R4/R5), as for every mail sent.

The confirmation carries the visitor's QR code for the desk (a PNG made by segno, sent with
the mail), a link to their pass (a page with the same code) and the link that cancels the
visit and erases their details.
"""

from __future__ import annotations

from uuid import UUID

from picasse.domain.access import PICASSE_SENDER
from picasse.domain.messaging import Messages, SendRequest
from picasse.domain.visitors import Registered, RegistrationDetails, VisitorDetails, pass_code

VISIT_PATH = "/visit"
DESK_PATH = "/app/desk"
HOST_SUBJECT = "A visitor registered to see you"
VISITOR_SUBJECT = "Your visit is registered"


def pass_url(public_url: str, registered_id: UUID, secret: str) -> str:
    return f"{public_url.rstrip('/')}{VISIT_PATH}/pass/{pass_code(registered_id, secret)}"


def cancel_url(public_url: str, registered_id: UUID, secret: str) -> str:
    return f"{public_url.rstrip('/')}{VISIT_PATH}/cancel/{pass_code(registered_id, secret)}"


def desk_url(public_url: str, code: str) -> str:
    """What the QR code holds: the desk page for this pass. Opened without a session of
    the customer's users it asks for a login; with one it shows the visit and a button."""
    return f"{public_url.rstrip('/')}{DESK_PATH}?code={code}"


def notify(
    messages: Messages,
    public_url: str,
    registration: RegistrationDetails,
    registered: Registered,
    visitor: VisitorDetails,
    host_email: str | None,
) -> list[UUID]:
    """Queues the host's notice (when the host has an address) and the visitor's
    confirmation; their message ids."""
    site = registration.site_name or "the site"
    when = visitor.expected_at.strftime("%Y-%m-%d %H:%M %Z").strip()
    sent = []
    if host_email:
        body = (
            "Hello,\n\n"
            f"A visitor registered to see you at {site}, expected {when}.\n"
            f"Who is expected and on site: {public_url.rstrip('/')}{DESK_PATH}\n"
        )
        sent.append(_mail(messages, registered.customer_id, host_email, HOST_SUBJECT, body))
    if visitor.email:
        code = pass_code(registered.visitor_id, registered.pass_secret)
        body = (
            "Hello,\n\n"
            f"Your visit to {site}, expected {when}, is registered.\n\n"
            "Show the QR code that comes with this mail at the desk, or your pass:\n"
            f"{pass_url(public_url, registered.visitor_id, registered.pass_secret)}\n\n"
            "To cancel the visit and erase your details at once:\n"
            f"{cancel_url(public_url, registered.visitor_id, registered.cancel_secret)}\n"
        )
        qr_code = desk_url(public_url, code)
        sent.append(
            _mail(messages, registered.customer_id, visitor.email, VISITOR_SUBJECT, body, qr_code)
        )
    return sent


def _mail(
    messages: Messages,
    customer_id: UUID,
    to: str,
    subject: str,
    body: str,
    qr_code: str | None = None,
) -> UUID:
    return messages.send(
        customer_id,
        SendRequest(channel="email", to=[to], subject=subject, body=body, qr_code=qr_code),
        requested_by=PICASSE_SENDER,
    )
