"""The one logging set-up of every `picasse` process.

Each line goes to stderr and names its process, so that under `picasse up`, where every
child writes to the same terminal, a line says who wrote it:

    picasse worker[4711] WARNING picasse.adapters.nats.worker: could not settle job 17

The commands that run until stopped (DAEMONS) also log their own progress (INFO: a relay
resuming, a view taken over, a scheduler's job done); every other command logs warnings
and errors only, and the libraries log warnings and errors only, whatever the command.
Nothing Picasse logs holds personal data: the code logs ids, counts and error types,
never a value a person gave (no recipient, body, name or address; no error's text).
"""

from __future__ import annotations

import itertools
import logging
import sys
from collections.abc import Sequence
from typing import Any, TextIO

DAEMONS = frozenset({"up", "api", "relay", "project", "scheduler", "worker"})


class _PicasseHandler(logging.StreamHandler[TextIO]):
    """Ours, told apart from handlers others added (pytest's, say), which stay. It writes
    to whatever sys.stderr is when a line is logged, not to the one it was made with (a
    test, or a caller of the CLI's `main`, may have replaced it and closed it since)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _stream: Any) -> None:
        pass  # always sys.stderr


def configure_logging(argv: Sequence[str]) -> str:
    """Set up logging for the command in `argv` (without the program name); returns the
    name the lines give the process, e.g. "worker" or "customers register"."""
    words = list(itertools.takewhile(lambda word: not word.startswith("-"), argv))
    daemon = bool(words) and words[0] in DAEMONS
    name = words[0] if daemon else " ".join(words[:2]) or "picasse"
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h, _PicasseHandler)), None)
    if handler is None:
        handler = _PicasseHandler()  # stderr
        root.addHandler(handler)
    handler.setFormatter(
        logging.Formatter(f"picasse {name}[%(process)d] %(levelname)s %(name)s: %(message)s")
    )
    if root.level == logging.NOTSET or root.level > logging.WARNING:
        root.setLevel(logging.WARNING)
    logging.getLogger("picasse").setLevel(logging.INFO if daemon else logging.WARNING)
    return name
