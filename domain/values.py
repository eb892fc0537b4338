"""Value objects that validate themselves once, where text becomes a value."""

from __future__ import annotations

import email.policy
import re
from enum import StrEnum
from functools import cache

import msgspec

from picasse.domain.errors import InvalidInput

# The one rule for text a person gives: every command applies it to every text field, so
# the API, the CLI and the forms refuse the same. A control character (Unicode category
# Cc: U+0000 to U+001F, U+007F to U+009F) or a lone surrogate (undecodable bytes from a
# command line) is refused everywhere: a NUL stops the database, or a view that meets it.
# Free text of several lines (message bodies, templates) keeps tab and newline; one-line
# text (names, subjects, addresses, logins, keys) refuses them too, and U+2028 and U+2029.
_NOT_IN_MULTI_LINE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_NOT_IN_SINGLE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_NAMES = {
    "\n": "a line break",
    "\r": "a carriage return",
    "\u2028": "a line separator",
    "\u2029": "a paragraph separator",
}


def single_line(text: str, field: str) -> str:
    """`text` as given, if it is one line without control characters; else InvalidInput."""
    return _refuse(_NOT_IN_SINGLE_LINE, text, field)


def header_text(text: str, field: str) -> str:
    """`text` as given, if it is one line both as typed and as a mail program reads it in a
    header; else InvalidInput.

    RFC 2047 encoded words (`=?utf-8?q?Invoice=0D=0AReply-To:_x@evil.example?=`) are
    decoded by the `email` package where it parses a header, and the decoded line breaks
    were written out as new header lines (CPython gh-121650): a subject or an address
    could add headers, or a body part, to the mail. So every value that becomes a mail
    header is checked here twice: as typed, and decoded by the same parser that builds
    the mail (the standard policy's header factory).
    """
    single_line(text, field)
    decoded = str(email.policy.default.header_factory("subject", text))
    found = _NOT_IN_SINGLE_LINE.search(decoded)
    if found is not None:
        raise InvalidInput(
            f"{field}: an encoded word (=?charset?…?=) in it decodes to"
            f" {_what(found.group())}; give plain text",
            field=field,
        )
    return text


def multi_line(text: str, field: str) -> str:
    """`text` as given, if it holds no control character but tab and newline; else InvalidInput."""
    return _refuse(_NOT_IN_MULTI_LINE, text, field)


def _refuse(pattern: re.Pattern[str], text: str, field: str) -> str:
    found = pattern.search(text)
    if found is None:
        return text
    char = found.group()
    raise InvalidInput(
        f"{field}: holds {_what(char)} (U+{ord(char):04X} at position {found.start() + 1});"
        " give plain text",
        field=field,
    )


def _what(char: str) -> str:
    if char in _NAMES:
        return _NAMES[char]
    if "\ud800" <= char <= "\udfff":
        return "an undecodable character"
    return "a control character"


# What a phone number may look like as typed: an ASCII "+" and country code, then ASCII
# digits in groups split by one space or hyphen ("+31 6 1234 5678", "+1 415-555-2671").
# phonenumbers alone is lenient: it reads "tel:" URIs, full-width and other scripts'
# digits, letters (1-800-FLOWERS) and punctuation, so a stored number could differ from
# what the person saw and typed. Anything else is refused before it is parsed.
_PHONE_TEXT = re.compile(r"\+[0-9]+(?:[ -][0-9]+)*")
# Numbers a customer may message or call: subscribers' lines. Premium-rate and shared-cost
# numbers make the platform pay whoever owns them (toll fraud); toll-free, pager, UAN,
# personal (UK 070) and voicemail numbers are services, not people, and take no SMS.
# (Names of phonenumbers.PhoneNumberType: phonenumbers, ~20 ms to import with its metadata,
# is imported by the first parse, not by every process that imports the domain.)
SENDABLE_NUMBER_TYPES = frozenset({"MOBILE", "FIXED_LINE", "FIXED_LINE_OR_MOBILE", "VOIP"})


@cache
def _number_type_names() -> dict[int, str]:
    """phonenumbers.PhoneNumberType's values → their names."""
    import phonenumbers

    return {
        value: name
        for name, value in vars(phonenumbers.PhoneNumberType).items()
        if name.isupper() and isinstance(value, int)
    }


