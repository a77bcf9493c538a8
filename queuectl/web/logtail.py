"""A job's output as server-sent events: the tail so far, then each new chunk as it is
written, following the job from attempt to attempt until it ends.

Events: `log` (text, sent as a JSON string; its id `ATTEMPT:OFFSET` lets a reconnecting browser resume where it was),
`attempt` (a new attempt begins: its number), `end` (the job has ended, or is gone: why),
`down` (the daemon does not answer: why; the stream tries again).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

from queuectl import errors
from queuectl.web.daemon import Daemon

#: The bytes of output a page starts with (the tail of what was written before it opened).
TAIL_BYTES = 64 * 1024
#: While no attempt runs (waiting for a retry, or a slot), how often to look again.
IDLE_S = 1.0
ENDED = ("completed", "dead", "canceled")

Event = tuple[str, str, str | None]


def _resume(last_event_id: str | None) -> tuple[int, int] | None:
    attempt, _, offset = (last_event_id or "").partition(":")
    if attempt.isdigit() and offset.isdigit():
        return int(attempt), int(offset)
    return None


def _latest(job: dict[str, object]) -> int | None:
    history = job.get("attempt_history") or []
    numbers = [int(a["attempt"]) for a in history if isinstance(a, dict)]  # type: ignore[attr-defined]
    return max(numbers) if numbers else None


async def log_events(daemon: Daemon, job_id: str, last_event_id: str | None, max_s: float,
                     stopping: Callable[[], bool] = lambda: False) -> AsyncIterator[Event]:
    """The events of one stream, for at most `max_s` seconds (the browser reconnects), or until
    `stopping()` (the server is stopping)."""
    ends = time.monotonic() + max_s
    position = _resume(last_event_id)
    attempt: int | None = position[0] if position else None
    offset = position[1] if position else 0
    while time.monotonic() < ends and not stopping():
        try:
            job = await daemon.call("job.get", {"id": job_id})
            latest = _latest(job)
            if latest is not None and (attempt is None or latest > attempt):
                if attempt is not None or position is None:
                    yield "attempt", str(latest), None
                start = attempt is None and position is None
                attempt, offset = latest, 0
                if start:  # the page opens on the tail of what was written so far
                    chunk = await daemon.call("job.logs", {"id": job_id, "attempt": attempt, "tail": True,
                                                           "limit": TAIL_BYTES})
                    offset = chunk["next_offset"]
                    if chunk["data"]:
                        yield "log", chunk["data"], f"{attempt}:{offset}"
            if attempt is not None:
                finished = False
                while not finished and time.monotonic() < ends and not stopping():
                    chunk = await daemon.call("job.logs", {"id": job_id, "attempt": attempt, "offset": offset,
                                                           "follow": True})
                    offset = chunk["next_offset"]
                    if chunk["data"]:
                        yield "log", chunk["data"], f"{attempt}:{offset}"
                    finished = chunk["finished"] and not chunk["data"]
            if job["state"] in ENDED and attempt == _latest(job):
                again = await daemon.call("job.get", {"id": job_id})
                if again["state"] in ENDED and _latest(again) == attempt:
                    yield "end", f"job {job_id} is {again['state']}", None
                    return
        except errors.JobNotFound as exc:
            yield "end", exc.message, None
            return
        except errors.QueuectlError as exc:
            yield "down", exc.message, None
        await asyncio.sleep(IDLE_S)
