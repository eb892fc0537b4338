"""The telephony provider of conference calls: its HTTP API (host controls, deleting
recordings) and the reports it posts to `/v1/webhooks/telephony`.

We call it at `PICASSE_TELEPHONY_URL` with `Authorization: Bearer <PICASSE_TELEPHONY_TOKEN>`:

- `POST /conferences/{conference}/calls/{call}/mute`, `…/unmute`, `…/remove`
- `POST /conferences/{conference}/lock`, `…/end`
- `DELETE /recordings/{reference}`

It signs each report with the same token, exactly as the SMS and voice gateways sign
their receipts (`X-Picasse-Signature: sha256=<hex HMAC-SHA256 of the body>`), and the
webhook checks it with the receipts' one verifier (`receipts.verified_signer`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from urllib.parse import quote
from uuid import UUID

import httpx
import msgspec

from picasse.domain.conferences import Control
from picasse.domain.conferencing import TelephonyUnavailable

TELEPHONY_PATH = "/v1/webhooks/telephony"
PROVIDER_NAME = "telephony"
TIMEOUT = 10.0  # seconds: a host waits for the button's answer


class HttpTelephony:
    """Host controls and recording deletions over the provider's HTTP API."""

    def __init__(self, base_url: str, token: str, *, timeout: float = TIMEOUT) -> None:
        self._base_url = base_url.rstrip("/")
        self._token = token
        self._timeout = timeout

    def __repr__(self) -> str:  # the token stays out of every log line
        return f"HttpTelephony({self._base_url!r})"

    def _call(self, method: str, path: str) -> int:
        try:
            response = httpx.request(
                method,
                f"{self._base_url}{path}",
                headers={"Authorization": f"Bearer {self._token}"},
                timeout=self._timeout,
            )
        except httpx.HTTPError as error:
            raise TelephonyUnavailable(
                f"the telephony provider could not be reached ({type(error).__name__})"
            ) from None
        return response.status_code

    def control(self, conference_id: UUID, action: Control, call: str | None) -> None:
        where = f"/conferences/{conference_id}"
        if call is not None:
            where += f"/calls/{quote(call, safe='')}"
        status = self._call("POST", f"{where}/{action.value}")
        if not 200 <= status < 300:
            raise TelephonyUnavailable(
                f"the telephony provider refused to {action.value} ({status})"
            )

    def delete_recording(self, reference: str) -> bool:
        try:
            status = self._call("DELETE", f"/recordings/{quote(reference, safe='')}")
        except TelephonyUnavailable:
            return False
        return 200 <= status < 300 or status == 404  # 404: gone already


# ---------------------------------------------------------------- the provider's reports


Text = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class _Report(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    id: Text  # the provider's id of this report: a repeat of it records nothing
    at: Annotated[datetime, msgspec.Meta(tz=True)]  # when it happened, by the provider's clock


class DialIn(_Report, frozen=True, tag="dial-in"):
    """A caller dialled `number` and entered `pin`: the answer says whether to admit."""

    number: Text
    caller: Text
    pin: Annotated[str, msgspec.Meta(max_length=32)]
    call: Text

    def __repr__(self) -> str:  # no number or PIN in any log line
        return f"DialIn({self.id})"


class Joined(_Report, frozen=True, tag="joined"):
    conference: UUID
    call: Text


class Left(_Report, frozen=True, tag="left"):
    conference: UUID
    call: Text


class Started(_Report, frozen=True, tag="started"):
    conference: UUID


class Ended(_Report, frozen=True, tag="ended"):
    conference: UUID


class RecordingAvailable(_Report, frozen=True, tag="recording"):
    conference: UUID
    recording: Text  # the provider's reference; the recording stays there


Report = DialIn | Joined | Left | Started | Ended | RecordingAvailable
ReportType = Literal["dial-in", "joined", "left", "started", "ended", "recording"]
_DECODER = msgspec.json.Decoder(Report)


class MalformedReport(Exception):
    """Signed by the provider, but not a report we know."""


def read_report(raw_body: bytes) -> Report:
    try:
        return _DECODER.decode(raw_body)
    except msgspec.DecodeError:
        raise MalformedReport("the telephony report is not one we know") from None
