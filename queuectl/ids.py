"""Generated job ids: `<ms hex>-<random>` for one job, `<ms hex>-<random>-<n>` within a batch.

The client picks them before it sends a request, so that a request whose answer was lost can be
sent again and name the same jobs (the daemon skips a job that is already there unchanged); the
daemon uses the same scheme for requests that name no id. Time-ordered by the clock of whoever
made them, short enough to type, and safe in file names. Standard library only (the client's
fast path imports this): `os` and `time` are loaded at start-up anyway.
"""

from __future__ import annotations

import os
import time


def new_stem(now: float | None = None) -> str:
    """A fresh `<ms hex>-<8 random hex>`: one job's id, or the stem of a batch's ids."""
    return f"{int((time.time() if now is None else now) * 1000):x}-{os.urandom(4).hex()}"


def batch_ids(stem: str, start: int, count: int) -> list[str]:
    """Ids `stem-start` ... `stem-(start+count-1)`: the generated ids of a batch's jobs, by the
    job's position in the whole batch (so the chunks of one file never repeat an id)."""
    return [f"{stem}-{i}" for i in range(start, start + count)]


def new_job_ids(now: float, count: int) -> list[str]:
    """`count` fresh ids, one random draw for all (a draw per job was a sixth of batch-enqueue
    time): the stem alone for one job, `stem-<n>` for several."""
    stem = new_stem(now)
    return [stem] if count == 1 else batch_ids(stem, 0, count)
