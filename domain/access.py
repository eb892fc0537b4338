"""Who is asking, and what they may see and do: the one access policy (R7, R11).

Every question of "may this caller see or do that" is a method of `Viewer`, and nothing
else answers one: API routes ask it through `adapters/http/auth.py` `allowed(...)` guards
and in their handlers, pages ask it in their guard and pass it to their templates (which
hide what it hides), the domain's queries ask it for resources addressed by their own id.
A role name outside this module (and `values.Role`) is a second policy in the making.

What each role may do, as the methods below decide ("own": its own customer only):

| question                  | platform_admin | support | auditor | customer_admin | customer_user |
|---------------------------|----------------|---------|---------|----------------|---------------|
| sees_customer             | all            | all     | all     | own            | own           |
| sees_contact_of           | all            | all     | no      | own            | own           |
| sees_traffic_of           | all            | all     | no      | own            | own           |
| may_read_content_of (R7)  | no             | no      | no      | own            | own           |
| may_use_dashboard         | yes            | yes     | yes     | no             | no            |
| may_use_customer_pages    | no             | no      | no      | yes            | yes           |
| may_administer            | no             | no      | no      | own            | no            |
| may_change_customer       | all            | all     | no      | own            | no            |
| may_list_users_of         | all            | all     | all     | own            | no            |
| may_add_users_to          | admin if none  | no      | no      | own            | no            |
| may_change_users_of       | all            | all     | no      | own            | no            |
| may_send_messages_for     | no             | no      | no      | own            | own           |
| sees_api_keys_of          | own            | own     | own     | own customer's | own           |
| may_revoke_key_of         | any key        | own     | own     | own customer's | own           |
| sees_sites_of             | no             | no      | no      | own            | own           |
| sees_visitors_of (R13)    | no             | no      | no      | own            | own           |
| may_use_attendance        | no             | no      | no      | own            | own           |
| sees_attendance_of        | no             | no      | no      | own            | no            |
| may_use_conferences_of    | no             | no      | no      | own            | own           |
| may_host                  | no             | no      | no      | own            | own as host   |
| may_manage_dial_in_numbers | yes           | yes     | no      | no             | no            |
| sees_invoices_of          | all            | all     | all     | own            | no            |
| may_set_price_plans       | all            | all     | no      | no             | no            |
| may_record_payments       | all            | all     | no      | no             | no            |
| sees_cases_of             | all            | all     | no      | own            | own           |
| may_file_cases_for        | no             | no      | no      | own            | own           |
| may_handle_cases          | all            | all     | no      | no             | no            |

Stored templates are content: read by those who `may_read_content_of` it, managed by those
who `may_administer` the customer. Recipient groups are read by those who
`may_send_messages_for` the customer (they send to them) and managed by its admins.
Conferences are scheduled and seen by the customer's users; changed, cancelled and run
(host controls) by their host and the customer's admins (`may_host`).
"""

from __future__ import annotations

from uuid import UUID

import msgspec

from picasse.domain.values import Role


