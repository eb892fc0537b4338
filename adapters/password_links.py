"""Set-password links: the one way a customer's user gets (or gets back) a password.

Staff never set or learn a customer user's password (R7): adding a user, or a staff reset,
issues a one-time link (`Accounts.invite_user`, `Accounts.reset_password`), and this
module mails it to the user's own address through the ordinary messaging pipeline
(`Messages.send_account_mail`): the relay, a delivery worker and the e-mail provider, or
the development Maildir. The body is sealed as content like any other; nobody reads it
back. The API, the pages and the CLI all come here.
"""

from __future__ import annotations

from uuid import UUID

from picasse.domain.accounts import IssuedLink
from picasse.domain.messaging import Messages

SET_PASSWORD_PATH = "/set-password/"  # noqa: S105 (a path, not a password)
SUBJECT = "Set your Picasse password"


def password_link_url(public_url: str, token: str) -> str:
    return public_url.rstrip("/") + SET_PASSWORD_PATH + token


def mail_password_link(messages: Messages, public_url: str, link: IssuedLink) -> UUID:
    """Queues the mail with the link to the user; the message's id."""
    until = link.expires_at.strftime("%Y-%m-%d %H:%M UTC")
    body = (
        "Hello,\n\n"
        "An account on Picasse was set up for you, or its password was reset.\n"
        "Choose your password here (the link works once, until "
        + until
        + "):\n\n"
        + password_link_url(public_url, link.token)
        + "\n\nIf you did not expect this, ignore this mail: nothing changes without it.\n"
    )
    return messages.send_account_mail(link.customer_id, link.email, SUBJECT, body)
