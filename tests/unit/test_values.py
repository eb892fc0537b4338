"""Values validate themselves once, where text becomes a value."""

from __future__ import annotations

import pytest

from picasse.domain.errors import InvalidInput
from picasse.domain.values import EmailAddress, PhoneNumber, Role, parse_login, required_text


def test_phone_numbers_are_stored_in_e164_form() -> None:
    assert PhoneNumber.parse("+31 6 1234 5678").e164 == "+31612345678"
    assert str(PhoneNumber.parse("+1 (415) 555-2671")) == "+14155552671"


@pytest.mark.parametrize("text", ["0612345678", "+31 6", "phone", "", "+999 123"])
def test_malformed_phone_numbers_are_refused_with_the_field_named(text: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        PhoneNumber.parse(text)
    assert refused.value.field == "phone"
    assert "phone" in str(refused.value)


def test_email_addresses_are_normalised() -> None:
    assert EmailAddress.parse("Bob@Example.COM").address == "Bob@example.com"


@pytest.mark.parametrize("text", ["bob", "bob@", "@example.com", "a b@example.com", ""])
def test_malformed_email_addresses_are_refused(text: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        EmailAddress.parse(text)
    assert refused.value.field == "email"


def test_logins_are_lower_case_and_limited_to_safe_characters() -> None:
    assert parse_login("  Bob@Acme.NL ") == "bob@acme.nl"
    with pytest.raises(InvalidInput):
        parse_login("bo")
    with pytest.raises(InvalidInput):
        parse_login("bob smith")


def test_required_text_collapses_whitespace_and_refuses_empty_or_long_text() -> None:
    assert required_text("  Acme \n BV ", "organisation") == "Acme BV"
    with pytest.raises(InvalidInput, match="organisation: must not be empty"):
        required_text("   ", "organisation")
    with pytest.raises(InvalidInput, match="at most 5"):
        required_text("abcdef", "x", max_length=5)


def test_unknown_roles_are_refused_and_platform_roles_are_known() -> None:
    with pytest.raises(InvalidInput, match="customer_admin"):
        Role.parse("root")
    assert Role.parse("auditor").is_platform
    assert not Role.CUSTOMER_USER.is_platform
