"""The rows of a selection become the library's notifications, their ids true UUIDs."""

from __future__ import annotations

import pickle
import uuid

from eventsourcing.persistence import Notification

from picasse.adapters.postgres.store import _notifications


def test_each_row_becomes_a_notification_whose_id_is_a_uuid_like_any_other() -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    rows = [
        (1, first.bytes, 1, "t:A", b"s1"),
        (2, second.bytes, 1, "t:B", b"s2"),
        (3, first.bytes, 2, "t:A", b"s3"),
    ]
    made = _notifications(rows)
    assert made == [
        Notification(id=1, originator_id=first, originator_version=1, topic="t:A", state=b"s1"),
        Notification(id=2, originator_id=second, originator_version=1, topic="t:B", state=b"s2"),
        Notification(id=3, originator_id=first, originator_version=2, topic="t:A", state=b"s3"),
    ]
    read = made[0].originator_id
    assert isinstance(read, uuid.UUID) and read.version == 4 and read.is_safe == first.is_safe
    assert (str(read), hash(read), read.bytes) == (str(first), hash(first), first.bytes)
    assert pickle.loads(pickle.dumps(read)) == first
    assert made[2].originator_id is read  # one UUID an aggregate of the page
