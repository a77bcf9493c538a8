"""The scheduler's turn: record started processes, end attempts, claim due jobs, in one transaction.

The logic is written once, here, over `TurnWrites`: the handful of statements a turn runs,
implemented once per dialect, each on its driver (`sqlite.RawTurnWrites`; `pg_turn.PgTurnWrites`,
pipelined), because a turn is the daemon's hottest write and SQLAlchemy's per-statement work
cost more than the databases' own there. Every path that ends or claims an
attempt goes through it: `finish`, `finish_and_claim`, `claim_due` and `release_strays`. So the
store contract suite, which calls those, runs exactly the production path of each dialect.

What an ended attempt does to its job is decided by `jobs.after_attempt`; this module only
writes the Decision, fenced on (id, run, owner, processing).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from sqlalchemy import Connection, select

from queuectld.jobs import (
    TERMINAL_STATES,
    Decision,
    Job,
    JobState,
    LifecyclePolicy,
    Outcome,
    OutcomeKind,
    after_attempt,
)
from queuectld.store import models
from queuectld.store.base import FinishedAttempt, RunKey, SpawnedAttempt
from queuectld.store.rows import unique

#: Why an attempt was put back by `release_strays` (kept in its attempt row).
STRAY_ERROR = "never started here: this daemon does not run it (e.g. the answer to its claim was lost); not counted"
#: The policy of a stray's end: a requeue, which no config setting changes.
_STRAY_POLICY = LifecyclePolicy()


@dataclass(frozen=True, slots=True)
class Settled:
    """An ended attempt that passed its fence: the job as read, the decision, the job after it."""

    finished: FinishedAttempt
    before: Job
    decision: Decision
    after: Job

    def job_values(self) -> dict[str, Any]:
        """The job row's new values (the same keys for every attempt: one executemany)."""
        fa, d, outcome = self.finished, self.decision, self.finished.outcome
        return {
            "state": d.state.value, "attempts": d.attempts, "next_run_at": d.next_run_at, "last_error": d.last_error,
            "exit_code": outcome.exit_code, "signal": outcome.signal, "last_outcome": outcome.kind.value,
            "finished_at": fa.finished_at, "updated_at": fa.finished_at, "output_tail": fa.output_tail,
            "owner": None, "lease_expires_at": None, "pid": None, "proc_start": None,
        }

    @property
    def attempt_error(self) -> str | None:
        """The attempt row's error text: none for a success."""
        return None if self.finished.outcome.succeeded else self.finished.outcome.describe()


def settle_attempts(
    finished: Sequence[FinishedAttempt], current: dict[str, Job], policy: LifecyclePolicy
) -> list[tuple[FinishedAttempt, Settled | None]]:
    """For each ended attempt, its Settled, or None when the fence fails (the job is not the
    processing run of that owner). `current` holds the processing jobs by id, as read (locked)
    in this transaction. The same attempt reported twice in one batch is settled once."""
    out: list[tuple[FinishedAttempt, Settled | None]] = []
    pending = dict(current)
    for fa in finished:
        job = pending.get(fa.job_id)
        if job is None or job.run != fa.run or job.owner != fa.owner:
            out.append((fa, None))
            continue
        del pending[fa.job_id]
        decision = after_attempt(job, fa.outcome, policy, fa.finished_at)
        after = replace(
            job, state=decision.state, attempts=decision.attempts, next_run_at=decision.next_run_at,
            last_error=decision.last_error, exit_code=fa.outcome.exit_code, signal=fa.outcome.signal,
            last_outcome=fa.outcome.kind, finished_at=fa.finished_at, updated_at=fa.finished_at,
            output_tail=fa.output_tail, owner=None, lease_expires_at=None, pid=None, proc_start=None,
        )
        out.append((fa, Settled(fa, job, decision, after)))
    return out


class TurnWrites(Protocol):
    """The statements of a turn, inside one open write transaction; one implementation per dialect."""

    def record_processes(self, spawned: Sequence[SpawnedAttempt]) -> None:
        """Store each started attempt's pid and process start time, fenced on (id, run, owner)."""

    def processing(self, ids: Sequence[str]) -> dict[str, Job]:
        """The processing jobs among `ids` (distinct), locked until the transaction ends."""

    def held_by(self, owner: str) -> list[RunKey]:
        """Every processing (id, run) that `owner` holds."""

    def write_ends(self, settled: Sequence[Settled]) -> None:
        """Write the job row and the attempt row of each settled attempt (fenced again)."""

    def claim(self, owner: str, host: str, limit: int, now: float, lease_s: float) -> list[Job]:
        """Move up to `limit` due jobs to processing and insert their attempt rows (owner and host)."""

    def announce(self) -> None:
        """A job became due: tell the other daemons sharing the store (at commit)."""

    def dependencies_ended(self, ended: Sequence[tuple[str, JobState]], now: float) -> bool:
        """Give the waiting dependents of `ended` (job id, terminal state) their effect
        (workflow.apply_dependency_ends); whether one became claimable."""

    def announce_freed(self, queues: Collection[str]) -> None:
        """Attempts of these queues ended: if one of them has a concurrency limit, tell the other
        daemons (at commit), whose next_due_at skipped it while it was full."""

    def running_in(self, queues: Sequence[str] | None) -> list[tuple[str, int, str]]:
        """(id, run, owner) of every processing job of `queues` (None: of every queue)."""


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """A turn's claim: up to `limit` due jobs for this owner at `now`, leased for `lease_s`."""

    owner: str
    host: str
    limit: int
    now: float
    lease_s: float


