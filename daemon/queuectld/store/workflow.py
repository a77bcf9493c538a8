"""Workflow, inside a write (or read) transaction the store opened: dependencies, holds, edits,
restarts and environment snapshots (revision 0004).

Dependencies are edges in `job_deps` (job_id runs after dep_id; `any_end`: after any end, else
after completion). A job's `deps_left` counts its edges not yet satisfied; it is claimable only
at 0. Every path that ends a job with dependents (`has_dependents`) calls
`apply_dependency_ends`, which gives each waiting dependent `jobs.on_dependency_end`'s effect:
one dependency fewer, or canceled (and so on for its own dependents). The turn runs it on its own
statements (a `DependencyWrites` per dialect); the other paths on `SqlDependencyWrites`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from sqlalchemy import Connection, bindparam, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from queuectl.errors import (
    DependencyCycle,
    DependencyFailed,
    DependencyNotFound,
    InvalidParams,
    InvalidState,
    JobNotFound,
)
from queuectld.jobs import (
    TERMINAL_STATES,
    DependencyEffect,
    Job,
    JobState,
    dependency_canceled_reason,
    on_dependency_end,
    on_restart,
    require_transition,
)
from queuectld.store import queues as queue_store
from queuectld.store.base import Dependency, EnvSnapshot, JobEdit, JobFilter, NewJob
from queuectld.store.models import envs, job_deps, job_labels, jobs
from queuectld.store.rows import LIST_COLUMNS, chunks, job_from_row, unique

_WAITING = (JobState.PENDING.value, JobState.FAILED.value)
#: A dependency's state as `apply_dependency_ends` takes it: None means it was deleted.
EndedState = JobState | None
#: Row-by-row statements are sent in batches of this many parameter sets.
_MANY = 1000
#: From this many rows on, PostgreSQL inserts them with COPY (fewer: an INSERT, as any statement).
COPY_FROM = 500


def deleted_reason(dependency_id: str) -> str:
    """The last_error of a job canceled because its dependency was deleted (or purged)."""
    return f"dependency {dependency_id} was deleted"


# -- queues -----------------------------------------------------------------------------------------


# The queue check is queues.require_queues (shared with the named queues' store module).


# -- environment snapshots --------------------------------------------------------------------------


def insert_envs(conn: Connection, snapshots: Sequence[EnvSnapshot]) -> None:
    """Store each snapshot once: one already there (the same id is the same content) is kept."""
    if not snapshots:
        return
    rows = [{"id": id_, "clean": clean, "vars": vars_} for id_, clean, vars_ in env_rows(snapshots)]
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    conn.execute(dialect_insert(envs).on_conflict_do_nothing(index_elements=["id"]), rows)


def env_rows(snapshots: Sequence[EnvSnapshot]) -> list[tuple[str, int, str]]:
    """(id, clean, vars as JSON) of each distinct snapshot: an envs row (the one encoding of it)."""
    return [(e.id, int(e.clean), json.dumps(e.vars, sort_keys=True, ensure_ascii=False))
            for e in {e.id: e for e in snapshots}.values()]


def envs_of(conn: Connection, ids: Collection[str]) -> dict[str, EnvSnapshot]:
    """The stored snapshots among `ids`, by id (an unknown id is left out)."""
    out: dict[str, EnvSnapshot] = {}
    for chunk in chunks(sorted(set(ids))):
        for row in conn.execute(select(envs.c.id, envs.c.clean, envs.c.vars).where(envs.c.id.in_(chunk))):
            out[row.id] = EnvSnapshot(row.id, bool(row.clean), json.loads(row.vars))
    return out


# -- enqueue: edges, labels, counts -----------------------------------------------------------------


def edges_of_new(job: NewJob) -> dict[str, bool]:
    """A new job's edges: dependency id -> any_end (an id given both ways needs completion)."""
    if not job.after_any:
        return dict.fromkeys(job.after, False)
    out = dict.fromkeys(job.after_any, True)
    out.update(dict.fromkeys(job.after, False))
    return out


