"""What both executables do when the reader of their output has gone (`... | head -1`)."""

from __future__ import annotations

import os
import sys


def closed_pipe_exit() -> None:
    """Stop at once, quietly, with exit status 141 (128 + SIGPIPE, what a shell reports for a
    program killed by SIGPIPE) and no message. stdout and stderr are pointed at /dev/null so
    nothing left in a buffer can fail later (a detached daemon, if started, runs on)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.dup2(devnull, sys.stderr.fileno())
    except (OSError, ValueError):
        pass
    raise SystemExit(141)
