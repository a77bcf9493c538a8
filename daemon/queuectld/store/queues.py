"""Named queues, inside a write (or read) transaction the store opened: add, change, remove, look.

A queue's numbers come from the per-(queue, state, held) counters (read by the dialect: the
caller passes their rows) and, for its longest-waiting job, the first entry of ix_jobs_next:
never a scan of the jobs table. Concurrency limits and pauses are enforced by the claim
(sqlite.py / postgres.py); this module only stores them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, delete, insert, select, text, update

from queuectl.errors import InvalidParams, QueueExists, QueueNotEmpty, QueueNotFound
from queuectld.jobs import JobState
from queuectld.store.base import QueueInfo
from queuectld.store.models import queues
from queuectld.store.rows import chunks, unique

#: The queue every job is in unless told otherwise; it always exists.
DEFAULT = "default"
_WAITING = (JobState.PENDING.value, JobState.FAILED.value)
_UNFINISHED = (*_WAITING, JobState.PROCESSING.value)

#: (queue, state, held, n) rows of the counters, as the dialect reads them.
CountRows = Iterable[tuple[str, str, int, int]]


def require_queues(conn: Connection, names: Iterable[str]) -> None:
    """QueueNotFound for the first of `names` that is not a queue. On PostgreSQL the rows found are
    locked FOR KEY SHARE until the transaction ends, so a concurrent `queue_rm` waits for it (and
    then sees its jobs) instead of removing a queue that jobs are being put into; claims (FOR NO
    KEY UPDATE) do not wait for it. For enqueue and edit (store-jobs)."""
    # Straight to the driver: this runs in every enqueue, and building the statement through
    # SQLAlchemy (an expanding IN, FOR KEY SHARE) cost three times the query itself.
    postgresql = conn.dialect.name == "postgresql"
    require_queue_names(conn.exec_driver_sql, names, lock=" FOR KEY SHARE" if postgresql else "",
                        mark="%s" if postgresql else "?")


def require_queue_names(run: Callable[[str, tuple[str, ...]], Iterable[Any]], names: Iterable[str], *,
                        lock: str = "", mark: str = "?") -> None:
    """require_queues on a driver's `run(sql, params)` (a DBAPI cursor's execute, or a
    connection's exec_driver_sql): `lock` is appended to the query, `mark` is its placeholder."""
    wanted = unique(list(names))
    found: set[str] = set()
    for chunk in chunks(wanted):
        marks = ",".join([mark] * len(chunk))
        found.update(name for (name,) in run(f"SELECT name FROM queues WHERE name IN ({marks}){lock}", tuple(chunk)))
    for name in wanted:
        if name not in found:
            raise QueueNotFound(name=name)


def add(conn: Connection, name: str, concurrency: int | None, now: float) -> None:
    """Create a queue (QueueExists if it is there)."""
    _check_limit(concurrency)
    if conn.execute(select(queues.c.name).where(queues.c.name == name)).first() is not None:
        raise QueueExists(name=name)
    conn.execute(insert(queues).values(name=name, concurrency=concurrency, paused=0, created_at=now))


def set_limit(conn: Connection, name: str, concurrency: int | None) -> None:
    """Change a queue's limit (None: none). QueueNotFound if it is not there."""
    _check_limit(concurrency)
    if conn.execute(update(queues).where(queues.c.name == name).values(concurrency=concurrency)).rowcount == 0:
        raise QueueNotFound(name=name)


def remove(conn: Connection, name: str, counts: CountRows) -> None:
    """Remove a queue that holds no unfinished job (waiting or running); its finished jobs keep
    its name. The default queue is never removed (InvalidParams). The row is locked first, so an
    enqueue into it that is in flight (require_queues) is waited for and counted."""
    if name == DEFAULT:
        raise InvalidParams(detail="the default queue cannot be removed")
    if conn.execute(select(queues.c.name).where(queues.c.name == name).with_for_update()).first() is None:
        raise QueueNotFound(name=name)
    unfinished = sum(n for queue, state, _held, n in counts if queue == name and state in _UNFINISHED)
    if unfinished:
        raise QueueNotEmpty(name=name, count=unfinished)
    conn.execute(delete(queues).where(queues.c.name == name))


def pause(conn: Connection, names: Sequence[str] | None, paused: bool) -> list[str]:
    """Pause or resume `names` (None: every queue); QueueNotFound for a name not there, and
    nothing changes. Returns the names, sorted."""
    if names is None:
        targets = list(conn.execute(select(queues.c.name).order_by(queues.c.name)).scalars())
    else:
        targets = sorted(unique(list(names)))
        require_queues(conn, targets)
    for chunk in chunks(targets):
        conn.execute(update(queues).where(queues.c.name.in_(chunk)).values(paused=int(paused)))
    return targets


def infos(conn: Connection, counts: CountRows, names: Sequence[str] | None = None) -> list[QueueInfo]:
    """The queues (all, or `names`, QueueNotFound for one not there), by name, with their numbers:
    from the counter rows `counts` and one probe of ix_jobs_next per queue."""
    query = select(queues.c.name, queues.c.concurrency, queues.c.paused).order_by(queues.c.name)
    if names is not None:
        require_queues(conn, names)
        query = query.where(queues.c.name.in_(list(names)))
    rows = conn.execute(query).all()
    tally: dict[str, dict[str, int]] = {}
    for queue, state, held, n in counts:
        t = tally.setdefault(queue, {"pending": 0, "held": 0, "running": 0, "completed": 0, "dead": 0})
        if state in _WAITING:
            t["pending"] += int(n)
            if held:
                t["held"] += int(n)
        elif state == JobState.PROCESSING.value:
            t["running"] += int(n)
        elif state in ("completed", "dead"):
            t[state] += int(n)
    out = []
    for r in rows:
        t = tally.get(r.name, {})
        oldest = _oldest_waiting(conn, r.name) if t.get("pending") else None
        out.append(QueueInfo(r.name, r.concurrency, bool(r.paused), t.get("pending", 0), t.get("held", 0),
                             t.get("running", 0), oldest, t.get("completed", 0), t.get("dead", 0)))
    return out


#: The first entry of one queue's range in ix_jobs_next (queue, next_run_at) WHERE claimable: the
#: due time of the job that has waited longest to run (held and blocked jobs are not waiting to
#: run; a time in the future means none is due yet). The conditions are literal: SQLite uses a
#: partial index only for a WHERE that it can see implies the index's own, which bound parameters
#: hide (a scan of every job, 0.7 s at a million).
_OLDEST_WAITING = text(
    "SELECT next_run_at FROM jobs WHERE queue = :queue AND state IN ('pending', 'failed') AND held = 0"
    " AND deps_left = 0 ORDER BY next_run_at LIMIT 1"
)


def _oldest_waiting(conn: Connection, name: str) -> Any:
    return conn.execute(_OLDEST_WAITING, {"queue": name}).scalar()


def _check_limit(concurrency: int | None) -> None:
    if concurrency is not None and concurrency < 1:
        raise InvalidParams(detail=f"concurrency must be at least 1 (or none), not {concurrency}")
