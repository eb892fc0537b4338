"""Epoch key files: written whole, private, read back, destroyed."""

from __future__ import annotations

import os
from pathlib import Path
from uuid import uuid4

import pytest

from picasse.adapters.master_key import (
    EpochKeyMissing,
    create_epoch_key,
    destroy_epoch_key,
    epoch_key_path,
    read_epoch_key,
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
