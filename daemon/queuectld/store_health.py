"""What the daemon knows of its store's health: shown by `status`, and each failure logged once.

Every store call passes through StoreThreads, which reports here how it ended. A damaged page
makes the store `degraded` until the daemon restarts (the damage stays in the file); a full disk
makes it `disk full` until a write succeeds with space free again; an unreachable store is
`unavailable` until a call succeeds. A failure repeated by every request or every scheduler
retry is logged once, then summarized at most once a minute.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from queuectl.errors import DiskFull, OutcomeUnknown, QueuectlError, StoreDamaged, StoreUnavailable

log = logging.getLogger("queuectld.store")

#: Identical failures within this many seconds are counted, not logged again.
REPEAT_WINDOW_S = 60.0
#: A full disk counts as having room again once this much is free where the store lives.
ROOM_BYTES = 256 * 1024


#: The failures StoreThreads reports (and logs) here; callers need not log them again.
STORE_FAULTS = (StoreDamaged, DiskFull, StoreUnavailable, OutcomeUnknown)


class StoreState(StrEnum):
    """The store's health, as `status` shows it."""

    OK = "ok"  #: every call succeeds
    DEGRADED = "degraded"  #: a damaged page was found: calls that touch it fail; until restart
    DISK_FULL = "disk full"  #: writes fail for want of space; reads still work
    UNAVAILABLE = "unavailable"  #: the store cannot be reached


@dataclass
class RepeatFilter:
    """Lets the first of identical messages through, then one per window with how many it held back."""

    window_s: float = REPEAT_WINDOW_S
    _seen: dict[str, tuple[float, int]] = field(default_factory=dict)  #: key -> (logged at, held back since)

    def check(self, key: str, now: float) -> tuple[bool, int]:
        """(whether to log `key` now, how many identical ones were held back before it)."""
        logged_at, held = self._seen.get(key, (None, 0))
        if logged_at is not None and now - logged_at < self.window_s:
            self._seen[key] = (logged_at, held + 1)
            return False, 0
        self._seen[key] = (now, 0)
        if len(self._seen) > 256:  # a flood of distinct messages must not grow this forever
            self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.window_s}
        return True, held


def free_bytes(path: str) -> int:
    """Bytes an unprivileged writer may still use on the file system holding `path`."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


class StoreHealth:
    """The store's state for `status`, fed with how each store call ended."""

    def __init__(self, data_dir: str | None, *, clock: Callable[[], float] = time.time,
                 room: Callable[[str], int] = free_bytes) -> None:
        self.state = StoreState.OK
        self.detail: str | None = None
        self.since: float | None = None
        self._data_dir = data_dir
        self._clock = clock
        self._room = room
        self._repeats = RepeatFilter()

    def failed(self, exc: QueuectlError) -> None:
        """A store call raised `exc`: change state and log it, once for repeats."""
        if isinstance(exc, StoreDamaged):
            self._enter(StoreState.DEGRADED, exc.message, force=True)
        elif isinstance(exc, DiskFull):
            self._enter(StoreState.DISK_FULL, exc.message)
        elif isinstance(exc, StoreUnavailable):
            self._enter(StoreState.UNAVAILABLE, exc.message)
        elif not isinstance(exc, OutcomeUnknown):
            return  # a domain answer (no such job, locked, ...), not a store failure
        self._log(exc)

    def succeeded(self, *, wrote: bool) -> None:
        """A store call returned; `wrote` when it was a write transaction."""
        if self.state is StoreState.UNAVAILABLE:
            self._recover("the store answers again")
        elif self.state is StoreState.DISK_FULL and wrote and self._has_room():
            self._recover("writes succeed again")

    def view(self) -> dict[str, Any]:
        """The `store` object of `daemon.status`."""
        return {"state": self.state.value, "detail": self.detail, "since": self.since}

    def _enter(self, state: StoreState, detail: str, *, force: bool = False) -> None:
        # A damaged store stays degraded: a full disk or an outage on top does not hide it.
        if self.state is StoreState.DEGRADED and not force:
            return
        if self.state is not state:
            self.since = self._clock()
        self.state = state
        self.detail = detail

    def _recover(self, why: str) -> None:
        since = self.since or self._clock()
        log.warning("store back to ok: %s (it was %s for %.0fs)", why, self.state.value, self._clock() - since)
        self.state, self.detail, self.since = StoreState.OK, None, None

    def _has_room(self) -> bool:
        if self._data_dir is None:
            return True
        try:
            return self._room(self._data_dir) >= ROOM_BYTES
        except OSError:
            return True

    def _log(self, exc: QueuectlError) -> None:
        now = self._clock()
        show, held = self._repeats.check(f"{type(exc).__name__}:{exc.message}", now)
        if not show:
            return
        more = f" (and {held} more time(s) in the last {REPEAT_WINDOW_S:.0f}s)" if held else ""
        if isinstance(exc, OutcomeUnknown) and exc.__cause__ is not None and not held:
            # Unrecognized: the first one keeps its traceback, for the bug report.
            log.error("store call failed: %s%s", exc.message, more, exc_info=exc.__cause__)
        else:
            log.error("store call failed: %s%s", exc.message, more)
