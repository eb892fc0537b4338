"""Accounts: the commands and queries for customers and their users (R1, R2, R11)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.persistence import IntegrityError

from picasse.domain.application import PasswordHasher, PicasseApplication, Pseudonyms
from picasse.domain.customers import Contact, Customer, Subscription
from picasse.domain.errors import (
    AuthenticationFailed,
    InvalidInput,
    NotFound,
    UserDisabled,
)
from picasse.domain.personal import Erased
from picasse.domain.users import PLATFORM_TENANT, Login, User
from picasse.domain.values import (
    EmailAddress,
    PhoneNumber,
    Role,
    parse_login,
    required_text,
    single_line,
)

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024


class ContactDetails(msgspec.Struct, frozen=True):
    name: str | Erased
    email: str | Erased
    phone: str | Erased


class CustomerDetails(msgspec.Struct, frozen=True):
    id: UUID
    organisation: str | Erased
    contact: ContactDetails
    billing_address: str | Erased
    subscription: Subscription
    plan: str | None
    registered_at: str
    version: int


class UserDetails(msgspec.Struct, frozen=True):
    id: UUID
    customer_id: UUID | None
    login: str | Erased
    role: Role
    disabled: bool


def _text(value: Any) -> str | Erased:
    return value if isinstance(value, Erased) else str(value)


class Accounts(PicasseApplication):
    """The whole surface of customers and users: the CLI, the API and tests all come here."""

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        passwords: PasswordHasher,
        pseudonyms: Pseudonyms,
    ) -> None:
        super().__init__(env)
        self.passwords = passwords
        self.pseudonyms = pseudonyms

    # Customers

    def register_customer(
        self,
        *,
        organisation: str,
        contact_name: str,
        email: str,
        phone: str,
        billing_address: str,
    ) -> UUID:
        customer = Customer(
            organisation=required_text(organisation, "organisation"),
            contact=Contact(
                name=required_text(contact_name, "contact_name"),
                email=EmailAddress.parse(email),
                phone=PhoneNumber.parse(phone),
            ),
            billing_address=required_text(billing_address, "billing_address", max_length=1000),
        )
        self.save(customer)
        return customer.id

    def change_contact(
        self,
        customer_id: UUID,
        *,
        contact_name: str | None = None,
        email: str | None = None,
        phone: str | None = None,
        billing_address: str | None = None,
    ) -> None:
        name = None if contact_name is None else required_text(contact_name, "contact_name")
        new_email = None if email is None else EmailAddress.parse(email)
        new_phone = None if phone is None else PhoneNumber.parse(phone)
        address = (
            None
            if billing_address is None
            else required_text(billing_address, "billing_address", max_length=1000)
        )
        customer = self._get(customer_id, Customer, "customer")
        old = customer.contact
        customer.change_contact(
            Contact(
                name=old.name if name is None else name,
                email=old.email if new_email is None else new_email,
                phone=old.phone if new_phone is None else new_phone,
            )
        )
        if address is not None:
            customer.change_billing_address(address)
        self.save(customer)

    def start_subscription(self, customer_id: UUID, plan: str = "standard") -> None:
        plan = required_text(plan, "plan", max_length=100)
        customer = self._get(customer_id, Customer, "customer")
        customer.start_subscription(plan)
        self.save(customer)

    def terminate_customer(self, customer_id: UUID) -> None:
        customer = self._get(customer_id, Customer, "customer")
        customer.terminate()
        self.save(customer)

    def customer(self, customer_id: UUID) -> CustomerDetails:
        customer = self._get(customer_id, Customer, "customer")
        contact = customer.contact
        return CustomerDetails(
            id=customer.id,
            organisation=_text(customer.organisation),
            contact=ContactDetails(
                name=_text(contact.name), email=_text(contact.email), phone=_text(contact.phone)
            ),
            billing_address=_text(customer.billing_address),
            subscription=customer.subscription,
            plan=customer.plan,
            registered_at=customer.created_on.isoformat(),
            version=customer.version,
        )

    # Users

    def add_user(self, *, customer_id: UUID | None, login: str, role: Role, password: str) -> UUID:
        login = parse_login(login)
        password = self._acceptable_password(password)
        if role.is_platform:
            if customer_id is not None:
                raise InvalidInput(
                    f"role {role.value} is for Picasse staff: give no customer", field="role"
                )
            tenant_id = PLATFORM_TENANT
        else:
            if customer_id is None:
                raise InvalidInput(f"role {role.value} needs a customer", field="customer")
            customer = self._get(customer_id, Customer, "customer")
            customer._guard_not_terminated()
            tenant_id = customer.id
        user = User(
            tenant_id=tenant_id,
            login=login,
            role=role,
            password_hash=self.passwords.hash(password),
        )
        claim = Login(user_id=user.id, id=self.pseudonyms.pseudonym("login", login))
        try:
            self.save(user, claim)
        except IntegrityError:
            raise Login.taken(login) from None
        return user.id

    def set_password(self, login: str, password: str) -> None:
        """An administrator (or the CLI) sets a new password without knowing the old one."""
        password = self._acceptable_password(password)
        user = self._user_by_login(login)
        user.change_password(self.passwords.hash(password))
        self.save(user)

    def change_password(self, login: str, current: str, new: str) -> None:
        """The user changes their own password, proving they know the current one."""
        new = self._acceptable_password(new)
        user = self.authenticate(login, current)
        account = self._get(user.id, User, "user")
        account.change_password(self.passwords.hash(new))
        self.save(account)

    def authenticate(self, login: str, password: str) -> UserDetails:
        single_line(login, "login")  # refused as such: says nothing of which logins exist
        try:
            user = self._user_by_login(login)
        except (NotFound, InvalidInput):
            self.passwords.hash("timing-equaliser")  # unknown logins take as long as known ones
            raise AuthenticationFailed("wrong login or password") from None
        if not isinstance(user.password_hash, str) or not self.passwords.verify(
            user.password_hash, password
        ):
            raise AuthenticationFailed("wrong login or password")
        if user.disabled:
            raise UserDisabled(f"user {user.login} is disabled")
        if self.passwords.needs_rehash(user.password_hash):
            user.rehash_password(self.passwords.hash(password))
            self.save(user)
        return self._details(user)

    def disable_user(self, login: str) -> None:
        user = self._user_by_login(login)
        user.disable()
        self.save(user)

    def user(self, user_id: UUID) -> UserDetails:
        return self._details(self._get(user_id, User, "user"))

    def user_by_login(self, login: str) -> UserDetails:
        return self._details(self._user_by_login(login))

    def _user_by_login(self, text: str) -> User:
        login = parse_login(text)
        try:
            claim = self._get(self.pseudonyms.pseudonym("login", login), Login, "login")
        except NotFound:  # name the login as typed, never the claim's id (its pseudonym)
            raise NotFound(f"no user with login {text.strip()!r}", field="login") from None
        return self._get(claim.user_id, User, "user")

    @staticmethod
    def _details(user: User) -> UserDetails:
        return UserDetails(
            id=user.id,
            customer_id=user.customer_id,
            login=_text(user.login),
            role=user.role,
            disabled=user.disabled,
        )

    @staticmethod
    def _acceptable_password(password: str) -> str:
        single_line(password, "password")
        if len(password) < MIN_PASSWORD_LENGTH:
            raise InvalidInput(
                f"password: at least {MIN_PASSWORD_LENGTH} characters", field="password"
            )
        if len(password) > MAX_PASSWORD_LENGTH:
            raise InvalidInput(
                f"password: at most {MAX_PASSWORD_LENGTH} characters", field="password"
            )
        return password
