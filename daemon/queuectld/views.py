"""Domain objects in their wire shape: jobs, attempts, queues, dependencies, environments. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from fnmatch import fnmatchcase

from queuectl import protocol as p
from queuectld.jobs import Job, JobState, RetryRules, signal_name
from queuectld.store.base import AttemptRecord, Dependency, EnvSnapshot, QueueInfo

#: What a masked value shows.
MASK = "***"


def ts(value: float | None) -> datetime | None:
    """A UNIX time as an aware UTC datetime (None stays None)."""
    return None if value is None else datetime.fromtimestamp(value, tz=UTC)


def ts_of(value: float) -> datetime:
    """A UNIX time as an aware UTC datetime."""
    return datetime.fromtimestamp(value, tz=UTC)


def duration_s(started_at: float | None, finished_at: float | None) -> float | None:
    """How long an attempt ran, to the millisecond (None: unknown, or not ended)."""
    if started_at is None or finished_at is None or finished_at < started_at:
        return None
    return round(finished_at - started_at, 3)


def attempt_view(a: AttemptRecord) -> p.AttemptView:
    """The wire shape of one attempt."""
    return p.AttemptView(
        attempt=a.attempt, started_at=ts(a.started_at), finished_at=ts(a.finished_at), outcome=a.outcome,
        exit_code=a.exit_code, signal=None if a.signal is None else signal_name(a.signal), error=a.error,
        host=a.host, duration_s=duration_s(a.started_at, a.finished_at),
        reason=a.error or (None if a.outcome is None else a.outcome.value), owner=a.owner,
    )


def job_view(job: Job, attempts: list[AttemptRecord] | None = None) -> p.JobView:
    """The wire shape of a job (what `job.get` adds — dependencies, environment, blocker — is
    set by the caller on the copy `model_copy(update=...)` makes)."""
    rules = RetryRules.decode(job.retry_rules)
    # A running job's finished_at is its previous attempt's: no duration until this one ends.
    ran = None if job.state is JobState.PROCESSING else duration_s(job.started_at, job.finished_at)
    return p.JobView(
        id=job.id, command=job.command, state=job.state, attempts=job.attempts, max_retries=job.max_retries,
        priority=job.priority, timeout_s=job.timeout_s, next_run_at=ts(job.next_run_at),
        created_at=ts_of(job.created_at), updated_at=ts_of(job.updated_at), started_at=ts(job.started_at),
        finished_at=ts(job.finished_at), exit_code=job.exit_code, last_error=job.last_error, owner=job.owner,
        lease_expires_at=ts(job.lease_expires_at),
        last_outcome=job.last_outcome, signal=None if job.signal is None else signal_name(job.signal),
        host=job.host, duration_s=ran,
        retry_on_exit=None if rules.retry_on_exit is None else list(rules.retry_on_exit),
        no_retry_on_exit=None if rules.no_retry_on_exit is None else list(rules.no_retry_on_exit),
        retry_on_timeout=rules.retry_on_timeout,
        no_retry_on_signal=None if rules.no_retry_on_signal is None else list(rules.no_retry_on_signal),
        backoff_base=job.backoff_base, backoff_max_s=job.backoff_max_s,
        queue=job.queue, labels=job.label_list, held=job.held, cwd=job.cwd, canceled_by=job.canceled_by,
        output_tail=job.output_tail if attempts is not None else None,
        attempt_history=None if attempts is None else [attempt_view(a) for a in attempts],
        schedule=job.schedule, slot=ts(job.slot),
    )


def dependency_views(dependencies: Sequence[Dependency]) -> list[p.DependencyView]:
    """The wire shape of a job's dependencies."""
    return [p.DependencyView(id=d.dep_id, any_end=d.any_end, state=d.state) for d in dependencies]


def queue_view(q: QueueInfo) -> p.QueueView:
    """The wire shape of a queue."""
    return p.QueueView(name=q.name, concurrency=q.concurrency, paused=q.paused, pending=q.pending, held=q.held,
                       running=q.running, oldest_waiting_at=ts(q.oldest_waiting_at), completed=q.completed,
                       dead=q.dead)


def is_secret(name: str, patterns: Sequence[str]) -> bool:
    """Whether a variable's name looks secret: it matches one of `patterns` (upper-case fnmatch
    patterns, config.secret_patterns), case-insensitively."""
    upper = name.upper()
    return any(fnmatchcase(upper, pattern) for pattern in patterns)


def env_view(snapshot: EnvSnapshot, patterns: Sequence[str], reveal: bool) -> dict[str, str]:
    """A snapshot's variables as `show` prints them: secret-looking values masked unless `reveal`."""
    if reveal:
        return dict(snapshot.vars)
    return {k: MASK if is_secret(k, patterns) else v for k, v in snapshot.vars.items()}
