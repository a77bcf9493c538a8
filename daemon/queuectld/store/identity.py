"""The state dir's record of which queue lives there: a small 0600 file holding the queue's id.

The same id is in the database (`meta.queue_id`, revision 0002), written when the store is made.
At start the two must agree: a database that is missing, empty or another queue's is refused
rather than silently replaced.
"""

from __future__ import annotations

import os
from pathlib import Path

QUEUE_ID_FILE = "queue-id"


def id_file(state_dir: Path) -> Path:
    """Where the state dir records its queue's id."""
    return state_dir / QUEUE_ID_FILE


def recorded(state_dir: Path) -> str | None:
    """The id the state dir records, or None when it records none (a fresh or pre-identity state dir)."""
    try:
        text = id_file(state_dir).read_text(errors="replace").strip()
    except FileNotFoundError:
        return None
    return text or None


def record(state_dir: Path, queue_id: str) -> None:
    """Write the id (0600, atomically: a crash leaves the old file or the new one)."""
    path = id_file(state_dir)
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(queue_id + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(partial, path)


def set_aside(state_dir: Path, stamp: str) -> Path | None:
    """Move the id file to `queue-id.replaced-<stamp>` (starting afresh on purpose)."""
    path = id_file(state_dir)
    if not path.exists():
        return None
    new = path.with_name(f"{path.name}.replaced-{stamp}")
    os.replace(path, new)
    return new
