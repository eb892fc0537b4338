"""Export archives: JSON and CSV per kind plus a manifest, written only where asked, atomically."""

from __future__ import annotations

import csv
import io
import os
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import msgspec


class ArchiveError(Exception):
    """The archive cannot be written where asked."""


def _csv(records: list[dict[str, Any]]) -> bytes:
    out = io.StringIO()
    columns = list(dict.fromkeys(key for record in records for key in record))
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for record in records:
        writer.writerow({k: "" if v is None else v for k, v in record.items()})
    return out.getvalue().encode()


class TargetExists(ArchiveError):
    """The file asked for exists already, and replacing it was not asked for."""


def partial_path(path: Path) -> Path:
    """Where `path` is written before it is complete: beside it, hidden."""
    return path.with_name(f".{path.name}.partial")


def check_target(path: Path, *, replace: bool) -> Path:
    """Raises unless `path` can be written: its directory exists, and it does not (or may
    be replaced). Returns it absolute."""
    path = path.absolute()
    if path.is_dir():
        raise ArchiveError(f"{path} is a directory; give a file name such as export.zip")
    if not path.parent.is_dir():
        raise ArchiveError(f"directory {path.parent} does not exist")
    if not replace and os.path.lexists(path):
        raise TargetExists(f"{path} exists already; move it away or give --force to replace it")
    return path


def write_atomically(
    path: Path,
    produce: Callable[[BinaryIO], object],  # what it returns is not used
    *,
    replace: bool,
    before_move: Callable[[Path], None] | None = None,
) -> None:
    """Write `path` whole or not at all, never through a symlink, never over a file unless
    `replace`.

    The partial file lives beside the destination (same directory, mode 0600), created
    with O_EXCL|O_NOFOLLOW (a leftover partial file, or a symlink planted in its place, is
    removed first, never followed), and is moved into place when complete, or removed on
    any failure. Without `replace` the move is a hard link, which fails if the target
    exists by then (a file or a symlink alike). `before_move` sees the complete partial
    file just before it is moved (to record its digest first, for instance).
    """
    path = check_target(path, replace=replace)
    partial = partial_path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    try:
        if os.path.lexists(partial):
            os.unlink(partial)  # a leftover of an interrupted write: replaced, not followed
        fd = os.open(partial, flags, 0o600)
    except OSError as error:
        raise ArchiveError(f"cannot write {path}: {error.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as file:
            produce(file)
            file.flush()
            os.fsync(file.fileno())
        if before_move is not None:
            before_move(partial)
        move_into_place(partial, path, replace=replace)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def move_into_place(partial: Path, path: Path, *, replace: bool) -> None:
    """Moves a complete partial file to `path`; over an existing file only if `replace`."""
    if replace:
        os.replace(partial, path)
        return
    try:
        os.link(partial, path, follow_symlinks=False)
    except FileExistsError:
        raise TargetExists(
            f"{path} exists already; move it away or give --force to replace it"
        ) from None
    os.unlink(partial)


def write_export(
    path: Path,
    manifest: Mapping[str, Any],
    sections: Mapping[str, list[dict[str, Any]]],
    *,
    replace: bool = False,
    before_move: Callable[[Path], None] | None = None,
) -> None:
    """Write the archive `path` (a .zip); the data never passes a temp directory."""

    def produce(file: BinaryIO) -> None:
        with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("manifest.json", msgspec.json.format(msgspec.json.encode(manifest)))
            for kind, records in sections.items():
                archive.writestr(f"{kind}.json", msgspec.json.format(msgspec.json.encode(records)))
                archive.writestr(f"{kind}.csv", _csv(records))

    write_atomically(path, produce, replace=replace, before_move=before_move)


def read_export(path: Path) -> dict[str, Any]:
    """The archive's JSON parts by name (for tests and for checking an export)."""
    with zipfile.ZipFile(path) as archive:
        return {
            name.removesuffix(".json"): msgspec.json.decode(archive.read(name))
            for name in archive.namelist()
            if name.endswith(".json")
        }
