"""Values validate themselves once, where text becomes a value."""

from __future__ import annotations

import gc
import unicodedata
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from picasse.domain.errors import InvalidInput
from picasse.domain.values import (
    EmailAddress,
    PhoneNumber,
    Role,
    multi_line,
    parse_login,
    required_text,
    single_line,
)


def test_phone_numbers_are_stored_in_e164_form() -> None:
    assert PhoneNumber.parse("+31 6 1234 5678").e164 == "+31612345678"
    assert str(PhoneNumber.parse("+1 415-555-2671")) == "+14155552671"


@pytest.mark.parametrize(
    "text",
    [
        "+31612345678",  # Dutch mobile
        "+31 20 123 4567",  # Dutch fixed line
        "+1 415 555 2671",  # US: fixed line or mobile
        "+44 20 7946 0000",  # UK fixed line
        "+31 85 123 4567",  # Dutch VoIP
        " +31612345678 ",  # spaces around are dropped
    ],
)
def test_subscriber_numbers_are_accepted(text: str) -> None:
    assert PhoneNumber.parse(text).e164 == "+" + "".join(c for c in text if c.isdigit())


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("+1 900 555 0123", "premium-rate"),
        ("+31 909 123456", "premium-rate"),
        ("+44 871 234 5678", "premium-rate"),
        ("+1 800 555 0199", "toll-free"),
        ("+44 70 1234 5678", "personal-number"),
        ("+31 6 1234 567", "not a valid phone number"),  # a digit short
        ("+31 6 1234 56789", "not a valid phone number"),  # a digit too many
    ],
)
def test_numbers_we_do_not_send_to_are_refused_saying_why(text: str, why: str) -> None:
    with pytest.raises(InvalidInput, match=why) as refused:
        PhoneNumber.parse(text, field="to")
    assert refused.value.field == "to"


@pytest.mark.parametrize(
    "text",
    [
        "tel:+31612345678",
        "tel:+31-6-1234-5678",
        "\uff0b\uff13\uff11\uff16\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18",  # full-width
        "+31\uff16\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18",  # full-width digits
        "+\u0663\u0661\u0666\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668",  # Arabic-Indic
        "+1 (415) 555-2671",
        "+1-800-FLOWERS",
        "+31  6 1234 5678",
        "+31612345678;ext=1",
        "00 31 6 1234 5678",
    ],
)
def test_anything_but_ascii_plus_and_digits_is_refused_before_parsing(text: str) -> None:
    with pytest.raises(InvalidInput, match="international form") as refused:
        PhoneNumber.parse(text)
    assert refused.value.field == "phone"


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


def test_required_text_collapses_spaces_and_refuses_empty_or_long_text() -> None:
    assert required_text("  Acme \u00a0  BV ", "organisation") == "Acme BV"
    with pytest.raises(InvalidInput, match="organisation: must not be empty"):
        required_text("   ", "organisation")
    with pytest.raises(InvalidInput, match="at most 5"):
        required_text("abcdef", "x", max_length=5)


def test_unknown_roles_are_refused_and_platform_roles_are_known() -> None:
    with pytest.raises(InvalidInput, match="customer_admin"):
        Role.parse("root")
    assert Role.parse("auditor").is_platform
    assert not Role.CUSTOMER_USER.is_platform


# ---------------------------------------------------------------- bad characters

CONTROL = st.characters(categories=["Cc"])
LINE_BREAKS = ["\n", "\r", "\u2028", "\u2029"]
# Text with no control character, no surrogate and no line separator in it.
PLAIN = st.text(st.characters(exclude_categories=["Cc", "Cs", "Zl", "Zp"]), max_size=30)


