"""The access policy answers as the table in its docstring says, cell by cell, so the table
people read is the policy that runs."""

from __future__ import annotations

import uuid

import pytest

import picasse.domain.access as access
from picasse.domain.access import Viewer
from picasse.domain.values import Role

OWN, OTHER = uuid.uuid4(), uuid.uuid4()


def _table() -> list[tuple[str, dict[Role, str]]]:
    lines = [line for line in (access.__doc__ or "").splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    roles = [Role(name) for name in header[1:]]
    rows = []
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows.append((cells[0].split()[0], dict(zip(roles, cells[1:], strict=True))))
    return rows


def _viewer(role: Role) -> Viewer:
    return Viewer(role=role, customer_id=None if role.is_platform else OWN, user_id=uuid.uuid4())


def _answers(viewer: Viewer, question: str) -> str:
    """What the method answers, in the table's words."""
    method = getattr(viewer, question)
    if question == "may_host":  # (customer, the conference's host)
        if method(OTHER, viewer.user_id):
            return "all"
        if method(OWN, uuid.uuid4()):
            return "own"
        return "own as host" if method(OWN, viewer.user_id) else "no"
    if question in ("may_use_dashboard", "may_use_customer_pages", "may_manage_dial_in_numbers"):
        return "yes" if method() else "no"
    if question in ("may_revoke_key_of", "sees_api_keys_of"):  # (owner, owner's customer)
        if method(uuid.uuid4(), OTHER):
            return "any key"
        if method(uuid.uuid4(), OWN):
            return "own customer's"
        return "own" if method(viewer.user_id, None) else "no"
    if question == "may_add_users_to" and viewer.is_staff and method(OWN):
        first_only = not method(OWN, customer_has_admin=True) and not method(
            OWN, role=Role.CUSTOMER_USER
        )
        return "admin if none" if first_only else "all"
    own, other = method(OWN), method(OTHER)
    return {(True, True): "all", (True, False): "own", (False, False): "no"}[(own, other)]


@pytest.mark.parametrize(("question", "cells"), _table(), ids=[q for q, _ in _table()])
def test_each_question_answers_each_role_as_the_table_says(
    question: str, cells: dict[Role, str]
) -> None:
    for role, said in cells.items():
        assert _answers(_viewer(role), question) == said, (question, role.value)


def test_the_table_covers_every_question_and_every_role() -> None:
    questions = {
        name
        for name in vars(Viewer)
        if name.startswith(("sees_", "may_")) and callable(getattr(Viewer, name))
    }
    table = _table()

    assert {question for question, _ in table} == questions
    assert all(set(cells) == set(Role) for _, cells in table)
