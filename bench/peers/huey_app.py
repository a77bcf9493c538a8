"""The huey side of the peers' end-to-end run: one task that runs `/bin/sh -c true`, as a queuectl
job does, then writes one byte to the bench's pipe so the bench sees each completion.

The consumer loads `bench.peers.huey_app.huey` (its database and pipe from the environment); the
bench's producer builds its own instance on the same file with `build`.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

from huey import SqliteHuey

DB_ENV = "QB_HUEY_DB"
DONE_FD_ENV = "QB_DONE_FD"


def build(filename: str, done_fd: int = -1) -> tuple[SqliteHuey, Any]:
    """A SqliteHuey on `filename` (huey's defaults: WAL, no fsync) and its `run_true` task."""
    huey = SqliteHuey(name="bench", filename=filename)

    @huey.task(name="run_true")
    def run_true() -> None:
        subprocess.run("true", shell=True, check=True)
        if done_fd >= 0:
            os.write(done_fd, b".")

    return huey, run_true


if DB_ENV in os.environ:  # in the consumer the bench started
    huey, run_true = build(os.environ[DB_ENV], int(os.environ.get(DONE_FD_ENV, "-1")))