@dataclass(slots=True)
class Links:
    """What a batch adds besides its job rows: per job (in batch order) deps_left and
    has_dependents (None: all 0), the job_deps and job_labels rows, and the dependencies outside
    the batch, which now have dependents."""

    deps_left: list[int] | None = None
    has_dependents: list[int] | None = None
    edges: list[tuple[str, str, int]] | None = None  #: (job_id, dep_id, any_end)
    labels: list[tuple[str, str]] | None = None  #: (label, job_id)
    outside: list[str] | None = None

    def due(self, new: Sequence[NewJob]) -> bool:
        """Whether some job of the batch can be claimed once due (not held, nothing to wait for)."""
        left = self.deps_left
        return any(not j.held and (left is None or left[i] == 0) for i, j in enumerate(new))


def label_rows(new: Sequence[NewJob]) -> list[tuple[str, str]]:
    """(label, job id) of each label of each job: the batch's job_labels rows."""
    return [(label, j.id) for j in new if j.labels for label in j.labels.split(",")]


def plan_links(conn: Connection, new: Sequence[NewJob], keep_dependents: Collection[str] = ()) -> Links:
    """The Links of a batch about to be inserted. A dependency must be an earlier job of the batch
    or a job that exists (DependencyNotFound); one outside the batch that already ended dead or
    canceled cannot satisfy an `after` edge (DependencyFailed); one that ended as the edge needs
    is satisfied already. Those outside are locked (PostgreSQL), so that a turn ending one
    meanwhile waits for this batch and then sees its edges. `keep_dependents`: ids of the batch
    that already have dependents (replaced jobs)."""
    links = Links()
    has_edges = has_labels = False
    for j in new:
        if j.after or j.after_any:
            has_edges = True
        if j.labels:
            has_labels = True
    if has_labels:
        links.labels = label_rows(new)
    if keep_dependents:
        links.has_dependents = [1 if j.id in keep_dependents else 0 for j in new]
    if not has_edges:
        return links
    position = {j.id: i for i, j in enumerate(new)}
    wanted = [edges_of_new(j) if j.after or j.after_any else None for j in new]
    outside_ids = unique([d for i, e in enumerate(wanted) if e for d in e if position.get(d, i) >= i])
    outside_states = _locked_states(conn, outside_ids)
    deps_left = [0] * len(new)
    has_dependents = links.has_dependents or [0] * len(new)
    edges: list[tuple[str, str, int]] = []
    outside: set[str] = set()
    for i, j in enumerate(new):
        left = 0
        for dep, any_end in (wanted[i] or {}).items():
            if dep == j.id:
                raise DependencyCycle(job_id=j.id, dependency=dep)
            at = position.get(dep)
            if at is not None and at < i:
                left += 1  # an earlier job of the batch: pending
                has_dependents[at] = 1
            else:
                state = outside_states.get(dep)
                if state is None:
                    raise DependencyNotFound(job_id=j.id, dependency=dep)
                left += _unsatisfied(j.id, dep, any_end, state)
                outside.add(dep)
            edges.append((j.id, dep, int(any_end)))
        deps_left[i] = left
    links.deps_left, links.has_dependents, links.edges, links.outside = deps_left, has_dependents, edges, sorted(outside)
    for j in new:  # a replaced job keeps its dependents: its new dependencies must not wait for it
        if j.id in keep_dependents and (j.after or j.after_any):
            _refuse_cycle(conn, j.id, [d for d in edges_of_new(j) if d not in position])
    return links


