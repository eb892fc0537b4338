"""A local HTTP server playing the telephony provider: it records the API calls Picasse
makes (host controls, recording deletions) and posts signed reports to Picasse's webhook,
as the real provider would."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

import httpx
import msgspec

from picasse.adapters.providers.receipts import SIGNATURE_HEADER, sign_receipt
from picasse.adapters.providers.telephony import TELEPHONY_PATH


class ApiCall(msgspec.Struct, frozen=True):
    method: str
    path: str
    authorization: str | None


class FakeTelephony:
    """`with FakeTelephony(token) as provider:` — `provider.url` is its API's base URL."""

    def __init__(self, token: str, status: int = 204) -> None:
        self.token = token
        self.status = status  # what the API answers
        self._calls: list[ApiCall] = []
        self._lock = threading.Lock()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                with provider._lock:
                    provider._calls.append(
                        ApiCall(self.command, self.path, self.headers.get("authorization"))
                    )
                self.send_response(provider.status)
                self.send_header("content-length", "0")
                self.end_headers()

            do_POST = do_DELETE = _answer

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def calls(self) -> list[ApiCall]:
        with self._lock:
            return list(self._calls)

    # ------------------------------------------------------------ reports to Picasse

    def report(
        self, picasse_url: str, kind: str, at: datetime, *, token: str | None = None,
        report_id: str | None = None, **fields: object,
    ) -> httpx.Response:  # fmt: skip
        """Posts a signed report (signed with `token`, default ours) to Picasse's webhook."""
        body = msgspec.json.encode(
            {"type": kind, "id": report_id or uuid.uuid4().hex, "at": at.isoformat(), **fields}
        )
        return self.post_raw(picasse_url, body, sign_receipt(body, token or self.token))

    @staticmethod
    def post_raw(picasse_url: str, body: bytes, signature: str | None) -> httpx.Response:
        headers = {"content-type": "application/json"}
        if signature is not None:
            headers[SIGNATURE_HEADER] = signature
        return httpx.post(
            f"{picasse_url}{TELEPHONY_PATH}", content=body, headers=headers, timeout=20
        )