class Viewer(msgspec.Struct, frozen=True, kw_only=True):
    role: Role
    customer_id: UUID | None  # None for Picasse staff
    user_id: UUID | None = None

    @property
    def is_staff(self) -> bool:
        """Picasse's own people: they serve every customer and read no customer's content."""
        return self.role.is_platform

    def _own(self, customer_id: UUID | None) -> bool:
        return not self.is_staff and customer_id is not None and self.customer_id == customer_id

    # ------------------------------------------------------------ seeing

    def sees_customer(self, customer_id: UUID) -> bool:
        """Tenant isolation (R11): a customer's users see only their own customer."""
        return self.is_staff or self._own(customer_id)

    def sees_contact_of(self, customer_id: UUID) -> bool:
        """Contact person (name, e-mail, phone) and billing address (R11): support, admins
        and the customer's own users; auditors check the platform, not whom to call."""
        if self.is_staff:
            return self.role in (Role.PLATFORM_ADMIN, Role.SUPPORT)
        return self._own(customer_id)

    def sees_traffic_of(self, customer_id: UUID) -> bool:
        """Recipients, senders, sender IPs and failure reasons (R4, R11): the customer's
        users, and support/admins."""
        if self.is_staff:
            return self.role in (Role.PLATFORM_ADMIN, Role.SUPPORT)
        return self._own(customer_id)

    def may_read_content_of(
        self, customer_id: UUID | None, requested_by: UUID | None = None
    ) -> bool:
        """Message content (R7): only the customer's own users, never Picasse staff; and a
        body Picasse sent for a user (a set-password link, `requested_by` PICASSE_SENDER)
        nobody but the delivery worker: not staff, nor the customer's other users."""
        return requested_by != PICASSE_SENDER and self._own(customer_id)

    # ------------------------------------------------------------ doing

    def may_use_dashboard(self) -> bool:
        """The admin pages are for Picasse staff; a customer's users have pages of their own."""
        return self.is_staff

    def may_use_customer_pages(self) -> bool:
        """The customer's pages (under /app) are for its users; staff use the dashboard."""
        return not self.is_staff and self.customer_id is not None

    def may_administer(self, customer_id: UUID | None) -> bool:
        """A customer's own settings (users, API keys, webhooks, templates): its admins."""
        return self.role is Role.CUSTOMER_ADMIN and self._own(customer_id)

    def may_change_customer(self, customer_id: UUID | None) -> bool:
        """Contact details and billing address: support, admins and the customer's admin."""
        if self.is_staff:
            return self.role in (Role.PLATFORM_ADMIN, Role.SUPPORT)
        return self.role is Role.CUSTOMER_ADMIN and self._own(customer_id)

    def may_list_users_of(self, customer_id: UUID | None) -> bool:
        """A customer's users (logins, roles): staff, and the customer's admin."""
        return self.is_staff or (self.role is Role.CUSTOMER_ADMIN and self._own(customer_id))

    def may_add_users_to(
        self,
        customer_id: UUID | None,
        *,
        role: Role = Role.CUSTOMER_ADMIN,
        customer_has_admin: bool = False,
    ) -> bool:
        """New users of a customer (R7, R11): its own admins; a platform admin only an admin
        while the customer has none who can act (its first, or one after its last admin's
        data was erased), so that no staff member holds an account that reads its content.
        (A route's guard asks without `role` and `customer_has_admin`; the domain asks
        again with what it knows.)"""
        if self.is_staff:
            return self.role is Role.PLATFORM_ADMIN and (
                role is Role.CUSTOMER_ADMIN and not customer_has_admin
            )
        return self.role is Role.CUSTOMER_ADMIN and self._own(customer_id)

    def may_change_users_of(self, customer_id: UUID | None) -> bool:
        """A user's role, or disabling and enabling them (R11): the customer's admins, and
        support and platform admins (who stop an account in an incident, as the CLI does)."""
        if self.is_staff:
            return self.role in (Role.PLATFORM_ADMIN, Role.SUPPORT)
        return self.role is Role.CUSTOMER_ADMIN and self._own(customer_id)

    def sees_api_keys_of(self, owner: UUID, customer_id: UUID | None) -> bool:
        """An API key's name, scopes and dates (never its secret): its owner, and the admins
        of the customer whose key it is (they list and revoke every key of its users)."""
        return owner == self.user_id or self.may_administer(customer_id)

    def may_send_messages_for(self, customer_id: UUID | None) -> bool:
        """Sending is the customer's own business: its users, never Picasse staff."""
        return self._own(customer_id)

    def sees_sites_of(self, customer_id: UUID | None) -> bool:
        """A customer's sites and geofences: its own users (its admins manage them,
        `may_administer`); staff serve the platform, not the customer's premises."""
        return self._own(customer_id)

    def sees_visitors_of(self, customer_id: UUID | None) -> bool:
        """A customer's visitors (desk check-in, the on-site list): its own users; a
        site's registration settings are its admins' (`may_administer`)."""
        return self._own(customer_id)

    def may_use_attendance(self, customer_id: UUID | None) -> bool:
        """Giving and withdrawing one's own consent to location processing, and sending
        pings (R8): the customer's users; never Picasse staff."""
        return self._own(customer_id)

    def sees_attendance_of(self, customer_id: UUID | None) -> bool:
        """Who is on which site, and everyone's hours: the customer's admins."""
        return self.role is Role.CUSTOMER_ADMIN and self._own(customer_id)

    def may_revoke_key_of(self, owner: UUID, customer_id: UUID | None = None) -> bool:
        """An API key: its owner, the admins of its customer, or a platform admin (who may
        stop a leaked one)."""
        return self.sees_api_keys_of(owner, customer_id) or self.role is Role.PLATFORM_ADMIN

    def may_use_conferences_of(self, customer_id: UUID | None) -> bool:
        """Scheduling and seeing a customer's conferences: its own users, never staff."""
        return self._own(customer_id)

    def may_host(self, customer_id: UUID | None, host_id: UUID) -> bool:
        """Changing, cancelling and the host controls of a conference (mute, unmute,
        remove, lock, end): its host, and the customer's admins."""
        return self._own(customer_id) and (
            self.user_id == host_id or self.role is Role.CUSTOMER_ADMIN
        )

    def may_manage_dial_in_numbers(self) -> bool:
        """Which platform numbers are in a customer's dial-in pool: platform admins and
        support (they provision the numbers); no customer."""
        return self.role in (Role.PLATFORM_ADMIN, Role.SUPPORT)

    # ------------------------------------------------------------ billing and cases (R3)

    def sees_invoices_of(self, customer_id: UUID | None) -> bool:
        """Invoices (counts and amounts, the billing name and address): staff, who bill and
        audit, and the customer's admins."""
        return self.is_staff or (self.role is Role.CUSTOMER_ADMIN and self._own(customer_id))

    def may_set_price_plans(self, customer_id: UUID | None = None) -> bool:
        """A customer's prices: support and platform admins."""
        return self.role in (Role.PLATFORM_ADMIN, Role.SUPPORT)

    def may_record_payments(self, customer_id: UUID | None = None) -> bool:
        """Payments received: support and platform admins."""
        return self.role in (Role.PLATFORM_ADMIN, Role.SUPPORT)

    def sees_cases_of(self, customer_id: UUID | None) -> bool:
        """Complaints and fault reports, with the customer's own words (R3): those who
        handle them, and the customer's users; auditors check the platform, not cases."""
        if self.is_staff:
            return self.role in (Role.PLATFORM_ADMIN, Role.SUPPORT)
        return self._own(customer_id)

    def may_file_cases_for(self, customer_id: UUID | None) -> bool:
        """Filing a complaint or fault report, and commenting on it: the customer's users."""
        return self._own(customer_id)

    def may_handle_cases(self, customer_id: UUID | None = None) -> bool:
        """Replying to cases and moving them along: support and platform admins."""
        return self.role in (Role.PLATFORM_ADMIN, Role.SUPPORT)


# The view of Picasse's operator at the command line (`picasse billing`, `messages show`,
# dial-in numbers, a statement's checks): support's, which never reads content.
OPERATOR = Viewer(role=Role.SUPPORT, customer_id=None)

# `requested_by` of the mail Picasse itself sends to a customer's user (set-password links).
PICASSE_SENDER = UUID(int=0)
