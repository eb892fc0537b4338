"""A real SMS/voice gateway and a real receipt webhook on 127.0.0.1, for tests.

`FakeGateway` is the gateway side of our protocol (see `picasse.adapters.providers.sms`,
`.voice` and `.receipts`) served over real HTTP from a thread: it checks the bearer
token, reads submissions strictly (an unknown or missing field is a 400), answers with
ids, and posts receipts signed with its token to the callback URL it was given. Tests
steer it: fail the next requests with 503, hang them past the client's timeout, refuse
numbers with 422. It signs with `hmac` itself rather than with our `sign_receipt`, so
the two sides check each other.

`ReceiptSink` is a webhook that records every POST as received, raw bytes and headers.

Both are context managers; leaving the block stops the server, wakes hanging requests
and joins the threads.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import queue
import threading
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, Self

import httpx
import msgspec

from picasse.adapters.providers import Delivery, DeliveryError, Provider, Sent

Handle = Callable[[str, str, dict[str, str], bytes], "Reply"]


class Reply(msgspec.Struct, frozen=True):
    status: int
    body: bytes = b""
    after: Callable[[], None] | None = None  # runs once the answer is on its way


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a hung request must not hold up the end of a test
    request_queue_size = 128  # end-to-end tests submit in bursts

    def __init__(self, handle: Handle, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.handle = handle


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # HTTP/1.0: one request per connection, so nothing lingers on a kept-alive socket
    # after the server stops.
    protocol_version = "HTTP/1.0"
    timeout = 10  # a client that never finishes its request frees the thread

    def do_POST(self) -> None:
        self._answer("POST")

    def do_GET(self) -> None:
        self._answer("GET")

    def _answer(self, method: str) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length > 0 else b""
        except (OSError, ValueError):
            return
        headers = {key.lower(): value for key, value in self.headers.items()}
        try:
            reply = self.server.handle(method, self.path, headers, body)
        except Exception as exc:  # a bug in the fake shows as a 500, not a silent hang
            reply = Reply(500, msgspec.json.encode({"error": f"test server bug: {exc!r}"}))
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply.body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(reply.body)
            self.wfile.flush()
        except OSError:
            return  # the client gave up (its timeout) before we answered
        if reply.after is not None:
            reply.after()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # test output stays readable; the recorded attempts tell what happened


class Running:
    """One server on a free port, served from a daemon thread."""

    def __init__(self, handle: Handle, port: int = 0) -> None:
        self.server = _Server(handle, port)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def _json(value: object) -> bytes:
    return msgspec.json.encode(value)


def _wait(condition: threading.Condition, ready: Callable[[], bool], timeout: float) -> bool:
    with condition:
        return condition.wait_for(ready, timeout=timeout)


def outcomes(provider: Provider, *deliveries: Delivery) -> list[Sent | DeliveryError]:
    """Sends each delivery in turn, in one event loop, then closes the provider."""

    async def send_all() -> list[Sent | DeliveryError]:
        results: list[Sent | DeliveryError] = []
        try:
            for delivery in deliveries:
                try:
                    results.append(await provider.send(delivery))
                except DeliveryError as failure:
                    results.append(failure)
        finally:
            await provider.close()
        return results

    return asyncio.run(send_all())


# -- the gateway ---------------------------------------------------------------------


class _SmsRequest(msgspec.Struct, forbid_unknown_fields=True):
    to: str
    body: str
    reference: str
    callback_url: str


class _CallRequest(msgspec.Struct, forbid_unknown_fields=True):
    to: str
    text: str
    reference: str
    status_callback: str


class _ReceiptBody(msgspec.Struct, omit_defaults=True):
    id: str
    reference: str
    status: str
    reason: str | None = None


_KINDS: dict[str, Literal["sms", "voice"]] = {"/messages": "sms", "/calls": "voice"}


class Submission(msgspec.Struct, frozen=True, kw_only=True):
    """A message or call the gateway accepted, as it arrived."""

    id: str  # the gateway id it answered with
    kind: Literal["sms", "voice"]
    to: str
    text: str  # `body` of an SMS, `text` of a call
    reference: str
    callback_url: str  # `callback_url` of an SMS, `status_callback` of a call
    authorization: str | None
    payload: dict[str, Any]  # the JSON object exactly as received


Outcome = Literal["accepted", "refused", "failed", "hung", "unauthorized", "bad-request"]


class Attempt(msgspec.Struct, frozen=True):
    """Any request that reached the gateway, and what became of it."""

    path: str
    outcome: Outcome
    status: int


class ReceiptPost(msgspec.Struct, frozen=True):
    """A receipt the gateway posted: the webhook's HTTP status, or why posting failed."""

    gateway_id: str
    status: str
    webhook_status: int | None
    error: str | None = None


