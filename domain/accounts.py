"""Accounts: the commands and queries for customers and their users (R1, R2, R11)."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid5

import msgspec
from eventsourcing.domain import event
from eventsourcing.persistence import IntegrityError

from picasse.domain.access import Viewer
from picasse.domain.aggregates import Aggregate
from picasse.domain.application import PasswordHasher, PicasseApplication, Pseudonyms
from picasse.domain.clock import Clock
from picasse.domain.customers import Contact, Customer, Subscription
from picasse.domain.errors import (
    AuthenticationFailed,
    Conflict,
    Forbidden,
    InvalidInput,
    LoginTaken,
    NotFound,
    UserDisabled,
)
from picasse.domain.personal import Erased
from picasse.domain.users import PLATFORM_TENANT, Login, PasswordLink, User, link_id
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
MIN_PASSWORD_SCORE = 3  # zxcvbn's 0-4: 3 is "safely unguessable", ~10^10 guesses
ZXCVBN_MAX_LENGTH = 72  # zxcvbn refuses longer input (ValueError)
PASSWORD_LINK_LIFETIME = timedelta(hours=24)
OPERATOR = "operator"  # `by` of changes made with the CLI: Picasse staff at the servers
_ADMIN_NAMESPACE = UUID("5b0f6c1e-4a61-4d55-9a0e-0c9f3a1d2b77")


class LoginUnavailable(LoginTaken):
    """One answer for every refused login at user creation, whatever the reason (taken by
    another customer, by staff, or not a valid login): other customers' logins stay hidden."""

    code = "login-unavailable"

    def __init__(self) -> None:
        super().__init__(
            "login: this login cannot be used; choose another (3 to 254 characters of"
            " a-z, 0-9 and . _ @ + -, starting with a letter or digit)",
            field="login",
        )


class IssuedLink(msgspec.Struct, frozen=True):
    """A set-password link just issued: the token goes into the mail to `email` and
    nowhere else (the log keeps only its hash)."""

    user_id: UUID
    customer_id: UUID
    email: str
    token: str
    expires_at: datetime

    def __repr__(self) -> str:  # the token and the address stay out of every log line
        return f"IssuedLink(user_id={self.user_id})"

    __str__ = __repr__


class FirstAdmin(Aggregate):
    """Claims "this customer has an admin": saved with its first admin, so staff, who may
    add that one only, cannot add a second (its id derives from the customer's).

    It also keeps the roster of the customer's active admins: every change that makes a
    user an active admin or ends that (an admin added, a role changed, a user disabled or
    enabled) records an event here in the same save. Two changes at once thus conflict,
    and one of them is decided again: the last active admin can never be removed by two
    requests that each saw another admin still there. The roster names who to check; each
    is read from the log before it counts. Admins added before the roster existed join it
    when they are next changed."""

    @event("Claimed")
    def __init__(self, id: UUID, user_id: UUID) -> None:
        self.user_id = user_id
        self.admins = {user_id}

    def admin_changed(self, user_id: UUID, active: bool) -> None:
        self._admin_changed(user_id, active)

    @event("AdminChanged")
    def _admin_changed(self, user_id: UUID, active: bool) -> None:
        if active:
            self.admins.add(user_id)
        else:
            self.admins.discard(user_id)


class LastAdmin(Conflict):
    """A customer keeps at least one active admin: the last is neither disabled nor demoted."""

    code = "last-admin"


def first_admin_id(customer_id: UUID) -> UUID:
    return uuid5(_ADMIN_NAMESPACE, str(customer_id))


