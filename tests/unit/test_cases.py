"""A case's one way through: open → in_progress → resolved → closed, each step an event."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest

from picasse.domain.cases import Case, CaseCategory, CaseClosed, CaseState, CaseStepRefused, Comment

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def _case() -> Case:
    return Case(id=uuid4(), tenant_id=uuid4(), category=CaseCategory.COMPLAINT,
                description="It broke", message_id=None, conference_id=None,
                filed_by=uuid4(), filed_at=NOW)  # fmt: skip


def test_a_case_moves_one_step_at_a_time_and_records_each() -> None:
    case = _case()
    for state in (CaseState.IN_PROGRESS, CaseState.RESOLVED, CaseState.CLOSED):
        case.move_to(state, None, NOW)
    names = [type(e).__name__ for e in case.collect_events()]
    assert names == ["Filed", "StateChanged", "StateChanged", "StateChanged"]
    assert case.state is CaseState.CLOSED


@pytest.mark.parametrize("state", [CaseState.OPEN, CaseState.RESOLVED, CaseState.CLOSED])
def test_a_new_case_cannot_skip_or_repeat_a_step(state: CaseState) -> None:
    case = _case()
    with pytest.raises(CaseStepRefused):
        case.move_to(state, None, NOW)
    assert case.state is CaseState.OPEN


def test_a_closed_case_takes_no_more_comments() -> None:
    case = _case()
    case.comment(Comment(at=NOW, by=None, from_support=True, text="On it"))
    for state in (CaseState.IN_PROGRESS, CaseState.RESOLVED, CaseState.CLOSED):
        case.move_to(state, None, NOW)
    with pytest.raises(CaseClosed):
        case.comment(Comment(at=NOW, by=None, from_support=False, text="Again"))
    assert [c.text for c in case.comments] == ["On it"]