@given(before=PLAIN, bad=CONTROL, after=PLAIN)
def test_a_control_character_is_refused_in_one_line_text_with_the_field_named(
    before: str, bad: str, after: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        single_line(before + bad + after, "contact_name")

    assert refused.value.field == "contact_name"
    assert str(refused.value).startswith("contact_name: ")
    assert f"U+{ord(bad):04X}" in str(refused.value)
    assert bad not in str(refused.value)  # the message never carries the character itself


@given(before=PLAIN, bad=CONTROL.filter(lambda c: c not in "\t\n"), after=PLAIN)
def test_a_control_character_other_than_tab_and_newline_is_refused_in_multi_line_text(
    before: str, bad: str, after: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        multi_line(before + bad + after, "body")

    assert refused.value.field == "body"


@given(lines=st.lists(PLAIN, min_size=1, max_size=5), separator=st.sampled_from(["\n", "\t"]))
def test_tab_and_newline_are_kept_in_multi_line_text_only(lines: list[str], separator: str) -> None:
    text = separator.join(lines)

    assert multi_line(text, "body") == text
    if len(lines) > 1:
        with pytest.raises(InvalidInput):
            single_line(text, "subject")


@given(text=PLAIN)
def test_text_without_control_characters_passes_both_rules_unchanged(text: str) -> None:
    assert single_line(text, "name") == text
    assert multi_line(text, "body") == text


@pytest.mark.parametrize("separator", LINE_BREAKS)
def test_line_breaks_and_unicode_line_separators_are_refused_in_one_line_text(
    separator: str,
) -> None:
    with pytest.raises(InvalidInput) as refused:
        single_line(f"Fire drill{separator}Bcc: everyone", "subject")
    assert refused.value.field == "subject"
    assert f"U+{ord(separator):04X}" in str(refused.value)


def test_unicode_line_separators_stay_allowed_in_multi_line_text() -> None:
    assert multi_line("one\u2028two\u2029three", "body") == "one\u2028two\u2029three"


def test_the_rule_covers_exactly_the_cc_category_and_lone_surrogates() -> None:
    for code in range(0x110000):
        char = chr(code)
        category = unicodedata.category(char)
        try:
            multi_line(char, "body")
        except InvalidInput:
            assert category in ("Cc", "Cs") and char not in "\t\n", f"U+{code:04X} refused"
        else:
            assert category not in ("Cc", "Cs") or char in "\t\n", f"U+{code:04X} let in"


def test_undecodable_bytes_from_a_command_line_are_refused() -> None:
    typed = b"Anna\xff".decode("utf-8", "surrogateescape")  # how Python reads such argv
    with pytest.raises(InvalidInput, match="contact_name: holds an undecodable character"):
        single_line(typed, "contact_name")


@pytest.mark.parametrize(
    ("parse", "field"),
    [
        (PhoneNumber.parse, "phone"),
        (EmailAddress.parse, "email"),
        (parse_login, "login"),
        (lambda t: required_text(t, "organisation"), "organisation"),
    ],
)
@pytest.mark.parametrize("bad", ["\x00", "\r", "\n", "\x1b", "\u2028"])
def test_every_value_parser_refuses_control_characters_even_where_it_would_strip_them(
    parse: Callable[[str], object], field: str, bad: str
) -> None:
    valid = {"phone": "+31612345678", "email": "anna@example.com", "login": "anna"}.get(
        field, "Acme"
    )
    for text in (valid + bad, bad + valid):  # phonenumbers and strip() would drop it silently
        with pytest.raises(InvalidInput) as refused:
            parse(text)
        assert refused.value.field == field


def test_phone_numbers_and_email_addresses_are_neither_tracked_nor_counted_by_the_collector() -> (
    None
):
    # A replay opens two of them per contact: allocated as tracked objects (even if
    # untracked at once), they counted towards every collection, and made a replay of
    # the bench's events trigger a collection of the whole heap.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        before = gc.get_count()[0]
        values = [(PhoneNumber("+31612345678"), EmailAddress("a@example.org")) for _ in range(5000)]
        counted = gc.get_count()[0] - before
    finally:
        if was_enabled:
            gc.enable()
    # Counted, they would be 10,000 (plus the list and its 5,000 pairs); the margin is
    # for other threads of the test process allocating meanwhile.
    assert counted < 5000 + 1000
    assert not any(gc.is_tracked(value) for pair in values for value in pair)