def _actor(by: Viewer | None) -> str:
    return OPERATOR if by is None else by.role.value


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
        clock: Clock,
        sharing: PicasseApplication | None = None,
    ) -> None:
        super().__init__(env, sharing=sharing, clock=clock)
        self.passwords = passwords
        self.pseudonyms = pseudonyms
        self.clock = clock

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
        """A Picasse staff account, with the password its owner gave (the CLI, on stdin).
        A customer's users are invited with `invite_user`: staff never set their password."""
        if not role.is_platform:
            raise InvalidInput(
                f"role {role.value}: a customer's users get a set-password link at their"
                " e-mail address, never a password from staff (give --email)",
                field="password",
            )
        if customer_id is not None:
            raise InvalidInput(
                f"role {role.value} is for Picasse staff: give no customer", field="role"
            )
        login = parse_login(login)
        password = self._acceptable_password(password)
        user = User(
            tenant_id=PLATFORM_TENANT,
            login=login,
            role=role,
            password_hash=self.passwords.hash(password),
            by=OPERATOR,
        )
        claim = self._claim(login, user.id)
        try:
            self.save(user, claim)
        except IntegrityError:
            raise Login.taken(login) from None
        return user.id

    def invite_user(
        self,
        *,
        customer_id: UUID,
        login: str,
        role: Role,
        email: str,
        by: Viewer | None = None,
    ) -> IssuedLink:
        """Adds a customer's user without a password and issues a set-password link for
        `email`, all in one write; the caller mails the link (`by` None: the CLI).

        Once a customer has an admin, only its admins add its users; Picasse staff may add
        an admin only while it has none who can act (its first, or one after its last was
        erased: `Viewer.may_add_users_to`), so staff never hold an account that reads the
        customer's content (R7).
        """
        if role.is_platform:
            raise InvalidInput(
                f"role {role.value} is for Picasse staff: give no customer", field="role"
            )
        address = EmailAddress.parse(email)
        try:
            login = parse_login(login)
        except InvalidInput:
            raise LoginUnavailable() from None
        customer = self._get(customer_id, Customer, "customer")
        customer._guard_not_terminated()
        has_admin = self.has_active_admin(customer_id)
        viewer = by if by is not None else Viewer(role=Role.PLATFORM_ADMIN, customer_id=None)
        if not viewer.may_add_users_to(customer_id, role=role, customer_has_admin=has_admin):
            raise Forbidden(
                "Picasse staff may add a customer's admin only while it has none; after that"
                " its admins add its users"
                if has_admin or viewer.role.is_platform
                else "only the customer's admins add its users"
            )
        user = User(
            tenant_id=customer_id,
            login=login,
            role=role,
            password_hash=None,
            email=str(address),
            by=_actor(by),
        )
        link, issued = self._new_link(user, by)
        pending: list[Aggregate] = [
            user,
            link,
            self._claim(login, user.id),
        ]
        if role is Role.CUSTOMER_ADMIN:
            pending.append(self._admin_roster_with(customer_id, user.id, active=True))
        try:
            self.save(*pending)
        except IntegrityError:  # the login is taken (here, elsewhere, by staff: all alike)
            raise LoginUnavailable() from None
        return issued

    def _roster(self, customer_id: UUID) -> FirstAdmin | None:
        try:
            return self._get(first_admin_id(customer_id), FirstAdmin, "admin")
        except NotFound:
            return None

    def has_active_admin(self, customer_id: UUID) -> bool:
        """Whether one of the customer's admins can act now (not disabled, not erased)."""
        roster = self._roster(customer_id)
        return roster is not None and self._other_active_admin(roster, customer_id, None)

    def _admin_roster_with(self, customer_id: UUID, user_id: UUID, *, active: bool) -> FirstAdmin:
        """The customer's roster with the change recorded (a new one for its first admin)."""
        roster = self._roster(customer_id)
        if roster is None:
            return FirstAdmin(id=first_admin_id(customer_id), user_id=user_id)
        roster.admin_changed(user_id, active)
        return roster

    def change_user(
        self,
        customer_id: UUID,
        user_id: UUID,
        *,
        role: Role | None = None,
        disabled: bool | None = None,
        by: Viewer | None = None,
    ) -> UserDetails:
        """A customer's user gets another role, or is disabled or enabled again (`by` None:
        the CLI). Asking for what already holds changes nothing. The customer's last active
        admin is neither disabled nor demoted (LastAdmin, 409)."""
        if role is None and disabled is None:
            raise InvalidInput("give role or disabled", field="role")
        if role is not None and role.is_platform:
            raise InvalidInput(
                f"role {role.value} is for Picasse staff: a customer's users are"
                " customer_admin or customer_user",
                field="role",
            )
        user = self._get(user_id, User, "user")
        if user.customer_id != customer_id:
            raise NotFound(f"user {user_id} not found")
        self._get(customer_id, Customer, "customer")._guard_not_terminated()
        was_admin = user.active_admin
        actor = _actor(by)
        if role is not None:
            user.change_role(role, actor)
        if disabled is True and not user.disabled:
            user.disable(actor)
        elif disabled is False and user.disabled:
            user.enable(actor)
        if not user.pending_events:
            return self._details(user)
        pending: list[Aggregate] = [user]
        if was_admin != user.active_admin:
            roster = self._admin_roster_with(customer_id, user.id, active=user.active_admin)
            if was_admin and not self._other_active_admin(roster, customer_id, user.id):
                raise LastAdmin(
                    f"user {user_id} is the customer's last active admin: make another user"
                    " admin first"
                )
            pending.append(roster)
        self.save(*pending)  # a change at the same moment: IntegrityError, decided again
        return self._details(user)

    def _other_active_admin(self, roster: FirstAdmin, customer_id: UUID, but: UUID | None) -> bool:
        for admin_id in roster.admins - {but}:
            try:
                admin = self._get(admin_id, User, "user")
            except NotFound:
                continue
            if admin.customer_id == customer_id and admin.active_admin:
                return True
        return False

    def _new_link(self, user: User, by: Viewer | None) -> tuple[PasswordLink, IssuedLink]:
        customer_id = user.customer_id
        if customer_id is None or not isinstance(user.email, str):
            raise InvalidInput(
                f"user {user.login} has no e-mail address for a set-password link",
                field="email",
            )
        token = secrets.token_urlsafe(32)
        expires_at = self.clock.now() + PASSWORD_LINK_LIFETIME
        link = PasswordLink(
            id=link_id(token), user_id=user.id, tenant_id=customer_id, expires_at=expires_at
        )
        user.issue_password_link(link.id, expires_at, _actor(by))
        issued = IssuedLink(
            user_id=user.id,
            customer_id=customer_id,
            email=user.email,
            token=token,
            expires_at=expires_at,
        )
        return link, issued

    def reset_password(self, login: str, by: Viewer | None = None) -> IssuedLink:
        """A staff reset of a customer user's password: a new link for the user, sent to
        their own address (the caller mails it); any earlier link stops working."""
        user = self._user_by_login(login)
        if user.customer_id is None:
            raise InvalidInput(
                f"user {user.login} is Picasse staff: set the password with --password-stdin",
                field="login",
            )
        if by is not None and not by.sees_customer(user.customer_id):
            raise NotFound(f"no user with login {login.strip()!r}", field="login")
        link, issued = self._new_link(user, by)
        self.save(user, link)
        return issued

    def set_password_with_link(self, token: str, password: str) -> UUID:
        """The user sets their password with the link's token; the link is used up.
        Unknown, used, replaced and expired links all answer alike (NotFound)."""
        single_line(token, "token")
        password = self._acceptable_password(password)
        gone = NotFound("this set-password link is not valid (used, replaced or expired)")
        try:
            link = self._get(link_id(token), PasswordLink, "link")
        except NotFound:
            raise gone from None
        if self.clock.now() >= link.expires_at:
            raise gone
        user = self._get(link.user_id, User, "user")
        if user.password_link != link.id:
            raise gone
        user.change_password(self.passwords.hash(password))
        try:
            self.save(user)
        except IntegrityError:  # the same link used twice at once: one wins
            raise gone from None
        return user.id

    def password_link_valid(self, token: str) -> bool:
        """Whether the link could still set a password (the page shows its form, or says not)."""
        try:
            single_line(token, "token")
            link = self._get(link_id(token), PasswordLink, "link")
            user = self._get(link.user_id, User, "user")
        except (NotFound, InvalidInput):
            return False
        return self.clock.now() < link.expires_at and user.password_link == link.id

    def set_password(self, login: str, password: str) -> UUID:
        """The operator (the CLI) sets a Picasse staff member's password. A customer's
        user's password is never set by staff: `reset_password` sends them a link."""
        password = self._acceptable_password(password)
        user = self._user_by_login(login)
        if user.customer_id is not None:
            raise InvalidInput(
                f"user {user.login} is a customer's user: staff never set its password;"
                " a reset sends a set-password link to the user (omit --password-stdin)",
                field="password",
            )
        user.change_password(self.passwords.hash(password))
        self.save(user)
        return user.id

    def change_password(self, login: str, current: str, new: str) -> UUID:
        """The user changes their own password, proving they know the current one."""
        new = self._acceptable_password(new)
        user = self.authenticate(login, current)
        account = self._get(user.id, User, "user")
        account.change_password(self.passwords.hash(new))
        self.save(account)
        return account.id

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

    def disable_user(self, login: str, by: Viewer | None = None) -> UUID:
        """Disables a user (Conflict if already): a customer's by `change_user`'s rules."""
        return self._set_disabled(login, True, by)

    def enable_user(self, login: str, by: Viewer | None = None) -> UUID:
        """Enables a disabled user again (Conflict if not disabled)."""
        return self._set_disabled(login, False, by)

    def _set_disabled(self, login: str, disabled: bool, by: Viewer | None) -> UUID:
        user = self._user_by_login(login)
        if user.disabled == disabled:
            raise Conflict(f"user {user.login} is {'already' if disabled else 'not'} disabled")
        if user.customer_id is not None:
            self.change_user(user.customer_id, user.id, disabled=disabled, by=by)
        else:
            if disabled:
                user.disable(_actor(by))
            else:
                user.enable(_actor(by))
            self.save(user)
        return user.id

    def user(self, user_id: UUID) -> UserDetails:
        return self._details(self._get(user_id, User, "user"))

    def user_by_login(self, login: str) -> UserDetails:
        return self._details(self._user_by_login(login))

    def _user_by_login(self, text: str) -> User:
        login = parse_login(text)
        claim = self._login_claim(login)
        user = None if claim is None else self._claimant(claim)
        if user is None:  # name the login as typed, never the claim's id (its pseudonym)
            raise NotFound(f"no user with login {text.strip()!r}", field="login")
        return user

    def _login_claim(self, login: str) -> Login | None:
        try:
            return self._get(self.pseudonyms.pseudonym("login", login), Login, "login")
        except NotFound:
            return None

    def _claimant(self, claim: Login) -> User | None:
        """The user holding a claim; None once that user is erased (its login unreadable:
        its key destroyed on request or with its customer's), so the login is free again."""
        user = self._get(claim.user_id, User, "user")
        return None if isinstance(user.login, Erased) else user

    def _claim(self, login: str, user_id: UUID) -> Login:
        """The claim of `login` for a new user: new, or an erased user's claimed again. A
        claim held by a live user is left as it is, and saving it then fails as taken."""
        claim = self._login_claim(login)
        if claim is None:
            return Login(user_id=user_id, id=self.pseudonyms.pseudonym("login", login))
        if self._claimant(claim) is None:
            claim.reclaim(user_id)
            return claim
        return Login(user_id=user_id, id=claim.id)  # a second "Claimed": refused on save

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
        return acceptable_password(password)


def acceptable_password(password: str) -> str:
    """The one check of every password set anywhere: length, then zxcvbn's estimate
    of how guessable it is; its feedback is the message."""
    single_line(password, "password")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"password: at least {MIN_PASSWORD_LENGTH} characters", field="password")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(f"password: at most {MAX_PASSWORD_LENGTH} characters", field="password")
    # zxcvbn takes at most 72 characters (its time grows with length): a password that
    # long is judged by them. Imported here: its word lists take ~20 ms to load, which
    # the commands and processes that set no password need not pay.
    import zxcvbn

    estimate = zxcvbn.zxcvbn(password[:ZXCVBN_MAX_LENGTH])
    if estimate["score"] < MIN_PASSWORD_SCORE:
        feedback = estimate["feedback"]
        advice = [feedback.get("warning") or "", *feedback.get("suggestions", [])]
        said = " ".join(a for a in advice if a) or "Add another word or two."
        raise InvalidInput(f"password: too easy to guess. {said}", field="password")
    return password
