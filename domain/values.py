"""Value objects that validate themselves once, where text becomes a value."""

from __future__ import annotations

import re
from enum import StrEnum

import email_validator
import msgspec
import phonenumbers

from picasse.domain.errors import InvalidInput


class PhoneNumber(msgspec.Struct, frozen=True, array_like=True):
    """A phone number in E.164 form, e.g. +31612345678."""

    e164: str

    @classmethod
    def parse(cls, text: str, *, field: str = "phone") -> PhoneNumber:
        try:
            number = phonenumbers.parse(text, None)
        except phonenumbers.NumberParseException:
            raise InvalidInput(
                f"{field}: not a phone number in international form (+country…)", field=field
            ) from None
        if not phonenumbers.is_valid_number(number):
            raise InvalidInput(f"{field}: not a valid phone number", field=field)
        return cls(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))

    def __str__(self) -> str:
        return self.e164


class EmailAddress(msgspec.Struct, frozen=True, array_like=True):
    """A syntactically valid e-mail address in normalised form."""

    address: str

    @classmethod
    def parse(cls, text: str, *, field: str = "email") -> EmailAddress:
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
    login = text.strip().lower()
    if not _LOGIN.match(login):
        raise InvalidInput(
            "login: 3 to 254 characters of a-z, 0-9 and . _ @ + -, starting with a letter or digit",
            field="login",
        )
    return login


def required_text(text: str, field: str, *, max_length: int = 500) -> str:
    value = " ".join(text.split())
    if not value:
        raise InvalidInput(f"{field}: must not be empty", field=field)
    if len(value) > max_length:
        raise InvalidInput(f"{field}: at most {max_length} characters", field=field)
    return value
