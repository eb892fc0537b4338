"""Voice alerts: a text-to-speech call placed through an HTTP gateway speaking our protocol.

- Submit: ``POST {base_url}/calls`` with ``Authorization: Bearer {token}`` and the JSON
  object ``{"to": "+316…", "text": "<what the call says>", "reference": "<our reference>",
  "status_callback": "<our receipt webhook URL>"}``.
- Answers and failures map exactly as for SMS (see ``sms``): 200/201/202 with
  ``{"id": "<gateway id>"}`` is a call placed, its outcome ("answered", "no-answer",
  "busy", "failed") arriving later as a signed receipt; 400/404/422 and 401/403 are
  permanent; 429, 5xx, timeouts and connection errors are temporary.
"""

from __future__ import annotations

import msgspec

from picasse.adapters.providers import Delivery, Sent
from picasse.adapters.providers.sms import HttpGateway


class CallSubmission(msgspec.Struct, frozen=True, kw_only=True):
    to: str
    text: str
    reference: str
    status_callback: str


class HttpVoiceGateway(HttpGateway):
    """One telephony gateway; `name` (e.g. "voice") is what `Sent.provider` says."""

    async def send(self, delivery: Delivery) -> Sent:
        submission = CallSubmission(
            to=delivery.to,
            text=delivery.body,
            reference=delivery.reference,
            status_callback=self.callback_url,
        )
        gateway_id = await self._gateway.submit("/calls", submission)
        return Sent(provider=self.name, provider_reference=gateway_id, final=False)
