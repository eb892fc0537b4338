"""A local Twilio for tests: the Messages and Calls resources of its REST API, and its
signed callbacks.

`FakeTwilio` answers ``POST /2010-04-01/Accounts/{sid}/Messages.json`` and
``…/Calls.json`` as Twilio documents them: basic auth with the account SID and auth token
(401 with Twilio's error 20003 otherwise), a form body, 201 with the created resource's
JSON (``sid`` "SM…" or "CA…", ``status`` "queued"). Tests steer it: answer the next
requests with a given status and Twilio error code. `callback` posts to one of our URLs
as Twilio does, signed with the SDK's `RequestValidator.compute_signature` (the same
algorithm Twilio's servers use), or with a wrong token.
"""

from __future__ import annotations

import base64
import threading
import uuid
from typing import Self
from urllib.parse import parse_qsl

import httpx
import msgspec
from twilio.request_validator import RequestValidator

from tests.integration.gateway import Reply, Running
from tests.ports import free_port

ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "twilio-auth-token"


class Created(msgspec.Struct, frozen=True):
    resource: str  # "Messages" or "Calls"
    sid: str
    form: dict[str, str]


class FakeTwilio:
    def __init__(self, account_sid: str = ACCOUNT_SID, auth_token: str = AUTH_TOKEN) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.created: list[Created] = []
        self._answers: list[tuple[int, int | None]] = []  # (HTTP status, Twilio code)
        self._lock = threading.Lock()
        self._running: Running | None = None

    @property
    def url(self) -> str:
        assert self._running is not None
        return self._running.url

    def __enter__(self) -> Self:
        self._running = Running(self._handle, free_port())
        return self

    def __exit__(self, *_: object) -> None:
        if self._running is not None:
            self._running.stop()

    def answer_next(self, status: int, code: int | None = None) -> None:
        """The next request is answered with this status and Twilio error code."""
        with self._lock:
            self._answers.append((status, code))

    def _handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        with self._lock:
            steered = self._answers.pop(0) if self._answers else None
        if steered is not None:
            status, code = steered
            # Twilio's words quote the number: ours must never reach a reason or a log.
            return _error(status, code, "The 'To' number +31612345678 is not valid")
        prefix = f"/2010-04-01/Accounts/{self.account_sid}/"
        resource = path.removeprefix(prefix).removesuffix(".json")
        if method != "POST" or not path.startswith(prefix) or resource not in ("Messages", "Calls"):
            return _error(404, 20404, "The requested resource was not found")
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if headers.get("authorization") != f"Basic {expected}":
            return _error(401, 20003, "Authenticate")
        form = dict(parse_qsl(body.decode(), keep_blank_values=True))
        sid = ("SM" if resource == "Messages" else "CA") + uuid.uuid4().hex
        with self._lock:
            self.created.append(Created(resource, sid, form))
        answer = {"sid": sid, "account_sid": self.account_sid, "status": "queued", "to": form["To"]}
        return Reply(201, msgspec.json.encode(answer))

    def callback(
        self, url: str, form: dict[str, str], *, token: str | None = None
    ) -> httpx.Response:
        """POSTs `form` to `url` as Twilio does, signed with our auth token (or `token`)."""
        signature = self.signature(url, form, token=token)
        return httpx.post(url, data=form, headers={"X-Twilio-Signature": signature}, timeout=10)

    def signature(self, url: str, form: dict[str, str], *, token: str | None = None) -> str:
        """X-Twilio-Signature of `form` posted to `url`, as Twilio computes it."""
        return str(RequestValidator(token or self.auth_token).compute_signature(url, form))


def _error(status: int, code: int | None, message: str) -> Reply:
    body = {"code": code, "message": message, "more_info": "", "status": status}
    return Reply(status, msgspec.json.encode(body))