TurnResult = tuple[list[tuple[FinishedAttempt, Job | None]], list[Job]]


def run_turn(
    writes: TurnWrites, finished: Sequence[FinishedAttempt], policy: LifecyclePolicy,
    spawned: Sequence[SpawnedAttempt] = (), claim: ClaimRequest | None = None,
) -> TurnResult:
    """One turn in the open transaction of `writes`: spawns recorded, attempts ended, due jobs
    claimed (in claim order: priority, then due time). Each ended attempt comes back with its
    job after the end, or None when its fence failed (nothing was written for it)."""
    if spawned:
        writes.record_processes(spawned)
    results = end_attempts(writes, finished, policy)
    claimed: list[Job] = []
    if claim is not None and claim.limit > 0:
        claimed = writes.claim(claim.owner, claim.host, claim.limit, claim.now, claim.lease_s)
        claimed.sort(key=lambda j: (-j.priority, j.next_run_at or 0.0))
    return results, claimed


def end_attempts(
    writes: TurnWrites, finished: Sequence[FinishedAttempt], policy: LifecyclePolicy
) -> list[tuple[FinishedAttempt, Job | None]]:
    """Settle and write ended attempts; announce when one of them made its job wait again."""
    if not finished:
        return []
    current = writes.processing(unique([fa.job_id for fa in finished]))
    settled = settle_attempts(finished, current, policy)
    done = [s for _, s in settled if s is not None]
    if done:
        writes.write_ends(done)
        due = any(s.decision.state is JobState.PENDING for s in done)
        # Only jobs that have dependents cost anything more: the flag was read with the job.
        ended = [(s.after.id, s.decision.state) for s in done
                 if s.before.has_dependents and s.decision.state in TERMINAL_STATES]
        if ended and writes.dependencies_ended(ended, max(s.finished.finished_at for s in done)):
            due = True
        if due:
            writes.announce()
        else:
            writes.announce_freed({s.before.queue for s in done})
    return [(fa, None if s is None else s.after) for fa, s in settled]


def release_strays(writes: TurnWrites, owner: str, running: Collection[RunKey], now: float) -> list[RunKey]:
    """Every processing row of `owner` that is not among `running` ends as a requeued attempt
    (uncounted, due when it was, its attempt row saying why), through the same writes."""
    keep = set(running)
    strays = [key for key in writes.held_by(owner) if key not in keep]
    ended = [FinishedAttempt(job_id, run, owner, Outcome(OutcomeKind.REQUEUED, error=STRAY_ERROR), now)
             for job_id, run in strays]
    end_attempts(writes, ended, _STRAY_POLICY)
    return strays


#: Why `queue pause --kill` (requeue_running) ended an attempt (kept in its attempt row).
PAUSED_ERROR = "its queue was paused with --kill; requeued, not counted"


def requeue_running(writes: TurnWrites, queues: Sequence[str] | None, now: float) -> list[RunKey]:
    """End every processing attempt of `queues` (None: of every queue) as requeued (uncounted,
    due when it was, PAUSED_ERROR in its attempt row), fenced as every end is; returns them.
    Their processes are the caller's (and their owners') to kill."""
    ended = [FinishedAttempt(job_id, run, owner, Outcome(OutcomeKind.REQUEUED, error=PAUSED_ERROR), now)
             for job_id, run, owner in writes.running_in(queues)]
    results = end_attempts(writes, ended, _STRAY_POLICY)
    return [(fa.job_id, fa.run) for fa, after in results if after is not None]


def announce_freed(conn: Connection, queues: Collection[str], announce: Callable[[Connection], None]) -> None:
    """Attempts of `queues` ended outside a turn's own statements (a turn, a cancel of a running
    job): if one of them has a concurrency limit, `announce` to the other daemons at commit."""
    limited = conn.execute(
        select(models.queues.c.name)
        .where(models.queues.c.name.in_(sorted(queues)), models.queues.c.concurrency.is_not(None)).limit(1)
    ).first()
    if limited is not None:
        announce(conn)
