"""The Accounts application in memory: validation, unique logins, passwords (R1, R2)."""

from __future__ import annotations

from uuid import UUID

import argon2
import pytest

from picasse.adapters.crypto import MemoryKeyRing, SealingMapper
from picasse.adapters.passwords import Argon2Passwords
from picasse.adapters.pseudonyms import KeyedPseudonyms
from picasse.domain.accounts import Accounts
from picasse.domain.errors import (
    AuthenticationFailed,
    InvalidInput,
    LoginTaken,
    NotFound,
    UserDisabled,
)
from picasse.domain.values import Role

FAST = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


class InMemoryAccounts(Accounts):
    def construct_mapper(self) -> SealingMapper:  # type: ignore[override]
        return SealingMapper(keys=MemoryKeyRing())


def _accounts(hasher: argon2.PasswordHasher = FAST) -> InMemoryAccounts:
    return InMemoryAccounts(
        {"PERSISTENCE_MODULE": "eventsourcing.popo"},
        passwords=Argon2Passwords(hasher),
        pseudonyms=KeyedPseudonyms(b"k" * 32),
    )


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
    accounts.add_user(
        customer_id=customer_id, login="bob", role=Role.CUSTOMER_ADMIN, password="a-long-password"
    )
    before = _event_count(accounts)
    with pytest.raises(LoginTaken):
        accounts.add_user(
            customer_id=customer_id,
            login="BOB",
            role=Role.CUSTOMER_USER,
            password="a-long-password",
        )
    assert _event_count(accounts) == before


def test_customer_roles_need_a_customer_and_platform_roles_refuse_one() -> None:
    accounts = _accounts()
    customer_id = _register(accounts)
    with pytest.raises(InvalidInput):
        accounts.add_user(
            customer_id=None, login="bob", role=Role.CUSTOMER_USER, password="a-long-password"
        )
    with pytest.raises(InvalidInput):
        accounts.add_user(
            customer_id=customer_id,
            login="ann",
            role=Role.PLATFORM_ADMIN,
            password="a-long-password",
        )
    staff = accounts.add_user(
        customer_id=None, login="ann", role=Role.PLATFORM_ADMIN, password="a-long-password"
    )
    assert accounts.user(staff).customer_id is None


def test_short_passwords_are_refused() -> None:
    accounts = _accounts()
    with pytest.raises(InvalidInput, match="password"):
        accounts.add_user(customer_id=None, login="ann", role=Role.SUPPORT, password="short")


def test_passwords_are_stored_as_argon2id_hashes_and_verify() -> None:
    accounts = _accounts()
    user_id = accounts.add_user(
        customer_id=None, login="ann", role=Role.SUPPORT, password="a-long-password"
    )
    user = accounts.repository.get(user_id)
    assert user.password_hash.startswith("$argon2id$")
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
    user = accounts.repository.get(user_id)
    assert "m=16,t=2" in user.password_hash
    assert accounts.repository.get(user_id).version == 2


def test_a_disabled_user_cannot_log_in() -> None:
    accounts = _accounts()
    accounts.add_user(customer_id=None, login="ann", role=Role.SUPPORT, password="a-long-password")
    accounts.disable_user("ann")
    with pytest.raises(UserDisabled):
        accounts.authenticate("ann", "a-long-password")