def lock_dependency_graph(conn: Connection) -> None:
    """Serialize the changes that could close a cycle of dependencies (editing a job's
    dependencies, replacing a job that has dependents), so each one's cycle check sees the edges
    of the one before: on PostgreSQL a transaction advisory lock per schema, taken before any
    row lock (no deadlock with the rows those changes lock); SQLite's one writer does this already."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.job_deps'))")


def insert_links(conn: Connection, links: Links) -> None:
    """Write the job_deps and job_labels rows of a batch and mark the dependencies outside it."""
    copy = conn.dialect.name == "postgresql" and max(len(links.edges or ()), len(links.labels or ())) >= COPY_FROM
    if links.edges:
        if copy:
            copy_rows(conn, "job_deps", ("job_id", "dep_id", "any_end"), links.edges)
        else:
            conn.execute(insert(job_deps), [{"job_id": a, "dep_id": b, "any_end": c} for a, b, c in links.edges])
    if links.labels:
        if copy:
            copy_rows(conn, "job_labels", ("label", "job_id"), links.labels)
        else:
            conn.execute(insert(job_labels), [{"label": a, "job_id": b} for a, b in links.labels])
    mark_has_dependents(conn, links.outside or ())


def copy_rows(conn: Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """COPY `rows` into `table` (PostgreSQL, psycopg) on the connection's own transaction: a big
    batch's rows at a tenth of an executemany's cost. Triggers fire as for an INSERT."""
    import psycopg

    raw: Any = conn.connection.dbapi_connection
    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
    try:
        with raw.cursor() as cur, cur.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
    except psycopg.errors.IntegrityError as exc:  # as SQLAlchemy raises it: the callers know what it means
        raise IntegrityError(statement, None, exc) from exc


def mark_has_dependents(conn: Connection, ids: Sequence[str]) -> None:
    """has_dependents = 1 on each of `ids` (those already marked are not written again)."""
    for chunk in chunks(ids):
        conn.execute(update(jobs).where(jobs.c.id.in_(chunk), jobs.c.has_dependents == 0).values(has_dependents=1))


def edges_by_job(conn: Connection, ids: Sequence[str]) -> dict[str, dict[str, bool]]:
    """The stored edges of each of `ids` that has some: job id -> {dependency id: any_end}."""
    out: dict[str, dict[str, bool]] = {}
    for chunk in chunks(ids):
        rows = conn.execute(
            select(job_deps.c.job_id, job_deps.c.dep_id, job_deps.c.any_end).where(job_deps.c.job_id.in_(chunk))
        )
        for job_id, dep_id, any_end in rows:
            out.setdefault(job_id, {})[dep_id] = bool(any_end)
    return out


def with_dependents(conn: Connection, ids: Sequence[str]) -> set[str]:
    """Those of `ids` on which some job depends (a replaced job keeps its dependents)."""
    out: set[str] = set()
    for chunk in chunks(ids):
        out.update(conn.execute(select(job_deps.c.dep_id).where(job_deps.c.dep_id.in_(chunk)).distinct()).scalars())
    return out


def forget_jobs(conn: Connection, ids: Sequence[str]) -> None:
    """Remove the labels and own edges of jobs about to be deleted (edges to them stay: their
    dependents show the dependency as deleted)."""
    for chunk in chunks(ids):
        conn.execute(delete(job_labels).where(job_labels.c.job_id.in_(chunk)))
        conn.execute(delete(job_deps).where(job_deps.c.job_id.in_(chunk)))


def _locked_states(conn: Connection, ids: Sequence[str]) -> dict[str, JobState]:
    out: dict[str, JobState] = {}
    for chunk in chunks(sorted(ids)):
        rows = conn.execute(select(jobs.c.id, jobs.c.state).where(jobs.c.id.in_(chunk))
                            .order_by(jobs.c.id).with_for_update())
        out.update((r.id, JobState(r.state)) for r in rows)
    return out


def _unsatisfied(job_id: str, dep: str, any_end: bool, state: JobState) -> int:
    """1 if the edge still waits for `dep` in `state`, 0 if satisfied; DependencyFailed if the
    dependency can never satisfy it (an `after` edge on a dead or canceled job)."""
    if state not in TERMINAL_STATES:
        return 1
    effect = on_dependency_end(state, any_end, JobState.PENDING)
    if effect is DependencyEffect.CANCEL:
        raise DependencyFailed(job_id=job_id, dependency=dep, state=state.value)
    return 0


# -- a dependency's end -----------------------------------------------------------------------------


class WaitingDependent(NamedTuple):
    """A waiting job with an edge to a dependency that just ended (one row per edge)."""

    job_id: str
    dep_id: str
    any_end: bool
    state: JobState
    deps_left: int
    held: bool
    has_dependents: bool


class DependencyWrites(Protocol):
    """The statements `apply_dependency_ends` runs, in an open write transaction."""

    def waiting_dependents(self, dep_ids: Sequence[str]) -> list[WaitingDependent]:
        """The waiting (pending or failed) jobs with an edge to one of `dep_ids`, locked."""

    def satisfy(self, counts: Sequence[tuple[str, int]], now: float) -> None:
        """deps_left = deps_left - n for each (job id, n)."""

    def cancel(self, canceled: Sequence[tuple[str, str, str]], now: float) -> None:
        """Cancel each (job id, last_error, canceled_by) that still waits."""


def apply_dependency_ends(writes: DependencyWrites, ended: Sequence[tuple[str, EndedState]], now: float) -> bool:
    """Give every job waiting on one of `ended` (job id, its state now; None: deleted) the effect
    of `jobs.on_dependency_end`: SATISFIED -> one dependency fewer; CANCEL (or a deleted
    dependency) -> canceled, its last_error saying why, canceled_by the dependency; and so on for
    the dependents of those canceled. Returns whether a job became claimable (to announce)."""
    became_due = False
    frontier = [(job_id, state) for job_id, state in ended if state is None or state in TERMINAL_STATES]
    while frontier:
        states = dict(frontier)
        satisfied: Counter[str] = Counter()
        canceled: dict[str, tuple[str, str]] = {}
        rows: dict[str, WaitingDependent] = {}
        for dep in writes.waiting_dependents(list(states)):
            rows[dep.job_id] = dep
            dep_state = states[dep.dep_id]
            if dep_state is None:
                if dep.job_id not in canceled:
                    canceled[dep.job_id] = (deleted_reason(dep.dep_id), dep.dep_id)
                continue
            effect = on_dependency_end(dep_state, dep.any_end, dep.state)
            if effect is DependencyEffect.SATISFIED:
                satisfied[dep.job_id] += 1
            elif effect is DependencyEffect.CANCEL and dep.job_id not in canceled:
                canceled[dep.job_id] = (dependency_canceled_reason(dep.dep_id, dep_state), dep.dep_id)
        for job_id in canceled:
            require_transition(rows[job_id].state, JobState.CANCELED)
            satisfied.pop(job_id, None)
        if satisfied:
            writes.satisfy(sorted(satisfied.items()), now)
            became_due = became_due or any(
                rows[j].deps_left - n <= 0 and not rows[j].held for j, n in satisfied.items()
            )
        if canceled:
            writes.cancel([(j, why, by) for j, (why, by) in sorted(canceled.items())], now)
        frontier = [(j, JobState.CANCELED) for j in sorted(canceled) if rows[j].has_dependents]
    return became_due


class SqlDependencyWrites:
    """DependencyWrites over a SQLAlchemy connection (every dialect; the SQLite turn has its own)."""

    _SATISFY = (update(jobs).where(jobs.c.id == bindparam("k_id"))
                .values(deps_left=jobs.c.deps_left - bindparam("v_n"), updated_at=bindparam("v_now")))
    _CANCEL = (
        update(jobs).where(jobs.c.id == bindparam("k_id"), jobs.c.state.in_(_WAITING))
        .values(state=JobState.CANCELED.value, next_run_at=None, last_error=bindparam("v_error"),
                canceled_by=bindparam("v_by"), finished_at=bindparam("v_now"), updated_at=bindparam("v_now"))
    )

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def waiting_dependents(self, dep_ids: Sequence[str]) -> list[WaitingDependent]:
        """See DependencyWrites."""
        out: list[WaitingDependent] = []
        for chunk in chunks(dep_ids):
            rows = self.conn.execute(
                select(job_deps.c.job_id, job_deps.c.dep_id, job_deps.c.any_end, jobs.c.state, jobs.c.deps_left,
                       jobs.c.held, jobs.c.has_dependents)
                .select_from(job_deps.join(jobs, jobs.c.id == job_deps.c.job_id))
                .where(job_deps.c.dep_id.in_(chunk), jobs.c.state.in_(_WAITING))
                .order_by(job_deps.c.job_id)
                .with_for_update(of=jobs)
            )
            out.extend(WaitingDependent(r[0], r[1], bool(r[2]), JobState(r[3]), r[4], bool(r[5]), bool(r[6]))
                       for r in rows)
        return out

    def satisfy(self, counts: Sequence[tuple[str, int]], now: float) -> None:
        """See DependencyWrites."""
        for part in chunks(counts, _MANY):
            self.conn.execute(self._SATISFY, [{"k_id": j, "v_n": n, "v_now": now} for j, n in part])

    def cancel(self, canceled: Sequence[tuple[str, str, str]], now: float) -> None:
        """See DependencyWrites."""
        for part in chunks(canceled, _MANY):
            self.conn.execute(self._CANCEL, [{"k_id": j, "v_error": why, "v_by": by, "v_now": now}
                                             for j, why, by in part])


def recount(conn: Connection, ids: Sequence[str], pending: Collection[str] = ()) -> dict[str, int]:
    """deps_left of each of `ids` from its stored edges and its dependencies' states now, where
    every job of `pending` counts as pending (it is being put back in this transaction).
    DependencyNotFound for an edge to a deleted job; DependencyFailed for an `after` edge to a
    dead or canceled one: such a job could never run."""
    edges = edges_by_job(conn, ids)
    dep_ids = unique([d for e in edges.values() for d in e])
    states = {job_id: state for job_id, state in _locked_states(conn, [d for d in dep_ids if d not in pending]).items()}
    states.update(dict.fromkeys([d for d in dep_ids if d in pending], JobState.PENDING))
    out: dict[str, int] = {}
    for job_id in ids:
        left = 0
        for dep, any_end in edges.get(job_id, {}).items():
            state = states.get(dep)
            if state is None:
                raise DependencyNotFound(job_id=job_id, dependency=dep)
            left += _unsatisfied(job_id, dep, any_end, state)
        out[job_id] = left
    return out


def waiting_dependents_of(conn: Connection, ids: Sequence[str], skip: Collection[str] = ()) -> list[str]:
    """The waiting jobs (not among `skip`) with an edge to one of `ids`."""
    out: list[str] = []
    for row in SqlDependencyWrites(conn).waiting_dependents(ids):
        if row.job_id not in skip:
            out.append(row.job_id)
    return unique(out)


def refresh_dependents(conn: Connection, ids: Sequence[str], skip: Collection[str], now: float) -> None:
    """Recount the waiting dependents of `ids`, which just went back to pending (an edge one of
    them had satisfied waits again). A dependency that can no longer be met is counted as
    waiting, not refused: the dependents were not asked to change."""
    waiting = waiting_dependents_of(conn, ids, skip)
    if not waiting:
        return
    edges = edges_by_job(conn, waiting)
    dep_ids = unique([d for e in edges.values() for d in e])
    states = _locked_states(conn, dep_ids)
    params = []
    for job_id in waiting:
        left = sum(1 for dep, any_end in edges.get(job_id, {}).items()
                   if (s := states.get(dep)) is None or s not in TERMINAL_STATES
                   or on_dependency_end(s, any_end, JobState.PENDING) is not DependencyEffect.SATISFIED)
        params.append({"k_id": job_id, "v_left": left, "v_now": now})
    conn.execute(update(jobs).where(jobs.c.id == bindparam("k_id"))
                 .values(deps_left=bindparam("v_left"), updated_at=bindparam("v_now")), params)


# -- store methods ----------------------------------------------------------------------------------


def dependencies_of(conn: Connection, job_id: str) -> list[Dependency]:
    """The dependencies of a job with their states now (None: deleted), by id; JobNotFound."""
    if conn.execute(select(jobs.c.id).where(jobs.c.id == job_id)).first() is None:
        raise JobNotFound(job_id=job_id)
    rows = conn.execute(
        select(job_deps.c.dep_id, job_deps.c.any_end, jobs.c.state)
        .select_from(job_deps.outerjoin(jobs, jobs.c.id == job_deps.c.dep_id))
        .where(job_deps.c.job_id == job_id)
        .order_by(job_deps.c.dep_id)
    )
    return [Dependency(r[0], bool(r[1]), None if r[2] is None else JobState(r[2])) for r in rows]


def job_conditions(where: JobFilter) -> list[Any]:
    """The conditions of a JobFilter (a label through job_labels)."""
    conds: list[Any] = []
    if where.state is not None:
        conds.append(jobs.c.state == where.state.value)
    if where.outcome is not None:
        conds.append(jobs.c.last_outcome == where.outcome.value)
    if where.queue is not None:
        conds.append(jobs.c.queue == where.queue)
    if where.label is not None:
        conds.append(jobs.c.id.in_(select(job_labels.c.job_id).where(job_labels.c.label == where.label)))
    return conds


def release(conn: Connection, ids: Sequence[str], now: float) -> tuple[list[Job], bool]:
    """Release every one of `ids` (all held), or none: JobNotFound / InvalidState for the first
    missing / not held. Returns the jobs as they are now and whether one became claimable."""
    ids = unique(ids)
    found = _read(conn, ids)
    for job in every_job(ids, found):
        if not job.held:
            raise InvalidState(job_id=job.id, state=f"{job.state.value} and not held",
                               action="release (only held jobs are released)")
    for chunk in chunks(ids):
        conn.execute(update(jobs).where(jobs.c.id.in_(chunk)).values(held=0, updated_at=now))
    released = [_replace(found[job_id], held=False, updated_at=now) for job_id in ids]
    return released, any(_claimable(j) for j in released)


def hold(conn: Connection, ids: Sequence[str], now: float) -> list[Job]:
    """Hold every one of `ids` (each waiting: pending or failed, and not held), or none:
    JobNotFound / InvalidState for the first missing / running, ended or already held one. The
    update is conditional on the state read, so a job claimed meanwhile fails the whole call."""
    ids = unique(ids)
    found = _read(conn, ids)
    for job in every_job(ids, found):
        if job.state.value not in _WAITING or job.held:
            raise InvalidState(job_id=job.id, state=job.state.value + (" and held" if job.held else ""),
                               action="hold (only waiting jobs that are not held are held)")
    for chunk in chunks(ids):
        changed = conn.execute(update(jobs).where(jobs.c.id.in_(chunk), jobs.c.held == 0,
                                                  jobs.c.state.in_(list(_WAITING))).values(held=1, updated_at=now))
        if changed.rowcount != len(chunk):
            raise InvalidState(job_id=chunk[0], state="started meanwhile", action="hold (nothing was held)")
    return [_replace(found[job_id], held=True, updated_at=now) for job_id in ids]


def release_matching(conn: Connection, where: JobFilter, now: float, limit: int) -> tuple[list[str], bool]:
    """Release up to `limit` held jobs matching `where`, oldest first; their ids, and whether one
    became claimable."""
    rows = conn.execute(
        select(jobs.c.id, jobs.c.state, jobs.c.deps_left).where(jobs.c.held == 1, *job_conditions(where))
        .order_by(jobs.c.created_at, jobs.c.id).limit(limit).with_for_update()
    ).all()
    ids = [r.id for r in rows]
    for chunk in chunks(ids):
        conn.execute(update(jobs).where(jobs.c.id.in_(chunk)).values(held=0, updated_at=now))
    return ids, any(r.state in _WAITING and r.deps_left == 0 for r in rows)


def edit(conn: Connection, job_id: str, change: JobEdit, now: float) -> tuple[Job, bool]:
    """Change a job that is not processing (InvalidState) as `change` says; returns it as it is
    now and whether it is claimable. A new queue must exist (QueueNotFound); new dependencies
    must exist (DependencyNotFound), be able to complete (DependencyFailed), and not wait for
    this job themselves (DependencyCycle); deps_left is recounted from them."""
    if change.after is not None or change.after_any is not None:
        lock_dependency_graph(conn)
    row = conn.execute(select(*LIST_COLUMNS).where(jobs.c.id == job_id).with_for_update()).first()
    if row is None:
        raise JobNotFound(job_id=job_id)
    job = job_from_row(row)
    if job.state is JobState.PROCESSING:
        raise InvalidState(job_id=job_id, state="processing", action="edit (wait for its attempt to end, or cancel it)")
    if change.next_run_at is not None and job.state in TERMINAL_STATES:
        # A run time means nothing to a job that will not run again; `restart` runs it again.
        raise InvalidState(job_id=job_id, state=job.state.value,
                           action=f"reschedule (it has ended; `queuectl restart {job_id}` runs it again)")
    values: dict[str, Any] = {"updated_at": now}
    for name in ("command", "priority", "max_retries", "next_run_at"):
        if getattr(change, name) is not None:
            values[name] = getattr(change, name)
    if change.clear_timeout:
        values["timeout_s"] = None
    elif change.timeout_s is not None:
        values["timeout_s"] = change.timeout_s
    if change.queue is not None and change.queue != job.queue:
        queue_store.require_queues(conn, [change.queue])
        values["queue"] = change.queue
    if change.labels is not None:
        labels = change.labels or None
        values["labels"] = labels
        conn.execute(delete(job_labels).where(job_labels.c.job_id == job_id))
        if labels:
            conn.execute(insert(job_labels), [{"label": label, "job_id": job_id} for label in labels.split(",")])
    if change.after is not None or change.after_any is not None:
        values["deps_left"] = _replace_edges(conn, job, change)
    conn.execute(update(jobs).where(jobs.c.id == job_id).values(**values))
    after = job_from_row(conn.execute(select(jobs).where(jobs.c.id == job_id)).one())
    return after, _claimable(after)


def _replace_edges(conn: Connection, job: Job, change: JobEdit) -> int:
    current = edges_by_job(conn, [job.id]).get(job.id, {})
    after = set(change.after) if change.after is not None else {d for d, a in current.items() if not a}
    after_any = set(change.after_any) if change.after_any is not None else {d for d, a in current.items() if a}
    both = sorted(after & after_any)
    if both:
        raise InvalidParams(detail=f"job {both[0]!r} is given both as --after and as --after-any")
    edges = {**dict.fromkeys(sorted(after_any), True), **dict.fromkeys(sorted(after), False)}
    if job.id in edges:
        raise DependencyCycle(job_id=job.id, dependency=job.id)
    states = _locked_states(conn, list(edges))
    left = 0
    for dep, any_end in edges.items():
        state = states.get(dep)
        if state is None:
            raise DependencyNotFound(job_id=job.id, dependency=dep)
        left += _unsatisfied(job.id, dep, any_end, state)
    _refuse_cycle(conn, job.id, [d for d in edges if d not in current])
    conn.execute(delete(job_deps).where(job_deps.c.job_id == job.id))
    if edges:
        conn.execute(insert(job_deps), [{"job_id": job.id, "dep_id": d, "any_end": int(a)} for d, a in edges.items()])
    mark_has_dependents(conn, sorted(edges))
    return left


def _refuse_cycle(conn: Connection, job_id: str, added: Sequence[str]) -> None:
    """DependencyCycle if `job_id` is among the dependencies, transitively, of one of `added`."""
    for start in added:
        seen = {start}
        frontier = [start]
        while frontier:
            nxt: list[str] = []
            for chunk in chunks(frontier):
                for dep in conn.execute(select(job_deps.c.dep_id).where(job_deps.c.job_id.in_(chunk))).scalars():
                    if dep == job_id:
                        raise DependencyCycle(job_id=job_id, dependency=start)
                    if dep not in seen:
                        seen.add(dep)
                        nxt.append(dep)
            frontier = nxt


#: What a job put back to pending forgets of how it ended.
FORGOTTEN = {"finished_at": None, "exit_code": None, "signal": None, "last_outcome": None, "canceled_by": None}


def restart(conn: Connection, ids: Sequence[str], now: float) -> tuple[list[Job], bool]:
    """Put every one of `ids` (completed, dead or canceled) back to pending now via
    `jobs.on_restart`, or none: JobNotFound / InvalidState / QueueNotFound (its queue was
    removed) / (a dependency that is gone or can no longer complete) DependencyNotFound /
    DependencyFailed. Attempt rows and the run number are
    kept; deps_left is recounted, the jobs restarted together counting as pending; waiting
    dependents of a restarted job wait for it again. Returns the jobs and whether one is claimable."""
    ids = unique(ids)
    return put_back(conn, every_job(ids, _read(conn, ids)), now)


def put_back(conn: Connection, chosen: Sequence[Job], now: float) -> tuple[list[Job], bool]:
    """Restart `chosen` (see `restart`): each one's on_restart Decision, deps_left recounted."""
    decided = [(job, on_restart(job, now)) for job in chosen]
    # A removed queue keeps its finished jobs' names; back in it, they would wait forever.
    queue_store.require_queues(conn, sorted({job.queue for job in chosen}))
    ids = [job.id for job in chosen]
    left = recount(conn, ids, pending=set(ids))
    params = [
        {"k_id": job.id, "v_state": d.state.value, "v_attempts": d.attempts, "v_next": d.next_run_at,
         "v_error": d.last_error, "v_left": left[job.id], "v_now": now}
        for job, d in decided
    ]
    stmt = update(jobs).where(jobs.c.id == bindparam("k_id")).values(
        state=bindparam("v_state"), attempts=bindparam("v_attempts"), next_run_at=bindparam("v_next"),
        last_error=bindparam("v_error"), deps_left=bindparam("v_left"), updated_at=bindparam("v_now"), **FORGOTTEN,
    )
    for part in chunks(params, _MANY):
        conn.execute(stmt, list(part))
    refresh_dependents(conn, ids, set(ids), now)
    back = [
        _replace(job, state=d.state, attempts=d.attempts, next_run_at=d.next_run_at, last_error=d.last_error,
                 deps_left=left[job.id], updated_at=now, **FORGOTTEN)
        for job, d in decided
    ]
    return back, any(_claimable(j) for j in back)


