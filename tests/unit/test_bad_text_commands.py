"""Every command that takes text from a person applies the one rule of domain/values.py to
each text field, before it looks anything up or records anything. The fields are read from
the commands' own signatures and from SendRequest, so a text field added later is tried."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any
from uuid import uuid4

import argon2
import msgspec
import pytest

from picasse.adapters.clock import ManualClock
from picasse.adapters.passwords import Argon2Passwords
from picasse.adapters.pseudonyms import KeyedPseudonyms
from picasse.domain.accounts import Accounts, LoginUnavailable
from picasse.domain.errors import InvalidInput
from picasse.domain.messaging import Messages, SendRequest
from picasse.domain.privacy import Privacy
from picasse.domain.values import Role

ENV = {"PERSISTENCE_MODULE": "eventsourcing.popo"}
PSEUDONYMS = KeyedPseudonyms(b"k" * 32)
BAD = ["\x00", "\r", "\u2028"]
MULTI_LINE = {"body", "template", "text"}  # where U+2028 and U+2029 are allowed


CLOCK = ManualClock(datetime(2026, 11, 30, tzinfo=UTC))  # the process's one clock


def _accounts() -> Accounts:
    hasher = argon2.PasswordHasher(time_cost=1, memory_cost=8)
    return Accounts(ENV, passwords=Argon2Passwords(hasher), pseudonyms=PSEUDONYMS, clock=CLOCK)


def _messages() -> Messages:
    return Messages(ENV, clock=CLOCK, pseudonyms=PSEUDONYMS)


def _privacy() -> Privacy:
    return Privacy(ENV, shredder=lambda app: None, clock=CLOCK)  # type: ignore[arg-type,return-value]


# A valid value for each text parameter of each command below (they are refused anyway,
# being planted with a bad character; the others keep these values).
VALID: dict[str, Any] = {
    "organisation": "Acme", "contact_name": "Bob", "email": "bob@example.com",
    "phone": "+31612345678", "billing_address": "Street 1", "plan": "standard",
    "login": "bob", "password": "a long enough password", "token": "a-link-token", "current": "a long enough password",
    "new": "another long password", "name": "night shift", "members": ["+31612345679"],
    "authority": "Police", "legal_basis": "Art. 126nc Sv", "channel": "sms", "text": "Hi {name}",
}  # fmt: skip
# Each command's arguments that are not text (every public command of these applications
# that takes text must be here, or all its text be listed as not from a person).
APPS: dict[type, Callable[[], Any]] = {Accounts: _accounts, Messages: _messages, Privacy: _privacy}
FIXED: dict[str, dict[str, Any]] = {
    "register_customer": {},
    "change_contact": {"customer_id": uuid4()},
    "start_subscription": {"customer_id": uuid4()},
    "add_user": {"customer_id": None, "role": Role.SUPPORT},
    "invite_user": {"customer_id": uuid4(), "role": Role.CUSTOMER_USER},
    "reset_password": {},
    "set_password_with_link": {},
    "set_password": {},
    "change_password": {},
    "authenticate": {},
    "disable_user": {},
    "enable_user": {},
    "user_by_login": {},
    "create_group": {"customer_id": uuid4()},
    "replace_group_members": {"customer_id": uuid4(), "group_id": uuid4()},
    "save_template": {"customer_id": uuid4()},
    "change_template": {"customer_id": uuid4(), "template_id": uuid4()},
    "templates": {"customer_id": uuid4()},
    "record_disclosure": {"tenant_id": uuid4(), "period_from": date(2026, 1, 1),
                          "period_to": date(2026, 1, 2), "records": 0, "by": "cli"},
}  # fmt: skip
# Text a person does not give, each for a reason.
NOT_FROM_A_PERSON = {
    ("record_disclosure", "by"): "the operator's system account, set by the CLI",
    ("authenticate", "password"): "compared with a hash only, never recorded",
    ("change_password", "current"): "compared with a hash only, never recorded",
    ("password_link_valid", "token"): "only looked up, never recorded; a bad one is not valid",
    ("send_account_mail", "to"): "the user's address, checked when the user was added",
    ("send_account_mail", "subject"): "our code's words",
    ("send_account_mail", "body"): "our code's words, with a link",
    ("send", "client_ip"): "the connection's address; the request's text is tried below",
    ("record_sent", "provider"): "a provider's name, from our code",
    ("record_sent", "reference"): "a gateway's reference",
    ("record_receipt", "provider"): "the gateway's name, from our settings",
    ("record_receipt", "reference"): "a gateway's reference, compared and never recorded",
    ("acknowledge", "via"): "how, in our code's words",
    ("acknowledge", "provider"): "a provider's name, from our code",
    ("acknowledge", "reference"): "a provider's call id, compared and never recorded",
    ("group_id_of", "name_or_id"): "only looked up (as its pseudonym), never recorded",
    ("erase_subject", "subject"): "built by our code from ids",
    ("erase_subject", "reason"): "our code's words",
    ("erase_tenant", "reason"): "our code's words",
    ("record_export", "purpose"): "our code's words",
    ("record_export", "counts"): "counts per kind of personal data",
    ("record_export", "by"): "the operator's system account, set by the CLI",
    ("record_retention_run", "cutoff_month"): "a month computed by our code",
    ("record_retention_run", "erased"): "months computed by our code",
    ("record_retention_run", "reason"): "our code's words",
    ("start_termination", "by"): "the operator's system account, set by the CLI",
    ("record_termination_export", "sha256"): "a digest computed by our code",
    ("record_termination_export", "counts"): "counts per kind of personal data",
    ("record_termination_export", "by"): "the operator's system account, set by the CLI",
    ("destroy_customer_keys", "reason"): "our code's words",
    ("draft_statement", "signing_key"): "the platform's key id",
    ("record_statement", "signature"): "a signature computed by our code",
}


def _commands() -> list[tuple[Callable[[], Any], str]]:
    """(app maker, name) of every public command that takes text from a person."""
    commands = []
    for kind, make in APPS.items():
        for name, function in vars(kind).items():
            if name.startswith("_") or not inspect.isfunction(function):
                continue
            person = [p for p in _text_params(function) if (name, p) not in NOT_FROM_A_PERSON]
            if person:
                assert name in FIXED, f"{kind.__name__}.{name} takes text {person}: add it to FIXED"
                commands.append((make, name))
    return commands


def _text_params(command: Callable[..., Any]) -> list[str]:
    hints = typing.get_type_hints(command)
    return [
        name for name in inspect.signature(command).parameters if "str" in repr(hints.get(name))
    ]


def _planted(value: Any, bad: str) -> Any:
    return [value[0] + bad] if isinstance(value, list) else value[:1] + bad + value[1:]


def _cases() -> list[Any]:
    cases = []
    for make, name in _commands():
        fixed = FIXED[name]
        params = _text_params(getattr(make(), name))
        for param in params:
            if param in fixed or (name, param) in NOT_FROM_A_PERSON:
                continue
            for bad in BAD:
                if param in MULTI_LINE and bad == "\u2028":
                    continue  # allowed in a text of several lines
                kwargs = {p: VALID[p] for p in params if p not in fixed} | fixed
                kwargs[param] = _planted(VALID[param], bad)
                field = "password" if param == "new" else param
                cases.append(pytest.param(make, name, kwargs, field, id=f"{name}-{param}-{bad!r}"))
    return cases


@pytest.mark.parametrize(("make", "name", "kwargs", "field"), _cases())
def test_every_command_refuses_a_bad_character_in_each_text_field_naming_it(
    make: Callable[[], Any], name: str, kwargs: dict[str, Any], field: str
) -> None:
    app = make()

    # A login at user creation is refused with the one answer for every reason (finding 8).
    with pytest.raises((InvalidInput, LoginUnavailable)) as refused:
        getattr(app, name)(**kwargs)

    assert refused.value.field == field
    assert app.recorder.max_notification_id() in (None, 0)  # nothing recorded


def test_the_commands_cases_cover_every_text_parameter() -> None:
    tried = {(case.values[1], case.values[3]) for case in _cases()}

    assert ("register_customer", "contact_name") in tried
    assert ("add_user", "password") in tried and ("record_disclosure", "legal_basis") in tried
    assert len(tried) >= 17


def _send_fields() -> list[tuple[str, str]]:
    """(field, shape) of every text field of a send request."""
    hints = typing.get_type_hints(SendRequest)
    fields = []
    for field in msgspec.structs.fields(SendRequest):
        hint = repr(hints[field.name])
        if "dict[str, str]" in hint:
            fields.append((field.name, "dict"))
        elif "list[str]" in hint:
            fields.append((field.name, "list"))
        elif "str" in hint:
            fields.append((field.name, "str"))
    return fields


SEND_BASE: dict[str, Any] = {
    "channel": "email", "to": ["ann@example.com"], "group": "night shift", "body": "Hello",
    "template": "Hi {name}", "variables": {"name": "Ann"}, "subject": "Drill",
    "priority": "alert", "idempotency_key": "k-1", "escalation_groups": ["night shift"],
    "qr_code": "https://picasse.example/app/desk?code=x",
}  # fmt: skip


@pytest.mark.parametrize(
    ("field", "shape", "bad"),
    [
        (field, shape, bad)
        for field, shape in _send_fields()
        for bad in BAD
        if not (field in MULTI_LINE and bad == "\u2028")
    ],
)
def test_a_send_request_with_a_bad_character_in_any_text_field_is_refused_first(
    field: str, shape: str, bad: str
) -> None:
    """Before the customer, the idempotency key or the groups are looked up."""
    messages = _messages()
    value = SEND_BASE[field]
    planted = {k + bad: v for k, v in value.items()} if shape == "dict" else _planted(value, bad)
    request = SendRequest(**{"channel": "sms", field: planted})  # type: ignore[arg-type]

    with pytest.raises(InvalidInput) as refused:
        messages.send(uuid4(), request)

    assert refused.value.field == field


def test_tab_and_newline_pass_the_rule_in_a_body_and_a_template() -> None:
    messages = _messages()
    request = SendRequest(channel="sms", body="Line one\n\tline two", to=["+31612345678"])

    with pytest.raises(Exception) as stopped:  # past the rule: the customer is unknown
        messages.send(uuid4(), request)

    assert not isinstance(stopped.value, InvalidInput)
