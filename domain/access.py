"""Who is asking: the one description of a caller that queries use to decide what to show."""

from __future__ import annotations

from uuid import UUID

import msgspec

from picasse.domain.values import Role


class Viewer(msgspec.Struct, frozen=True, kw_only=True):
    role: Role
    customer_id: UUID | None  # None for Picasse staff
    user_id: UUID | None = None

    def sees_customer(self, customer_id: UUID) -> bool:
        """Tenant isolation (R11): a customer's users see only their own customer."""
        return self.role.is_platform or self.customer_id == customer_id

    def may_read_content_of(self, customer_id: UUID) -> bool:
        """Message content (R7): only the customer's own users, never Picasse staff."""
        return not self.role.is_platform and self.customer_id == customer_id

    def sees_traffic_of(self, customer_id: UUID) -> bool:
        """Recipients and sender IPs (R4, R11): the customer's users, and support/admins."""
        if self.role.is_platform:
            return self.role in (Role.PLATFORM_ADMIN, Role.SUPPORT)
        return self.customer_id == customer_id

    def may_add_user(self, customer_id: UUID, role: Role, *, customer_has_admin: bool) -> bool:
        """Who adds a customer's users (R7, R11): its own admins; Picasse's platform admins
        only its first admin, so that no staff member holds an account reading its content."""
        if self.role is Role.CUSTOMER_ADMIN:
            return self.customer_id == customer_id
        if self.role is Role.PLATFORM_ADMIN:
            return role is Role.CUSTOMER_ADMIN and not customer_has_admin
        return False

    def may_read_content(self, customer_id: UUID, requested_by: UUID | None) -> bool:
        """A body Picasse sent for a user (a set-password link) is read by nobody but the
        delivery worker: not staff, nor the customer's other users."""
        return requested_by != PICASSE_SENDER and self.may_read_content_of(customer_id)


# `requested_by` of the mail Picasse itself sends to a customer's user (set-password links).
PICASSE_SENDER = UUID(int=0)
