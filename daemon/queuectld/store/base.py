"""The store's interface, in the words of the domain. Nothing from SQLAlchemy crosses it."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from queuectld.jobs import Job, JobState, LifecyclePolicy, Outcome, OutcomeKind


class NewJob(NamedTuple):
    """A validated job to insert; defaults already applied. (A tuple: batches build 100,000.)"""

    id: str
    command: str
    max_retries: int
    priority: int
    timeout_s: float | None
    next_run_at: float
    created_at: float
    retry_rules: str | None = None  #: RetryRules.encode() of the job's own rules (None: the config's)
    backoff_base: float | None = None
    backoff_max_s: float | None = None
    queue: str = "default"  #: must exist (QueueNotFound)
    cwd: str | None = None  #: None: the daemon's state dir
    env_id: str | None = None  #: an EnvSnapshot's id, passed to `enqueue` beside the jobs
    labels: str | None = None  #: jobs.encode_labels(...)
    held: bool = False
    after: tuple[str, ...] = ()  #: must complete first
    after_any: tuple[str, ...] = ()  #: must end first, however


@dataclass(frozen=True, slots=True)
class EnvSnapshot:
    """An environment as stored once for every job that shares it. `clean`: `vars` is laid over
    the daemon's base environment; else it is the whole environment."""

    id: str  #: EnvSnapshot.make's content hash
    clean: bool
    vars: dict[str, str]

    @staticmethod
    def make(vars: dict[str, str], clean: bool) -> EnvSnapshot:
        """The snapshot of `vars`, named by the SHA-256 of its canonical JSON (equal snapshots,
        from any call or daemon, are one row)."""
        import hashlib
        import json

        text = json.dumps([bool(clean), vars], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return EnvSnapshot(hashlib.sha256(text.encode()).hexdigest(), bool(clean), dict(vars))


@dataclass(frozen=True, slots=True)
class JobEdit:
    """What `edit` changes (None: unchanged). `after`/`after_any` given (even empty) replace the
    dependencies; `clear_timeout` sets timeout_s back to None."""

    command: str | None = None
    priority: int | None = None
    queue: str | None = None
    max_retries: int | None = None
    timeout_s: float | None = None
    clear_timeout: bool = False
    next_run_at: float | None = None
    after: tuple[str, ...] | None = None
    after_any: tuple[str, ...] | None = None
    labels: str | None = None  #: encode_labels(...); "" clears them


#: An attempt by job id and run: what every attempt write is fenced on (with the owner).
RunKey = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Enqueued:
    """What `enqueue` did: the ids of the batch in order, and those among them that were already
    there with identical fields (a repeat, e.g. a retry after a lost answer), not added again."""

    ids: list[str]
    existing: list[str]
    #: With replace: the jobs that were overwritten, by id, with the attempts they had started
    #: (their log files are the caller's to remove; the new job starts with none).
    replaced: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FinishedAttempt:
    """An attempt that ended on this daemon, to record with fencing on (id, run, owner)."""

    job_id: str
    run: int
    owner: str
    outcome: Outcome
    finished_at: float
    output_tail: str | None = None


@dataclass(frozen=True, slots=True)
class SpawnedAttempt:
    """Where an attempt's process runs (its pid is also its process group id)."""

    job_id: str
    run: int
    owner: str
    pid: int
    proc_start: int | None


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One attempt as stored (outcome None: not ended yet)."""

    attempt: int
    started_at: float | None
    finished_at: float | None
    outcome: OutcomeKind | None
    exit_code: int | None
    signal: int | None
    error: str | None
    owner: str | None
    host: str | None


@dataclass(frozen=True, slots=True)
class DeadFilter:
    """Which dead jobs a bulk DLQ action takes: every field given must match. `finished_before`
    is set to the moment the action began, so that a job dying again meanwhile is not taken twice."""

    outcome: OutcomeKind | None = None
    finished_after: float | None = None
    finished_before: float | None = None
    queue: str | None = None
    label: str | None = None


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Which jobs a listing or bulk action takes: every field given must match."""

    state: JobState | None = None
    outcome: OutcomeKind | None = None
    queue: str | None = None
    label: str | None = None


@dataclass(frozen=True, slots=True)
class CleanFilter:
    """Which ended jobs retention or `jobs clean` takes: in `state` (completed, canceled or
    dead), ended before `finished_before` (None: whenever), in `queue`, with `label`."""

    state: JobState
    finished_before: float | None = None
    queue: str | None = None
    label: str | None = None

    def job_filter(self) -> JobFilter:
        """The queue and label part, as a JobFilter."""
        return JobFilter(queue=self.queue, label=self.label)


@dataclass(frozen=True, slots=True)
class Pruned:
    """A job retention deleted: its id, the state it ended in, the attempts it had started (its
    log files are `<id>.1.log` .. `<id>.<run>.log`), and whether jobs depended on it."""

    id: str
    state: JobState
    run: int
    had_dependents: bool = False


@dataclass(frozen=True, slots=True)
class Dependency:
    """One dependency of a job, and its state now (None: deleted)."""

    dep_id: str
    any_end: bool
    state: JobState | None


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """A queue and what it holds now (from the per-(queue, state) counters and the indexes, never
    a scan of the jobs table). `pending` counts waiting jobs (pending and failed), held included."""

    name: str
    concurrency: int | None
    paused: bool
    pending: int = 0
    held: int = 0
    running: int = 0
    oldest_waiting_at: float | None = None  #: since when its longest-waiting runnable job has been due
    completed: int = 0  #: ended ones still stored (throughput is the change of these over time)
    dead: int = 0


@dataclass(frozen=True, slots=True)
class QueueCounts:
    """Every queue with its numbers, and the jobs of each queue per state (held ones included),
    read together (what a metrics scrape reads)."""

    queues: list[QueueInfo]
    by_state: dict[tuple[str, str], int]  #: (queue, JobState value): jobs; nonzero ones only


@dataclass(frozen=True, slots=True)
class LostAttempt:
    """A processing job whose owner is gone: where its process may still be, to kill it first.
    `boot_id` and `pid_ns` are those its owner registered (None: its row is gone, or it predates
    revision 0005): its pid means something here only where both are ours."""

    job_id: str
    run: int
    owner: str
    host: str | None
    pid: int | None
    proc_start: int | None
    boot_id: str | None = None
    pid_ns: str | None = None
    #: How long ago its lease expired, by the clock that judged it (<= 0: not expired, lost
    #: because its owner is dead); None where no lease was stored.
    lease_expired_s: float | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class ListPosition:
    """Where a listing stands: the sort key of the last job a page held. `rowid` is set by a store
    that lists without a state in insertion order (SQLite); the others order by (created_at, id)."""

    created_at: float
    id: str
    rowid: int | None = None


@dataclass(frozen=True, slots=True)
class DaemonInfo:
    """A daemon instance registered in the store."""

    id: str
    host: str
    pid: int
    proc_start: int | None
    started_at: float
    heartbeat_at: float
    slots: int
    active: int
    claiming: bool = True
    #: Revision 0005: the kernel boot (/proc/sys/kernel/random/boot_id) and PID namespace (inode
    #: of /proc/self/ns/pid) it runs in: its pid means something only to a daemon with both equal.
    boot_id: str | None = None
    pid_ns: str | None = None
    #: Revision 0005: its store clock's offset from CLOCK_BOOTTIME (clock.StoreClock.offset).
    clock_offset: float | None = None


@dataclass(frozen=True, slots=True)
class Schedule:
    """A cron schedule as stored (revision 0006). `job` is the JSON of the JobSpec fields each
    fire enqueues; `next_fire` the first slot not fired yet (None: paused with none computed);
    `last_job_state` the state of the last fire's job now (None: none, or deleted since)."""

    name: str
    spec: str
    tz: str
    job: str
    catch_up: str = "skip"
    max_catch_up: int = 10
    overlap: str = "skip"
    paused: bool = False
    created_at: float = 0.0
    next_fire: float | None = None
    last_slot: float | None = None
    last_fire_at: float | None = None
    last_job_id: str | None = None
    last_skip_slot: float | None = None
    last_skip_reason: str | None = None
    fires: int = 0
    skips: int = 0
    last_job_state: JobState | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class CronFired:
    """What one fire did: the jobs it enqueued, by slot (oldest first), and the slot it skipped
    and why (overlap, or missed slots), if any."""

    jobs: list[tuple[float, str]]
    skipped: float | None = None
    skip_reason: str | None = None


class Store(Protocol):
    """What the daemon needs from storage. Every method is one transaction.

    Times are seconds since the epoch on the store's clock (clock.StoreClock), given by the
    caller as `now`. The calls that judge whether a peer is gone (`lost_attempts`,
    `daemon_silences`) also take `now=None`: the store's own clock, read in the statement, which
    on a shared database (`shared_clock`) is the one clock every host agrees on."""

    #: Whether the store's clock is a database's that every host shares (PostgreSQL).
    shared_clock: bool
    #: The longest the daemon leaves between two `checkpoint`s (None: its maintenance interval).
    checkpoint_every_s: float | None

    def enqueue(
        self, new: Sequence[NewJob], *, replace: bool, now: float, envs: Sequence[EnvSnapshot] = ()
    ) -> Enqueued: ...
    def get(self, job_id: str) -> Job: ...
    def attempts_of(self, job_id: str) -> list[AttemptRecord]: ...
    def list_jobs(self, state: JobState | None, limit: int | None) -> list[Job]: ...
    def list_page(
        self, state: JobState | None, limit: int | None, after: ListPosition | None,
        outcome: OutcomeKind | None = None, queue: str | None = None, label: str | None = None,
        newest_first: bool = False,
    ) -> list[tuple[Job, ListPosition]]: ...
    def states_of(self, ids: Iterable[str]) -> dict[str, JobState]: ...
    def counts(self) -> dict[str, int]: ...
    def claim_due(self, owner: str, host: str, limit: int, now: float, lease_s: float) -> list[Job]: ...
    def finish(
        self, finished: Sequence[FinishedAttempt], policy: LifecyclePolicy, spawned: Sequence[SpawnedAttempt] = ()
    ) -> list[tuple[FinishedAttempt, Job | None]]: ...
    def finish_and_claim(
        self, finished: Sequence[FinishedAttempt], policy: LifecyclePolicy, spawned: Sequence[SpawnedAttempt],
        owner: str, host: str, limit: int, now: float, lease_s: float,
    ) -> tuple[list[tuple[FinishedAttempt, Job | None]], list[Job]]: ...
    def renew_leases(
        self, owner: str, running: Collection[RunKey], now: float, lease_s: float, active: int, slots: int,
        claiming: bool = True,
    ) -> set[str]: ...
    def adopt_attempts(self, owner: str, attempts: Collection[RunKey], now: float, lease_s: float) -> dict[str, str | None]: ...
    def release_strays(self, owner: str, running: Collection[RunKey], now: float) -> list[RunKey]: ...
    def lost_attempts(self, now: float | None, dead_owners: Iterable[str]) -> list[LostAttempt]: ...
    def clock_now(self) -> float: ...
    def daemon_silences(self, now: float | None) -> list[tuple[DaemonInfo, float]]: ...
    def next_due_at(self) -> float | None: ...
    def cancel(self, job_id: str, now: float) -> tuple[Job, JobState]: ...
    def delete(self, job_id: str, now: float | None = None) -> Job: ...
    def dlq_retry(
        self, ids: Sequence[str], now: float, command: str | None = None, with_dependents: bool = False
    ) -> list[Job]: ...
    def dlq_retry_matching(self, where: DeadFilter, now: float, limit: int) -> list[str]: ...
    def dlq_purge(self, ids: Sequence[str], now: float | None = None) -> list[Job]: ...
    def dlq_purge_matching(self, where: DeadFilter, limit: int, now: float | None = None) -> list[Job]: ...
    # -- retention (revision 0007)
    def prune(self, where: CleanFilter, limit: int, now: float | None = None) -> list[Pruned]: ...
    def prune_preview(self, where: CleanFilter, limit: int) -> tuple[int, list[str]]: ...
    def runs_of(self, ids: Sequence[str]) -> dict[str, int]: ...
    def reclaim_space(self, max_pages: int, keep_fraction: float) -> int: ...
    # -- workflow (revision 0004) -- store-jobs part
    def envs_of(self, ids: Collection[str]) -> dict[str, EnvSnapshot]: ...
    def dependencies_of(self, job_id: str) -> list[Dependency]: ...
    def release(self, ids: Sequence[str], now: float) -> list[Job]: ...
    def hold(self, ids: Sequence[str], now: float) -> list[Job]: ...
    def release_matching(self, where: JobFilter, now: float, limit: int) -> list[str]: ...
    def edit(self, job_id: str, change: JobEdit, now: float) -> Job: ...
    def restart(self, ids: Sequence[str], now: float) -> list[Job]: ...
    # -- workflow (revision 0004) -- store-claim part
    def queue_add(self, name: str, concurrency: int | None, now: float) -> QueueInfo: ...
    def queue_set(self, name: str, concurrency: int | None) -> QueueInfo: ...
    def queue_rm(self, name: str) -> None: ...
    def queue_get(self, name: str) -> QueueInfo: ...
    def queues(self) -> list[QueueInfo]: ...
    def queue_counts(self) -> QueueCounts: ...
    def ended_per_minute(self, now: float, minutes: int) -> list[int]: ...
    def queue_pause(self, names: Sequence[str] | None, paused: bool) -> list[QueueInfo]: ...
    def requeue_running(self, names: Sequence[str] | None, now: float) -> list[RunKey]: ...
    # -- cron schedules (revision 0006)
    def cron_add(self, schedule: Schedule, queue: str) -> Schedule: ...
    def cron_get(self, name: str) -> Schedule: ...
    def cron_list(self) -> list[Schedule]: ...
    def cron_rm(self, name: str) -> None: ...
    def cron_pause(self, name: str, paused: bool, next_fire: float | None) -> Schedule: ...
    def cron_next_fire(self) -> float | None: ...
    def cron_due(self, now: float) -> list[Schedule]: ...
    def cron_fire(
        self, name: str, expected: float, new: Sequence[tuple[float, NewJob]], next_fire: float, now: float,
        envs: Sequence[EnvSnapshot] = (), skipped: float | None = None, skip_reason: str | None = None,
    ) -> CronFired | None: ...
    def cron_run(self, name: str, new: NewJob, now: float, envs: Sequence[EnvSnapshot] = ()) -> str: ...
    def config_all(self) -> dict[str, Any]: ...
    def config_set(self, key: str, value: Any) -> None: ...
    def register_daemon(self, info: DaemonInfo) -> None: ...
    def daemons(self) -> list[DaemonInfo]: ...
    def forget_daemons(self, ids: Iterable[str]) -> None: ...
    def listen(self, on_jobs: Callable[[], None]) -> Callable[[], None]: ...
    def checkpoint(self) -> None: ...
    def close(self) -> None: ...
