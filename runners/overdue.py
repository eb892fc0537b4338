"""The scheduler's overdue job: invoices unpaid after their due date become overdue, and
their customers' contacts get a reminder through the messaging pipeline."""

from __future__ import annotations

from datetime import datetime, timedelta

from picasse.domain.billing import Billing
from picasse.domain.messaging import Messages


class OverdueJob:
    name = "overdue"  # also the role: one process marks invoices overdue at a time
    every = timedelta(hours=1)

    def __init__(self, messages: Messages) -> None:
        self.messages = messages
        self.billing = Billing(clock=messages.clock, sharing=messages)

    def run(self, now: datetime) -> str:
        became = self.billing.mark_overdue(remind=self.messages.send_account_mail)
        return f"{len(became)} invoice(s) became overdue; their contacts were reminded"