class PhoneNumber(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A phone number in E.164 form, e.g. +31612345678.

    gc=False: it holds one str, so it can never be in a reference cycle; a replay that
    opens a million of them makes the garbage collector neither count nor scan them.
    """

    e164: str

    @classmethod
    def parse(cls, text: str, *, field: str = "phone") -> PhoneNumber:
        """The one check of a phone number a person gives: international form in ASCII
        (`_PHONE_TEXT`), possible and valid for its country, and of a type we send to
        (`SENDABLE_NUMBER_TYPES`); else InvalidInput naming `field`."""
        import phonenumbers

        single_line(text, field)
        if not _PHONE_TEXT.fullmatch(text.strip()):
            raise InvalidInput(
                f"{field}: give the number in international form, as + and digits"
                " (spaces or hyphens between groups allowed), e.g. +31 6 1234 5678",
                field=field,
            )
        try:
            number = phonenumbers.parse(text.strip(), None)
        except phonenumbers.NumberParseException:
            raise InvalidInput(
                f"{field}: not a phone number in international form (+country…)", field=field
            ) from None
        # A number is valid exactly when its type is known (phonenumbers' is_valid_number
        # is that same type look-up): one look-up, not two, for every recipient of a send.
        kind = (
            phonenumbers.number_type(number)
            if phonenumbers.is_possible_number(number)
            else phonenumbers.PhoneNumberType.UNKNOWN
        )
        if kind == phonenumbers.PhoneNumberType.UNKNOWN:
            raise InvalidInput(f"{field}: not a valid phone number", field=field)
        name = _number_type_names().get(kind, "UNKNOWN")
        if name not in SENDABLE_NUMBER_TYPES:
            what = name.lower().replace("_", "-")
            raise InvalidInput(
                f"{field}: a {what} number; only mobile, fixed-line and VoIP numbers are accepted",
                field=field,
            )
        return cls(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))

    def __str__(self) -> str:
        return self.e164


class EmailAddress(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A syntactically valid e-mail address in normalised form (gc=False: as PhoneNumber)."""

    address: str

    @classmethod
    def parse(cls, text: str, *, field: str = "email") -> EmailAddress:
        header_text(text, field)  # an address is written into the To header
        # Imported here: its regular expressions take ~20 ms to compile, which commands
        # that take no address need not pay.
        import email_validator

        try:
            valid = email_validator.validate_email(text, check_deliverability=False)
        except email_validator.EmailNotValidError as error:
            raise InvalidInput(f"{field}: {error}", field=field) from None
        return cls(valid.normalized)

    def __str__(self) -> str:
        return self.address


class Role(StrEnum):
    CUSTOMER_ADMIN = "customer_admin"
    CUSTOMER_USER = "customer_user"
    PLATFORM_ADMIN = "platform_admin"
    SUPPORT = "support"
    AUDITOR = "auditor"

    @property
    def is_platform(self) -> bool:
        return self in PLATFORM_ROLES

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls(text)
        except ValueError:
            allowed = ", ".join(r.value for r in cls)
            raise InvalidInput(f"role: must be one of {allowed}", field="role") from None


PLATFORM_ROLES = frozenset({Role.PLATFORM_ADMIN, Role.SUPPORT, Role.AUDITOR})

_LOGIN = re.compile(r"^[a-z0-9][a-z0-9._@+-]{2,253}$")


def parse_login(text: str) -> str:
    login = single_line(text, "login").strip().lower()
    if not _LOGIN.match(login):
        raise InvalidInput(
            "login: 3 to 254 characters of a-z, 0-9 and . _ @ + -, starting with a letter or digit",
            field="login",
        )
    return login


def required_text(text: str, field: str, *, max_length: int = 500) -> str:
    """One line of text, its runs of spaces made one; InvalidInput if empty or too long."""
    value = " ".join(single_line(text, field).split())
    if not value:
        raise InvalidInput(f"{field}: must not be empty", field=field)
    if len(value) > max_length:
        raise InvalidInput(f"{field}: at most {max_length} characters", field=field)
    return value
