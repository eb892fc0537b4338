"""Customer users for tests: invited as the platform does it, password set by the "user".

Staff never set a customer user's password (R7), so a test that needs one logged in plays
both parts: the invitation (as the customer's admin) and the user following the link.
"""

from __future__ import annotations

from uuid import UUID

from picasse.domain.access import Viewer
from picasse.domain.accounts import Accounts
from picasse.domain.values import Role


def add_customer_user(
    accounts: Accounts,
    *,
    customer_id: UUID,
    login: str,
    role: Role,
    password: str,
    email: str | None = None,
) -> UUID:
    """The user's id; the link is used at once (no mail is sent)."""
    link = accounts.invite_user(
        customer_id=customer_id,
        login=login,
        role=role,
        email=email or f"{login.replace('@', '.')}@users.example",
        by=Viewer(role=Role.CUSTOMER_ADMIN, customer_id=customer_id),
    )
    return accounts.set_password_with_link(link.token, password)
