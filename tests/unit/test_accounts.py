"""The Accounts application in memory: validation, unique logins, passwords (R1, R2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import argon2
import pytest

from picasse.adapters.clock import ManualClock
from picasse.adapters.crypto import MemoryKeyRing, SealingMapper
from picasse.adapters.passwords import Argon2Passwords
from picasse.adapters.pseudonyms import KeyedPseudonyms
from picasse.domain.access import Viewer
from picasse.domain.accounts import Accounts, LoginUnavailable
from picasse.domain.errors import (
    AuthenticationFailed,
    Forbidden,
    InvalidInput,
    LoginTaken,
    NotFound,
    UserDisabled,
)
from picasse.domain.users import User
from picasse.domain.values import Role

FAST = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


class InMemoryAccounts(Accounts):
    def construct_mapper(self) -> SealingMapper:
        return SealingMapper(keys=MemoryKeyRing())


def _accounts(
    hasher: argon2.PasswordHasher = FAST, clock: ManualClock | None = None
) -> InMemoryAccounts:
    return InMemoryAccounts(
        {"PERSISTENCE_MODULE": "eventsourcing.popo"},
        passwords=Argon2Passwords(hasher),
        pseudonyms=KeyedPseudonyms(b"k" * 32),
        clock=clock or ManualClock(datetime(2026, 12, 1, 9, 0, tzinfo=UTC)),
    )


STAFF = Viewer(role=Role.PLATFORM_ADMIN, customer_id=None)


def _register(accounts: Accounts, **changes: str) -> UUID:
    fields = {
        "organisation": "Acme",
        "contact_name": "Bob Jansen",
        "email": "bob@example.com",
        "phone": "+31 6 12345678",
        "billing_address": "Street 1, Utrecht",
    } | changes
    return accounts.register_customer(**fields)


def _event_count(accounts: Accounts) -> int:
    return accounts.recorder.max_notification_id() or 0


def test_a_registered_customer_shows_its_contact_details_normalised() -> None:
    accounts = _accounts()
    customer = accounts.customer(_register(accounts))
    assert customer.organisation == "Acme"
    assert customer.contact.phone == "+31612345678"
    assert customer.contact.email == "bob@example.com"


@pytest.mark.parametrize(
    ("field", "value"),
    [("phone", "06-12345678"), ("email", "bob@"), ("organisation", " "), ("contact_name", "")],
)
def test_bad_registration_input_is_refused_and_records_nothing(field: str, value: str) -> None:
    accounts = _accounts()
    with pytest.raises(InvalidInput) as refused:
        _register(accounts, **{field: value})
    assert refused.value.field == field
    assert _event_count(accounts) == 0


def test_changing_contact_details_keeps_what_was_not_changed() -> None:
    accounts = _accounts()
    customer_id = _register(accounts)
    accounts.change_contact(customer_id, email="new@example.com")
    contact = accounts.customer(customer_id).contact
    assert (contact.name, contact.email) == ("Bob Jansen", "new@example.com")


def test_unknown_customers_are_not_found() -> None:
    with pytest.raises(NotFound):
        _accounts().customer(UUID(int=5))


def test_a_login_can_be_claimed_once_only() -> None:
    accounts = _accounts()
    customer_id = _register(accounts)
    accounts.invite_user(
        customer_id=customer_id, login="bob", role=Role.CUSTOMER_ADMIN, email="bob@example.com"
    )
    before = _event_count(accounts)
    with pytest.raises(LoginTaken):
        accounts.invite_user(
            customer_id=customer_id,
            login="BOB",
            role=Role.CUSTOMER_USER,
            email="bob2@example.com",
            by=Viewer(role=Role.CUSTOMER_ADMIN, customer_id=customer_id),
        )
    assert _event_count(accounts) == before


def test_a_refused_login_gets_one_answer_whatever_the_reason() -> None:
    """Finding 8: taken by another customer, by staff, or invalid: all alike."""
    accounts = _accounts()
    other, mine = _register(accounts), _register(accounts, organisation="Mine")
    accounts.invite_user(
        customer_id=other, login="taken-there", role=Role.CUSTOMER_ADMIN, email="a@example.com"
    )
    accounts.add_user(
        customer_id=None, login="staff-login", role=Role.SUPPORT, password="tulip harbour quietly"
    )
    accounts.invite_user(
        customer_id=mine, login="mine-admin", role=Role.CUSTOMER_ADMIN, email="m@example.com"
    )
    admin = Viewer(role=Role.CUSTOMER_ADMIN, customer_id=mine)
    answers = set()
    for login in ("taken-there", "staff-login", "x", "bad login!", "mine-admin"):
        with pytest.raises(LoginUnavailable) as refused:
            accounts.invite_user(
                customer_id=mine, login=login, role=Role.CUSTOMER_USER, email="n@example.com",
                by=admin,
            )  # fmt: skip
        error = refused.value
        answers.add((type(error), error.code, error.message, error.field))
    assert len(answers) == 1


def test_customer_users_get_no_password_from_staff_and_staff_take_no_customer() -> None:
    accounts = _accounts()
    customer_id = _register(accounts)
    with pytest.raises(InvalidInput):
        accounts.add_user(
            customer_id=customer_id,
            login="bob",
            role=Role.CUSTOMER_USER,
            password="a-long-password",
        )
    with pytest.raises(InvalidInput):
        accounts.add_user(
            customer_id=customer_id,
            login="ann",
            role=Role.PLATFORM_ADMIN,
            password="a-long-password",
        )
    with pytest.raises(InvalidInput):
        accounts.invite_user(
            customer_id=customer_id, login="ann", role=Role.SUPPORT, email="ann@example.com"
        )
    staff = accounts.add_user(
        customer_id=None, login="ann", role=Role.PLATFORM_ADMIN, password="a-long-password"
    )
    assert accounts.user(staff).customer_id is None
    with pytest.raises(InvalidInput):
        accounts.invite_user(
            customer_id=customer_id, login="bob", role=Role.CUSTOMER_USER, email="bob@"
        )


def test_staff_add_a_customers_first_admin_only() -> None:
    """Finding 1: after that, only the customer's own admins add its users."""
    accounts = _accounts()
    customer_id = _register(accounts)
    for role in (Role.SUPPORT, Role.AUDITOR):
        with pytest.raises(Forbidden):
            accounts.invite_user(
                customer_id=customer_id, login="x-admin", role=Role.CUSTOMER_ADMIN,
                email="x@example.com", by=Viewer(role=role, customer_id=None),
            )  # fmt: skip
    with pytest.raises(Forbidden):  # not a plain user, not even the first
        accounts.invite_user(
            customer_id=customer_id, login="u-one", role=Role.CUSTOMER_USER,
            email="u@example.com", by=STAFF,
        )  # fmt: skip
    accounts.invite_user(
        customer_id=customer_id, login="first-admin", role=Role.CUSTOMER_ADMIN,
        email="first@example.com", by=STAFF,
    )  # fmt: skip
    for role in (Role.CUSTOMER_ADMIN, Role.CUSTOMER_USER):
        with pytest.raises(Forbidden):
            accounts.invite_user(
                customer_id=customer_id, login=f"second-{role.value}", role=role,
                email="second@example.com", by=STAFF,
            )  # fmt: skip
    with pytest.raises(Forbidden):  # the CLI is staff too
        accounts.invite_user(
            customer_id=customer_id, login="cli-admin", role=Role.CUSTOMER_ADMIN,
            email="c@example.com",
        )  # fmt: skip
    own_admin = Viewer(role=Role.CUSTOMER_ADMIN, customer_id=customer_id)
    accounts.invite_user(
        customer_id=customer_id, login="second-admin", role=Role.CUSTOMER_ADMIN,
        email="second@example.com", by=own_admin,
    )  # fmt: skip
    other = _register(accounts, organisation="Other")
    with pytest.raises(Forbidden):
        accounts.invite_user(
            customer_id=other, login="foreign", role=Role.CUSTOMER_USER,
            email="f@example.com", by=own_admin,
        )  # fmt: skip


