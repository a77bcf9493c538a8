"""Cron schedules, inside a transaction the store opened: add, look, pause, and the fire.

The fire is exactly once per (schedule, slot) across every daemon sharing the store, by two
things that do not depend on which daemon leads: the schedule's row is locked and its
`next_fire` compared with the one the firing daemon read (a second daemon finds it moved on and
fires nothing), and the unique index ux_jobs_schedule_slot refuses a second job for one slot even
if that check were passed. The jobs and the schedule's advance commit together or not at all.
Which slots to fire is decided by the caller (queuectld.cron.plan); this module stores it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from queuectl.errors import CronExists, CronNotFound
from queuectld import cron
from queuectld.jobs import JobState
from queuectld.store.base import CronFired, Schedule
from queuectld.store.models import jobs, schedules

#: A previous fire's job in one of these has not ended: `overlap skip` skips the next fire.
UNFINISHED = (JobState.PENDING.value, JobState.FAILED.value, JobState.PROCESSING.value)
_FIELDS = tuple(c.name for c in schedules.c)


def _select() -> Any:
    return select(schedules, jobs.c.state.label("last_job_state")).outerjoin(
        jobs, jobs.c.id == schedules.c.last_job_id)


def _of(row: Any) -> Schedule:
    data = dict(row._mapping)
    data["paused"] = bool(data["paused"])
    state = data.pop("last_job_state")
    return Schedule(**data, last_job_state=JobState(state) if state is not None else None)


def add(conn: Connection, s: Schedule) -> None:
    """Insert a schedule (CronExists if its name is taken)."""
    if conn.execute(select(schedules.c.name).where(schedules.c.name == s.name)).first() is not None:
        raise CronExists(name=s.name)
    conn.execute(insert(schedules).values(
        {name: getattr(s, name) for name in _FIELDS if name != "paused"} | {"paused": int(s.paused)}))


def get(conn: Connection, name: str) -> Schedule:
    """One schedule with its last job's state; CronNotFound."""
    row = conn.execute(_select().where(schedules.c.name == name)).first()
    if row is None:
        raise CronNotFound(name=name)
    return _of(row)


def all_of(conn: Connection) -> list[Schedule]:
    """Every schedule, by name."""
    return [_of(r) for r in conn.execute(_select().order_by(schedules.c.name))]


def remove(conn: Connection, name: str) -> None:
    """Remove a schedule (its jobs stay, naming it); CronNotFound."""
    if conn.execute(delete(schedules).where(schedules.c.name == name)).rowcount == 0:
        raise CronNotFound(name=name)


def set_paused(conn: Connection, name: str, paused: bool, next_fire: float | None) -> None:
    """Pause or resume; `next_fire` (on resume: the first slot from now) replaces the stored one
    when given, so a pause's slots are not taken for missed ones."""
    values: dict[str, Any] = {"paused": int(paused)}
    if next_fire is not None:
        values["next_fire"] = next_fire
    if conn.execute(update(schedules).where(schedules.c.name == name).values(values)).rowcount == 0:
        raise CronNotFound(name=name)


def earliest(conn: Connection) -> float | None:
    """The earliest next fire of a schedule not paused (what the ticker sleeps until)."""
    return conn.execute(select(schedules.c.next_fire).where(schedules.c.paused == 0, schedules.c.next_fire.is_not(None))
                        .order_by(schedules.c.next_fire).limit(1)).scalar()


def due(conn: Connection, now: float) -> list[Schedule]:
    """The schedules not paused whose next fire is at or before `now`, earliest first."""
    query = _select().where(schedules.c.paused == 0, schedules.c.next_fire <= now).order_by(schedules.c.next_fire)
    return [_of(r) for r in conn.execute(query)]


def lock_for_fire(conn: Connection, name: str, expected: float) -> Schedule | None:
    """The schedule, its row locked until the transaction ends (PostgreSQL; SQLite's writer holds
    the whole database), if it is still due at `expected`: not paused, not removed, and no other
    daemon fired that slot meanwhile. None otherwise."""
    row = conn.execute(select(schedules).where(schedules.c.name == name).with_for_update()).first()
    if row is None or row.paused or row.next_fire != expected:
        return None
    state = None
    if row.last_job_id is not None:
        state = conn.execute(select(jobs.c.state).where(jobs.c.id == row.last_job_id)).scalar()
    data = dict(row._mapping)
    data["paused"] = bool(data["paused"])
    return Schedule(**data, last_job_state=JobState(state) if state is not None else None)


def overlap_skip(s: Schedule) -> str | None:
    """Why a fire of `s` is skipped for overlap now (None: it is not)."""
    state = s.last_job_state
    if not cron.overlap_blocks(s.overlap, state is not None and state.value in UNFINISHED):
        return None
    return f"overlap: the previous fire's job {s.last_job_id} was still {state.value if state else '?'}"


def mark_jobs(conn: Connection, name: str, fired: Sequence[tuple[float | None, str]]) -> None:
    """Stamp the jobs just inserted with their schedule and slot (IntegrityError: a job for
    one of these slots exists already)."""
    for slot, job_id in fired:
        conn.execute(update(jobs).where(jobs.c.id == job_id).values(schedule=name, slot=slot))


def advance(conn: Connection, s: Schedule, fired: CronFired, next_fire: float, now: float) -> None:
    """Move the schedule on to `next_fire`, recording what the fire did."""
    values: dict[str, Any] = {"next_fire": next_fire}
    if fired.jobs:
        values.update(last_slot=fired.jobs[-1][0], last_fire_at=now, last_job_id=fired.jobs[-1][1],
                      fires=schedules.c.fires + len(fired.jobs))
    if fired.skipped is not None:
        values.update(last_skip_slot=fired.skipped, last_skip_reason=fired.skip_reason, skips=schedules.c.skips + 1)
    conn.execute(update(schedules).where(schedules.c.name == s.name).values(values))


def record_run(conn: Connection, name: str, job_id: str, now: float) -> None:
    """A run by hand (`cron run`): its job is the last one (overlap looks at it); no slot moves."""
    conn.execute(update(schedules).where(schedules.c.name == name).values(
        last_job_id=job_id, last_fire_at=now, fires=schedules.c.fires + 1))