def canceled_dependents(conn: Connection, ids: Sequence[str]) -> list[Job]:
    """Every job canceled because one of `ids` ended (canceled_by), transitively, oldest first."""
    found: dict[str, Job] = {}
    frontier = list(ids)
    while frontier:
        nxt: list[str] = []
        for chunk in chunks(frontier):
            rows = conn.execute(
                select(*LIST_COLUMNS)
                .select_from(job_deps.join(jobs, jobs.c.id == job_deps.c.job_id))
                .where(job_deps.c.dep_id.in_(chunk), jobs.c.state == JobState.CANCELED.value,
                       jobs.c.canceled_by == job_deps.c.dep_id)
                .with_for_update(of=jobs)
            )
            for r in rows:
                if r.id not in found:
                    found[r.id] = job_from_row(r)
                    nxt.append(r.id)
        frontier = nxt
    return sorted(found.values(), key=lambda j: (j.created_at, j.id))


def every_job(ids: Sequence[str], found: dict[str, Job]) -> list[Job]:
    """The jobs of `ids`, in order, from what a read `found`: JobNotFound for the first missing
    (the all-or-none requests: release, hold, restart, dlq purge)."""
    for job_id in ids:
        if job_id not in found:
            raise JobNotFound(job_id=job_id)
    return [found[job_id] for job_id in ids]


def _read(conn: Connection, ids: Sequence[str]) -> dict[str, Job]:
    found: dict[str, Job] = {}
    for chunk in chunks(ids):
        rows = conn.execute(select(*LIST_COLUMNS).where(jobs.c.id.in_(chunk)).with_for_update())
        found.update((r.id, job_from_row(r)) for r in rows)
    return found


def _replace(job: Job, **changes: Any) -> Job:
    from dataclasses import replace

    return replace(job, **changes)


def _claimable(job: Job) -> bool:
    return job.state.value in _WAITING and not job.held and job.deps_left == 0