def test_a_set_password_link_works_once_for_24_hours_and_the_log_holds_no_token() -> None:
    clock = ManualClock(datetime(2026, 12, 1, 9, 0, tzinfo=UTC))
    accounts = _accounts(clock=clock)
    customer_id = _register(accounts)
    link = accounts.invite_user(
        customer_id=customer_id, login="bob", role=Role.CUSTOMER_ADMIN, email="bob@example.com"
    )
    assert link.email == "bob@example.com" and link.expires_at == clock.now() + timedelta(hours=24)
    assert link.token not in repr(link)
    with pytest.raises(AuthenticationFailed):  # no password until the user sets one
        accounts.authenticate("bob", "")
    stored = b"".join(n.state for n in accounts.recorder.select_notifications(start=1, limit=1000))
    assert link.token.encode() not in stored and b"bob@example.com" not in stored
    assert accounts.password_link_valid(link.token)
    user_id = accounts.set_password_with_link(link.token, "tulip harbour quietly")
    assert user_id == link.user_id
    assert accounts.authenticate("bob", "tulip harbour quietly").id == user_id
    assert not accounts.password_link_valid(link.token)
    with pytest.raises(NotFound):  # once only
        accounts.set_password_with_link(link.token, "another harbour tulip")
    # A reset replaces the link; the old one is dead, the new one expires after 24 hours.
    first = accounts.reset_password("bob", by=STAFF)
    second = accounts.reset_password("bob", by=STAFF)
    with pytest.raises(NotFound):
        accounts.set_password_with_link(first.token, "another harbour tulip")
    clock.advance(timedelta(hours=24))
    assert not accounts.password_link_valid(second.token)
    with pytest.raises(NotFound):
        accounts.set_password_with_link(second.token, "another harbour tulip")
    third = accounts.reset_password("bob")
    clock.advance(timedelta(hours=23, minutes=59))
    accounts.set_password_with_link(third.token, "another harbour tulip")
    accounts.authenticate("bob", "another harbour tulip")


