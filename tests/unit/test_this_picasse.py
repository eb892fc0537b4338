"""The command `up` tells a user to run names the picasse that runs, as they would type it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from picasse.runners.children import this_picasse


@pytest.fixture(autouse=True)
def _no_picasse_on_the_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))


def test_in_the_repository_it_is_the_venvs_script_as_make_up_runs_it(tmp_path: Path) -> None:
    assert this_picasse(".venv/bin/picasse", cwd=str(tmp_path)) == os.path.join(
        ".venv", "bin", "picasse"
    )
    script = tmp_path / ".venv" / "bin" / "picasse"
    assert this_picasse(str(script), cwd=str(tmp_path)) == os.path.join(".venv", "bin", "picasse")


def test_from_another_directory_it_is_the_scripts_full_path(tmp_path: Path) -> None:
    script = tmp_path / "repo" / ".venv" / "bin" / "picasse"
    elsewhere = tmp_path / "elsewhere"
    assert this_picasse(str(script), cwd=str(elsewhere)) == str(script)


def test_the_one_on_the_path_is_just_picasse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "picasse"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert this_picasse(str(script), cwd=str(tmp_path / "elsewhere")) == "picasse"


def test_started_as_a_module_it_is_just_picasse(tmp_path: Path) -> None:
    assert this_picasse("/usr/lib/python3/picasse/runners/cli.py", cwd=str(tmp_path)) == "picasse"
