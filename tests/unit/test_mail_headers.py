"""Issue 11, finding 2: a subject that `header_text` accepts adds no header and no part to
the mail built from it, whatever encoded words it holds."""

from __future__ import annotations

import base64
import email
import email.policy

from hypothesis import given, settings
from hypothesis import strategies as st

from picasse.adapters.providers import Delivery
from picasse.adapters.providers.smtp import email_message
from picasse.domain.errors import InvalidInput
from picasse.domain.values import header_text

SENDER = "Picasse <noreply@picasse.example>"
BREAKS = ["\r\n", "\n", "\r", "\u2028", "\x0b", "\x00"]
PAYLOADS = ["Reply-To: x@evil.example", "Bcc: y@evil.example", "Content-Type: text/html"]


def _encoded(text: str, how: str) -> str:
    raw = text.encode()
    if how == "b":
        return f"=?utf-8?b?{base64.b64encode(raw).decode()}?="
    quoted = "".join(f"={byte:02X}" for byte in raw)
    return f"=?utf-8?q?{quoted}?="


words = st.builds(
    lambda before, brk, payload, how: _encoded(before + brk + payload, how),
    st.text(max_size=8),
    st.sampled_from([*BREAKS, ""]),
    st.sampled_from([*PAYLOADS, "plain"]),
    st.sampled_from(["q", "b"]),
)
subjects = st.lists(st.one_of(words, st.text(max_size=12)), min_size=1, max_size=4).map(" ".join)


def _header_names(subject: str) -> list[str]:
    delivery = Delivery(
        reference="r:0", channel="email", to="ann@example.com", body="Hi", subject=subject
    )
    built = email_message(delivery, sender=SENDER).as_bytes()
    parsed = email.message_from_bytes(built, policy=email.policy.default)
    assert not parsed.is_multipart()
    return sorted(name for name, _ in parsed.items())


PLAIN = _header_names("Invoice")


@settings(max_examples=300, deadline=None)
@given(subjects)
def test_an_accepted_subject_adds_no_header_and_no_part(subject: str) -> None:
    try:
        header_text(subject, "subject")
    except InvalidInput:
        return
    assert _header_names(subject) == PLAIN
