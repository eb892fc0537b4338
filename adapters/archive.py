"""Export archives: JSON and CSV per kind plus a manifest, written only where asked, atomically."""

from __future__ import annotations

import csv
import io
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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


def write_export(
    path: Path, manifest: Mapping[str, Any], sections: Mapping[str, list[dict[str, Any]]]
) -> None:
    """Write `path` (a .zip) whole or not at all; the data never passes a temp directory.

    The partial file lives beside the destination (same directory, mode 0600) and is
    renamed into place when complete, or removed on any failure.
    """
    path = path.absolute()
    if path.is_dir():
        raise ArchiveError(f"{path} is a directory; give a file name such as export.zip")
    if not path.parent.is_dir():
        raise ArchiveError(f"directory {path.parent} does not exist")
    partial = path.with_name(f".{path.name}.partial")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as error:
        raise ArchiveError(f"cannot write {path}: {error.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as file:
            with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                archive.writestr(
                    "manifest.json", msgspec.json.format(msgspec.json.encode(manifest))
                )
                for kind, records in sections.items():
                    archive.writestr(
                        f"{kind}.json", msgspec.json.format(msgspec.json.encode(records))
                    )
                    archive.writestr(f"{kind}.csv", _csv(records))
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def read_export(path: Path) -> dict[str, Any]:
    """The archive's JSON parts by name (for tests and for checking an export)."""
    with zipfile.ZipFile(path) as archive:
        return {
            name.removesuffix(".json"): msgspec.json.decode(archive.read(name))
            for name in archive.namelist()
            if name.endswith(".json")
        }