def test_staff_never_set_a_customer_users_password() -> None:
    accounts = _accounts()
    customer_id = _register(accounts)
    accounts.invite_user(
        customer_id=customer_id, login="bob", role=Role.CUSTOMER_ADMIN, email="bob@example.com"
    )
    with pytest.raises(InvalidInput, match="link"):
        accounts.set_password("bob", "tulip harbour quietly")
    accounts.add_user(
        customer_id=None, login="ann", role=Role.SUPPORT, password="tulip harbour quietly"
    )
    with pytest.raises(InvalidInput, match="staff"):
        accounts.reset_password("ann")
    accounts.set_password("ann", "another harbour tulip")


@pytest.mark.parametrize("weak", [" " * 15, "aaaaaaaaaaaaaaaa", "password1234"])
def test_easily_guessed_passwords_are_refused_with_zxcvbns_feedback(weak: str) -> None:
    """Finding 6: every place a password is set goes through the one check."""
    accounts = _accounts()
    with pytest.raises(InvalidInput, match="too easy to guess") as refused:
        accounts.add_user(customer_id=None, login="ann", role=Role.SUPPORT, password=weak)
    assert refused.value.field == "password"
    assert "common" in refused.value.message or "Repeat" in refused.value.message
    customer_id = _register(accounts)
    link = accounts.invite_user(
        customer_id=customer_id, login="bob", role=Role.CUSTOMER_ADMIN, email="bob@example.com"
    )
    with pytest.raises(InvalidInput, match="too easy to guess"):
        accounts.set_password_with_link(link.token, weak)


def test_short_passwords_are_refused() -> None:
    accounts = _accounts()
    with pytest.raises(InvalidInput, match="password"):
        accounts.add_user(customer_id=None, login="ann", role=Role.SUPPORT, password="short")


def test_passwords_are_stored_as_argon2id_hashes_and_verify() -> None:
    accounts = _accounts()
    user_id = accounts.add_user(
        customer_id=None, login="ann", role=Role.SUPPORT, password="a-long-password"
    )
    user: User = accounts.repository.get(user_id)
    assert user.password_hash is not None and user.password_hash.startswith("$argon2id$")
    assert "a-long-password" not in user.password_hash
    assert accounts.authenticate("ann", "a-long-password").id == user_id
    with pytest.raises(AuthenticationFailed):
        accounts.authenticate("ann", "wrong-password")
    with pytest.raises(AuthenticationFailed):
        accounts.authenticate("nobody", "a-long-password")


def test_changing_a_password_needs_the_current_one_and_replaces_it() -> None:
    accounts = _accounts()
    accounts.add_user(customer_id=None, login="ann", role=Role.SUPPORT, password="a-long-password")
    with pytest.raises(AuthenticationFailed):
        accounts.change_password("ann", "not-the-password", "another-long-one")
    accounts.change_password("ann", "a-long-password", "another-long-one")
    accounts.authenticate("ann", "another-long-one")
    with pytest.raises(AuthenticationFailed):
        accounts.authenticate("ann", "a-long-password")


def test_a_hash_made_with_old_parameters_is_replaced_at_the_next_login() -> None:
    accounts = _accounts(argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    user_id = accounts.add_user(
        customer_id=None, login="ann", role=Role.SUPPORT, password="a-long-password"
    )
    accounts.passwords = Argon2Passwords(
        argon2.PasswordHasher(time_cost=2, memory_cost=16, parallelism=1)
    )
    accounts.authenticate("ann", "a-long-password")
    user: User = accounts.repository.get(user_id)
    assert user.password_hash is not None and "m=16,t=2" in user.password_hash
    assert accounts.repository.get(user_id).version == 2


def test_a_disabled_user_cannot_log_in() -> None:
    accounts = _accounts()
    accounts.add_user(customer_id=None, login="ann", role=Role.SUPPORT, password="a-long-password")
    accounts.disable_user("ann")
    with pytest.raises(UserDisabled):
        accounts.authenticate("ann", "a-long-password")


def test_a_very_long_password_is_judged_by_its_first_72_characters() -> None:
    accounts = _accounts()
    strong = "tulip harbour quietly " * 40
    accounts.add_user(customer_id=None, login="ann", role=Role.SUPPORT, password=strong)
    with pytest.raises(InvalidInput, match="too easy to guess"):
        accounts.add_user(customer_id=None, login="bob", role=Role.SUPPORT, password="a" * 1000)