class FakeGateway:
    """The gateway side of our protocol over real HTTP, steerable from a test.

    Requests are handled in this order: hang (if asked), fail with 503 (if asked),
    check the bearer token (401), read the submission strictly (400), refuse the number
    (if asked), accept. Only accepted submissions are recorded as `submissions`;
    every request is recorded in `attempts`.
    """

    def __init__(
        self,
        token: str = "gateway-token",
        *,
        auto_receipts: str | None = None,
        accept_status: int = 202,
        hang_seconds: float = 30.0,  # past any client timeout; closing wakes them early
    ) -> None:
        self.token = token
        self.auto_receipts = auto_receipts  # e.g. "delivered": a receipt follows each accept
        self.accept_status = accept_status
        self.hang_seconds = hang_seconds
        self._changed = threading.Condition()
        self._submissions: list[Submission] = []
        self._attempts: list[Attempt] = []
        self._receipt_posts: list[ReceiptPost] = []
        self._failures: list[int] = []  # statuses for the next requests, in order
        self._hangs = 0
        self._refused: dict[str, tuple[int, str]] = {}
        self._stopping = threading.Event()
        self._receipts: queue.Queue[str | None] = queue.Queue()
        self._running: Running | None = None
        self._receipt_thread: threading.Thread | None = None

    # -- lifetime

    def start(self) -> Self:
        if self._running is None:
            self._stopping.clear()
            self._running = Running(self._handle)
            self._receipt_thread = threading.Thread(target=self._post_receipts, daemon=True)
            self._receipt_thread.start()
        return self

    def close(self) -> None:
        self._stopping.set()  # wakes hanging requests so they end with the server
        if self._running is not None:
            self._running.stop()
            self._running = None
        if self._receipt_thread is not None:
            self._receipts.put(None)
            self._receipt_thread.join(timeout=5)
            self._receipt_thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def url(self) -> str:
        """The base URL to configure: http://127.0.0.1:<port>."""
        if self._running is None:
            raise RuntimeError("the gateway is not running; use it as a context manager")
        return self._running.url

    # -- steering

    def fail_next(self, count: int = 1, status: int = 503) -> None:
        """Answer the next `count` requests with `status` (503, 429, 500, …) and no record."""
        with self._changed:
            self._failures.extend([status] * count)

    def hang_next(self, count: int = 1) -> None:
        """Hold the next `count` requests for `hang_seconds`, then 504; nothing is recorded."""
        with self._changed:
            self._hangs += count

    def refuse(self, number: str, *, status: int = 422, error: str | None = None) -> None:
        """Refuse messages and calls to `number`.

        By default the error quotes the number back, as careless gateways do, so a test
        shows that we never pass it on.
        """
        with self._changed:
            self._refused[number] = (
                status,
                error if error is not None else f"invalid recipient {number}",
            )

    # -- what happened

    @property
    def submissions(self) -> list[Submission]:
        with self._changed:
            return list(self._submissions)

    @property
    def attempts(self) -> list[Attempt]:
        with self._changed:
            return list(self._attempts)

    @property
    def receipt_posts(self) -> list[ReceiptPost]:
        with self._changed:
            return list(self._receipt_posts)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Submission]:
        """The submissions once there are at least `count`; TimeoutError otherwise."""
        if not _wait(self._changed, lambda: len(self._submissions) >= count, timeout):
            raise TimeoutError(
                f"gateway accepted {len(self.submissions)} submissions, not {count}, "
                f"in {timeout} s; attempts: {self.attempts}"
            )
        return self.submissions

    def wait_for_receipts(self, count: int, timeout: float = 5.0) -> list[ReceiptPost]:
        """The receipts posted once there are at least `count`; TimeoutError otherwise."""
        if not _wait(self._changed, lambda: len(self._receipt_posts) >= count, timeout):
            raise TimeoutError(f"gateway posted {len(self.receipt_posts)} receipts, not {count}")
        return self.receipt_posts

    # -- receipts

    def send_receipt(
        self,
        gateway_id: str,
        status: str,
        reason: str | None = None,
        *,
        token: str | None = None,
    ) -> int:
        """Posts a signed receipt for an accepted submission to its callback URL.

        Returns the webhook's HTTP status. `token` signs with another key, for testing
        that forged receipts are turned away.
        """
        submission = self._submission(gateway_id)
        raw = _json(
            _ReceiptBody(
                id=gateway_id, reference=submission.reference, status=status, reason=reason
            )
        )
        signature = hmac.new(
            (self.token if token is None else token).encode(), raw, hashlib.sha256
        ).hexdigest()
        try:
            response = httpx.post(
                submission.callback_url,
                content=raw,
                headers={
                    "Content-Type": "application/json",
                    "X-Picasse-Signature": f"sha256={signature}",
                },
                timeout=5.0,
            )
        except httpx.HTTPError as exc:
            self._record_receipt(ReceiptPost(gateway_id, status, None, repr(exc)))
            raise
        self._record_receipt(ReceiptPost(gateway_id, status, response.status_code))
        return response.status_code

    def _submission(self, gateway_id: str) -> Submission:
        with self._changed:
            for submission in self._submissions:
                if submission.id == gateway_id:
                    return submission
        raise KeyError(f"the gateway accepted nothing with id {gateway_id!r}")

    def _record_receipt(self, post: ReceiptPost) -> None:
        with self._changed:
            self._receipt_posts.append(post)
            self._changed.notify_all()

    def _post_receipts(self) -> None:
        while (gateway_id := self._receipts.get()) is not None:
            if self.auto_receipts is None:
                continue
            try:
                self.send_receipt(gateway_id, self.auto_receipts)
            except Exception:  # recorded in receipt_posts; the next receipt still goes
                continue

    # -- the protocol

    def _handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        with self._changed:
            hang = self._hangs > 0
            if hang:
                self._hangs -= 1
            failure = self._failures.pop(0) if not hang and self._failures else None
        if hang:
            self._attempt(path, "hung", 504)
            self._stopping.wait(self.hang_seconds)
            return Reply(504, _json({"error": "timeout"}))
        if failure is not None:
            return self._refuse(path, "failed", failure, "unavailable")
        if headers.get("authorization") != f"Bearer {self.token}":
            return self._refuse(path, "unauthorized", 401, "unauthorized")
        kind = _KINDS.get(path.split("?")[0])
        if method != "POST" or kind is None:
            return self._refuse(path, "bad-request", 404, "no-such-endpoint")
        if not headers.get("content-type", "").startswith("application/json"):
            return self._refuse(path, "bad-request", 415, "expected-json")
        try:
            request: _SmsRequest | _CallRequest = msgspec.json.decode(
                body, type=_SmsRequest if kind == "sms" else _CallRequest
            )
            payload = msgspec.json.decode(body, type=dict[str, Any])
        except msgspec.DecodeError as exc:
            return self._refuse(path, "bad-request", 400, f"bad-request: {exc}")
        with self._changed:
            refused = self._refused.get(request.to)
        if refused is not None:
            return self._refuse(path, "refused", *refused)
        submission = Submission(
            id=uuid.uuid4().hex[:16],
            kind=kind,
            to=request.to,
            text=request.body if isinstance(request, _SmsRequest) else request.text,
            reference=request.reference,
            callback_url=(
                request.callback_url
                if isinstance(request, _SmsRequest)
                else request.status_callback
            ),
            authorization=headers.get("authorization"),
            payload=payload,
        )
        with self._changed:
            self._submissions.append(submission)
            self._attempts.append(Attempt(path, "accepted", self.accept_status))
            self._changed.notify_all()
        after = None
        if self.auto_receipts is not None:
            gateway_id = submission.id
            after = lambda: self._receipts.put(gateway_id)  # noqa: E731
        return Reply(self.accept_status, _json({"id": submission.id}), after)

    def _refuse(self, path: str, outcome: Outcome, status: int, error: str) -> Reply:
        self._attempt(path, outcome, status)
        return Reply(status, _json({"error": error}))

    def _attempt(self, path: str, outcome: Outcome, status: int) -> None:
        with self._changed:
            self._attempts.append(Attempt(path, outcome, status))
            self._changed.notify_all()


