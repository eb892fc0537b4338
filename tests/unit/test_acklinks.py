"""Acknowledgement links: a link we minted leads back to its delivery, and nothing else does."""

from __future__ import annotations

import base64
import string
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from picasse.adapters.http.acklinks import AckLinks, InvalidAckToken, ack_links_from

SECRET = b"s" * 32
BASE64URL = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
LINKS = AckLinks(SECRET, "https://picasse.example/")
ids = st.uuids()


@given(ids)
def test_a_minted_token_verifies_as_the_delivery_it_was_minted_for(delivery_id: UUID) -> None:
    assert LINKS.verify(LINKS.token(delivery_id)) == delivery_id


@given(ids)
def test_a_link_is_the_public_url_then_the_ack_path_then_the_token(delivery_id: UUID) -> None:
    link = LINKS.link(delivery_id)

    assert link == f"https://picasse.example/v1/ack/{LINKS.token(delivery_id)}"


@given(ids, st.data())
def test_any_changed_character_makes_a_token_invalid(
    delivery_id: UUID, data: st.DataObject
) -> None:
    token = LINKS.token(delivery_id)
    position = data.draw(st.integers(0, len(token) - 1), label="position")
    replacement = data.draw(st.characters().filter(lambda c: c != token[position]), label="char")
    changed = token[:position] + replacement + token[position + 1 :]

    with pytest.raises(InvalidAckToken):
        LINKS.verify(changed)


@given(ids, st.data())
def test_a_shortened_or_lengthened_token_is_invalid(delivery_id: UUID, data: st.DataObject) -> None:
    token = LINKS.token(delivery_id)
    cut = data.draw(st.integers(0, len(token) - 1), label="cut")
    extra = data.draw(st.text(min_size=1, max_size=4), label="extra")

    for changed in (token[:cut], token + extra):
        with pytest.raises(InvalidAckToken):
            LINKS.verify(changed)


@given(ids)
def test_a_token_minted_with_another_secret_is_invalid(delivery_id: UUID) -> None:
    other = AckLinks(b"t" * 32, "https://picasse.example")

    with pytest.raises(InvalidAckToken):
        LINKS.verify(other.token(delivery_id))


@given(st.text(max_size=80))
def test_made_up_text_is_never_a_token(text: str) -> None:
    with pytest.raises(InvalidAckToken):
        LINKS.verify(text)


def test_links_derived_from_the_same_master_key_agree_and_differ_from_another_key() -> None:
    delivery_id = UUID(int=7)
    token = ack_links_from(b"m" * 32, "https://a.example").token(delivery_id)

    assert ack_links_from(b"m" * 32, "https://b.example").verify(token) == delivery_id
    with pytest.raises(InvalidAckToken):
        ack_links_from(b"n" * 32, "https://a.example").verify(token)


def test_a_token_spelled_differently_for_the_same_bytes_is_invalid() -> None:
    # The last base64 character carries two unused bits: four spellings decode alike.
    token = LINKS.token(UUID(int=7))
    last = BASE64URL.index(token[-1])
    twins = [BASE64URL[(last & ~3) | low] for low in range(4) if (last & ~3) | low != last]

    for twin in twins:
        assert base64.urlsafe_b64decode(token[:-1] + twin + "=") == base64.urlsafe_b64decode(
            token + "="
        )
        with pytest.raises(InvalidAckToken):
            LINKS.verify(token[:-1] + twin)


def test_the_secret_never_shows_in_the_repr() -> None:
    assert repr(SECRET) not in repr(LINKS)
    assert repr(SECRET) not in str(LINKS)
