"""The daemon's log file, reopened on SIGHUP (logrotate renames it, then signals the daemon)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TextIO


class ReopeningFileHandler(logging.StreamHandler[TextIO]):
    """Appends to a file (0600, line-buffered) and can reopen it at the same path."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(self._open())

    def _open(self) -> TextIO:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        return os.fdopen(fd, "a", buffering=1)

    def reopen(self) -> None:
        """Open the path afresh (a new file if the old one was renamed) and close the old one.
        On failure the old file is kept and OSError raised."""
        old = self.setStream(self._open())  # under the handler's lock, after a flush
        if old is not None:
            old.close()


def reopen_all() -> list[Path]:
    """Reopen every log file of the root logger; returns their paths (none when logging to stderr)."""
    reopened = []
    for handler in logging.getLogger().handlers:
        if isinstance(handler, ReopeningFileHandler):
            handler.reopen()
            reopened.append(handler.path)
    return reopened
