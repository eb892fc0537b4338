"""Epoch key files: written whole, private, read back, destroyed."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from uuid import uuid4

import pytest

from picasse.adapters.master_key import (
    EpochKeyMissing,
    create_epoch_key,
    create_master_key,
    destroy_epoch_key,
    epoch_key_path,
    read_epoch_key,
    read_master_key,
)


def test_an_epoch_key_file_is_private_reads_back_and_is_gone_once_destroyed(tmp_path: Path) -> None:
    epoch = uuid4()
    key = create_epoch_key(tmp_path, epoch)
    path = epoch_key_path(tmp_path, epoch)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert read_epoch_key(tmp_path, epoch) == key
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no partial file left
    other_name = tmp_path / "kept-open"
    os.link(path, other_name)  # a second name sees the overwrite: the bytes are gone
    destroy_epoch_key(tmp_path, epoch)
    assert not path.exists()
    assert set(other_name.read_bytes()) == {0}
    with pytest.raises(EpochKeyMissing, match="restore it from the key backup"):
        read_epoch_key(tmp_path, epoch)
    destroy_epoch_key(tmp_path, epoch)  # again: nothing to do


def test_an_epoch_key_file_is_never_written_over(tmp_path: Path) -> None:
    epoch = uuid4()
    key = create_epoch_key(tmp_path, epoch)
    with pytest.raises(Exception, match="exists"):
        create_epoch_key(tmp_path, epoch)
    assert read_epoch_key(tmp_path, epoch) == key


def test_processes_creating_the_master_key_at_once_all_read_one_whole_key(
    tmp_path: Path,
) -> None:
    """Compose's services start together on a fresh volume: one key wins, and none of
    them reads a file another is still writing."""
    path = tmp_path / "keys" / "master.key"
    start = threading.Barrier(8)

    def create_then_read() -> tuple[bool, bytes]:
        start.wait()
        return create_master_key(path), read_master_key(path)

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda _: create_then_read(), range(8)))

    assert [created for created, _ in outcomes].count(True) == 1
    assert len({key for _, key in outcomes}) == 1
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["master.key"]  # no partial file left