# -- the receipt webhook -------------------------------------------------------------


class ReceivedPost(msgspec.Struct, frozen=True):
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes  # exactly as received, for signature checks

    @property
    def signature(self) -> str | None:
        return self.headers.get("x-picasse-signature")


class ReceiptSink:
    """A webhook that records every POST and answers `status` (204 unless changed)."""

    def __init__(self, status: int = 204) -> None:
        self.status = status
        self._changed = threading.Condition()
        self._received: list[ReceivedPost] = []
        self._running: Running | None = None

    def start(self) -> Self:
        if self._running is None:
            self._running = Running(self._handle)
        return self

    def close(self) -> None:
        if self._running is not None:
            self._running.stop()
            self._running = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def url(self) -> str:
        """The URL to hand out as a callback: http://127.0.0.1:<port>/receipts."""
        if self._running is None:
            raise RuntimeError("the sink is not running; use it as a context manager")
        return f"{self._running.url}/receipts"

    @property
    def received(self) -> list[ReceivedPost]:
        with self._changed:
            return list(self._received)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedPost]:
        """The posts once there are at least `count`; TimeoutError otherwise."""
        if not _wait(self._changed, lambda: len(self._received) >= count, timeout):
            raise TimeoutError(f"sink received {len(self.received)} posts, not {count}")
        return self.received

    def _handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        if method != "POST":
            return Reply(405)
        with self._changed:
            self._received.append(ReceivedPost(path, headers, body))
            self._changed.notify_all()
        return Reply(self.status)
