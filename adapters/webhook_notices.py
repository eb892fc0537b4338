"""Telling a customer's admins that one of its webhook endpoints was disabled.

The mail goes the way of every mail Picasse sends a customer's user (`Messages.
send_account_mail`: relay, worker, the e-mail provider or the development Maildir), its
body sealed as content. It names the endpoint by id only.
"""

from __future__ import annotations

from uuid import UUID

from picasse.domain.messaging import Messages
from picasse.domain.values import Role
from picasse.projections.accounts import AccountsView

SUBJECT = "A Picasse webhook endpoint was disabled"


def mail_endpoint_disabled(
    messages: Messages, accounts_view: AccountsView, customer_id: UUID, endpoint_id: UUID
) -> list[UUID]:
    """Queues one mail per enabled admin of the customer with an address; their message ids."""
    body = (
        "Hello,\n\n"
        f"Picasse disabled your webhook endpoint {endpoint_id}: every post to it failed for"
        " 24 hours. Status events are no longer posted to it.\n\n"
        "Its recent attempts are listed at GET /v1/webhooks/" + str(endpoint_id) + "/attempts."
        " Once the receiving side works again, register the endpoint anew"
        " (POST /v1/webhooks) and delete the disabled one.\n"
    )
    return [
        messages.send_account_mail(customer_id, user.email, SUBJECT, body)
        for user in accounts_view.users(customer_id=customer_id)
        if user.role == Role.CUSTOMER_ADMIN.value and not user.disabled and user.email
    ]
