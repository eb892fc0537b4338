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
