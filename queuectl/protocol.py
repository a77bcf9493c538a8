"""The wire protocol: JSON-RPC 2.0, one object per line; a pydantic model for every request and result.

The daemon validates every request against these models before anything touches the store. The
client's hot path sends plain dicts of the same shape (importing pydantic would double the start-up
time of `queuectl enqueue`); the unit tests check that the two agree.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Required

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, with_config
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from queuectl import PROTOCOL_VERSION as PROTOCOL_VERSION

#: Job ids are safe in file names, URLs and shells: 1-128 chars of [A-Za-z0-9._:-].
JOB_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
MAX_COMMAND_BYTES = 128 * 1024
#: Log offsets and attempt numbers are bounded so that no request can overflow a seek or an SQL integer.
MAX_OFFSET = 2**62
MAX_ATTEMPT = 2**31 - 1


class JobState(StrEnum):
    """Where a job is in its life. Terminal: completed, dead, canceled."""

    PENDING = "pending"  #: waiting for a slot or for next_run_at
    PROCESSING = "processing"  #: a slot runs it now
    COMPLETED = "completed"  #: an attempt exited 0
    FAILED = "failed"  #: an attempt failed; waiting for its retry at next_run_at
    DEAD = "dead"  #: retries exhausted: the dead-letter queue
    CANCELED = "canceled"  #: canceled by a user; never retried


TERMINAL_STATES = frozenset({JobState.COMPLETED, JobState.DEAD, JobState.CANCELED})


class OutcomeKind(StrEnum):
    """How an attempt ended."""

    EXIT = "exit"  #: the shell exited by itself, with `exit_code` (0 = success)
    SIGNAL = "signal"  #: the shell died of a signal queuectl did not send (`signal`)
    TIMEOUT = "timeout"  #: it ran past its timeout and was killed
    KILLED = "killed"  #: queuectl killed it for another reason (its lease was lost, ...)
    WORKER_LOST = "worker-lost"  #: its daemon stopped (crashed, was killed) during the attempt
    SPAWN_FAILED = "spawn-failed"  #: /bin/sh could not be started
    CANCELED = "canceled"  #: canceled by a user while it ran
    REQUEUED = "requeued"  #: put back uncounted (`worker stop --now`, a claim never started)
    SNOOZED = "snoozed"  #: the job asked to run again later (config `snooze-exit`); uncounted


def _check_command(command: str) -> str:
    # One pass instead of a regex per command (batches validate 100,000 of them). max_length
    # counts characters; the limit is on the UTF-8 the daemon stores and passes to sh.
    if "\x00" in command:
        raise ValueError("the command contains a NUL character, which no shell command can")
    if not command.isascii() and len(command.encode()) > MAX_COMMAND_BYTES:
        raise ValueError(f"the command is longer than {MAX_COMMAND_BYTES} bytes (UTF-8)")
    return command


JobId = Annotated[str, Field(pattern=JOB_ID_PATTERN, description="1-128 chars of [A-Za-z0-9._:-]")]
Command = Annotated[
    str,
    Field(min_length=1, max_length=MAX_COMMAND_BYTES, description="a /bin/sh command"),
    AfterValidator(_check_command),
]
MaxRetries = Annotated[int, Field(ge=0, le=1000)]
Priority = Annotated[int, Field(ge=-1000, le=1000)]
TimeoutS = Annotated[float, Field(gt=0, le=365 * 86400)]
ExitCodes = Annotated[list[Annotated[int, Field(ge=0, le=255)]], Field(max_length=256)]
#: Signal names without SIG (KILL, TERM); the daemon checks that each is a signal it knows.
SignalNames = Annotated[list[Annotated[str, Field(pattern=r"^[A-Z0-9+-]{1,16}$")]], Field(max_length=64)]
DurationS = Annotated[float, Field(ge=0, le=100 * 365 * 86400)]
DelayS = Annotated[float, Field(ge=0, le=365 * 86400)]
#: An absolute run time: seconds since the epoch (UTC), as this host's wall clock counts them. The
#: daemon turns it into a delay from its own wall clock's now, then puts that on the store's
#: time base (clock.StoreClock.from_wall); a time already past is due now.
RunAt = Annotated[float, Field(ge=0, le=1e11)]
BackoffBase = Annotated[float, Field(ge=1, le=1e6)]
BackoffMaxS = Annotated[float, Field(gt=0, le=365 * 86400)]
#: Queue names and labels: what a user types after --queue / --label.
NAME_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
QueueName = Annotated[str, Field(pattern=NAME_PATTERN, description="1-64 chars of [A-Za-z0-9._:-]")]
Label = Annotated[str, Field(pattern=NAME_PATTERN, description="1-64 chars of [A-Za-z0-9._:-]")]
Labels = Annotated[list[Label], Field(max_length=32)]
DEFAULT_QUEUE = "default"
#: Limits of a job's context: a captured environment is a few KiB; these bound what a request may carry.
MAX_ENV_VARS = 4096
MAX_ENV_BYTES = 1024 * 1024
MAX_CWD_CHARS = 4096
MAX_DEPENDENCIES = 1000
EnvName = Annotated[str, Field(min_length=1, max_length=1024, pattern=r"^[^=\x00]+$")]
EnvValue = Annotated[str, Field(max_length=MAX_ENV_BYTES, pattern=r"^[^\x00]*$")]
Env = Annotated[dict[EnvName, EnvValue], Field(max_length=MAX_ENV_VARS)]
Cwd = Annotated[str, Field(min_length=1, max_length=MAX_CWD_CHARS, pattern=r"^/[^\x00]*$",
                           description="an absolute directory")]
Dependencies = Annotated[list[JobId], Field(max_length=MAX_DEPENDENCIES)]
Concurrency = Annotated[int, Field(ge=1, le=100_000)]


class Params(BaseModel):
    """Base of every request's params: strict types, no unknown fields."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Result(BaseModel):
    """Base of every result."""

    model_config = ConfigDict(extra="forbid")


# -- requests ------------------------------------------------------------------------------------


class EmptyParams(Params):
    """Methods that take no parameters."""


class JobSpec(Params):
    """One job to add. Omitted fields take the config defaults."""

    command: Command
    id: JobId | None = None  #: generated when omitted
    max_retries: MaxRetries | None = None  #: retries after the first attempt; config `max-retries` if omitted
    priority: Priority = 0  #: higher runs first among due jobs
    timeout_s: TimeoutS | None = None  #: per attempt; config `job-timeout` if omitted
    delay_s: DelayS = 0  #: first run no earlier than now + delay
    run_at: RunAt | None = None  #: first run no earlier than this instant; not with delay_s
    #: Retry rules (omitted: the config's). An attempt they exclude goes straight to the DLQ.
    retry_on_exit: ExitCodes | None = None  #: only these exit codes retry
    no_retry_on_exit: ExitCodes | None = None  #: these exit codes never retry
    retry_on_timeout: bool | None = None  #: whether a timed-out attempt retries
    no_retry_on_signal: SignalNames | None = None  #: dying of these signals never retries
    backoff_base: BackoffBase | None = None  #: config `backoff-base` if omitted
    backoff_max_s: BackoffMaxS | None = None  #: config `backoff-max` if omitted
    #: Where and how it runs. `cwd` omitted: the daemon's state dir. `env` omitted: the daemon's
    #: base environment; given: exactly these variables (the client sends its whole environment),
    #: or, with `clean_env`, these over the daemon's base environment.
    queue: QueueName = DEFAULT_QUEUE  #: must exist (`queue.add`); `default` always does
    cwd: Cwd | None = None
    env: Env | None = None
    clean_env: bool = False
    labels: Labels | None = None
    #: Run once every one of `after` completed and every one of `after_any` ended, however.
    #: Ids must exist (or come earlier in the same batch).
    after: Dependencies | None = None
    after_any: Dependencies | None = None
    hold: bool = False  #: stored but never started until released (`job.release`)


class EnqueueParams(JobSpec):
    """Add a job (`job.enqueue`). `id` is generated when omitted."""

    replace: bool = False  #: overwrite a job with the same id unless it is running


@with_config(ConfigDict(extra="forbid", strict=True))
class BatchJob(TypedDict, total=False):
    """One job of `job.enqueue_batch`: JobSpec's fields, validated the same way, as a plain dict.
    A batch validates 100,000 of them, and a dict costs a quarter of a model (measured: 0.11 s
    against 0.47 s per 100,000). An omitted key means JobSpec's default; unit tests prove the
    fields, their types and the defaults the daemon applies the same as JobSpec's."""

    command: Required[Command]
    id: JobId | None
    max_retries: MaxRetries | None
    priority: Priority
    timeout_s: TimeoutS | None
    delay_s: DelayS
    run_at: RunAt | None
    retry_on_exit: ExitCodes | None
    no_retry_on_exit: ExitCodes | None
    retry_on_timeout: bool | None
    no_retry_on_signal: SignalNames | None
    backoff_base: BackoffBase | None
    backoff_max_s: BackoffMaxS | None
    queue: QueueName
    cwd: Cwd | None
    env: Env | None
    clean_env: bool
    labels: Labels | None
    after: Dependencies | None
    after_any: Dependencies | None
    hold: bool


class EnqueueBatchParams(Params):
    """Add many jobs in one transaction (`job.enqueue_batch`): all or none. A job without an id
    is named `<id_stem>-<id_start + its index>` when the client picks `id_stem` (then the same
    request sent again names the same jobs), else by the daemon."""

    jobs: Annotated[list[BatchJob], Field(min_length=1, max_length=100_000)]
    replace: bool = False
    id_stem: Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]{1,100}$")] | None = None
    id_start: Annotated[int, Field(ge=0, le=10**12)] = 0  #: the first job's index within the client's whole batch
    #: The batch's context, captured once per call: each job's own `cwd` replaces `cwd`; each
    #: job's own `env` is laid over `env` (a job's `clean_env` over the daemon's base only).
    cwd: Cwd | None = None
    env: Env | None = None
    clean_env: bool = False


class JobRef(Params):
    """A job by id (`job.get`, `job.cancel`, `job.delete`, `job.explain`)."""

    id: JobId


class GetParams(JobRef):
    """A job by id (`job.get`); `reveal_env` shows secret-looking values unmasked (the owner's
    socket only)."""

    reveal_env: bool = False


#: The most jobs one `job.list` / `dlq.list` answer holds; a page also ends once its JSON passes
#: MAX_PAGE_BYTES. Measured: 1,000 jobs with 1 KiB commands are 1.4 MB and 25 ms of daemon CPU.
MAX_PAGE_JOBS = 1000
MAX_PAGE_BYTES = 1024 * 1024
#: A cursor is the daemon's own short text (base64url); anything longer is not one.
MAX_CURSOR_CHARS = 512

Cursor = Annotated[
    str,
    Field(min_length=1, max_length=MAX_CURSOR_CHARS, pattern=r"^[A-Za-z0-9_-]+$",
          description="`next_cursor` of the previous page, as it came"),
]
PageLimit = Annotated[int, Field(ge=1, le=1_000_000)]


class ListParams(Params):
    """List jobs oldest first (`job.list`), one page per request: at most `limit` jobs, and never
    more than MAX_PAGE_JOBS; `cursor` continues after the previous page."""

    state: Annotated[JobState | None, Field(strict=False)] = None  #: a state name
    outcome: Annotated[OutcomeKind | None, Field(strict=False)] = None  #: how the last attempt ended
    queue: QueueName | None = None
    label: Label | None = None
    limit: PageLimit | None = None  #: at most this many in this page (the daemon caps it)
    cursor: Cursor | None = None  #: `next_cursor` of the previous page; omitted for the first
    newest_first: bool = False  #: the newest job first (its cursors continue that order only)


class DlqListParams(Params):
    """List the dead-letter queue oldest first (`dlq.list`), paged like `job.list`."""

    outcome: Annotated[OutcomeKind | None, Field(strict=False)] = None  #: how the last attempt ended
    queue: QueueName | None = None
    label: Label | None = None
    limit: PageLimit | None = None  #: at most this many in this page (the daemon caps it)
    cursor: Cursor | None = None  #: `next_cursor` of the previous page; omitted for the first
    newest_first: bool = False  #: the newest job first (its cursors continue that order only)


class DlqRetryParams(Params):
    """Move dead jobs back to pending, attempts reset (`dlq.retry`): all of `ids` or none (an id
    that is missing or not dead fails the request). `command` replaces the command first (one
    id only): fix, then retry."""

    ids: Annotated[list[JobId], Field(min_length=1, max_length=10_000)]
    command: Command | None = None
    #: also bring back the jobs canceled because these ended dead (their dependents, transitively)
    with_dependents: bool = False


class DlqFilter(Params):
    """Which dead jobs a bulk action takes: all of them, or those matching every field given."""

    outcome: Annotated[OutcomeKind | None, Field(strict=False)] = None  #: how the last attempt ended
    queue: QueueName | None = None
    label: Label | None = None
    since_s: DurationS | None = None  #: died within the last this many seconds
    older_than_s: DurationS | None = None  #: died more than this many seconds ago


class DlqPurgeParams(Params):
    """Delete dead jobs, their attempts and their output (`dlq.purge`): `ids`, or every dead job
    matching `filter` (`all` must be true to take every dead job: nothing is purged by accident)."""

    ids: Annotated[list[JobId], Field(min_length=1, max_length=10_000)] | None = None
    filter: DlqFilter | None = None
    all: bool = False


class EndedPerMinuteParams(Params):
    """How many jobs ended (completed or dead) in each of the last `minutes` minutes
    (`job.ended_per_minute`): what `queuectl web` starts its throughput chart from."""

    minutes: Annotated[int, Field(ge=1, le=1440, strict=True)] = 60


class EndedPerMinuteResult(Result):
    """`job.ended_per_minute`: one count per minute, oldest first, the last one ending at `until`."""

    counts: list[int]
    until: datetime


class CleanParams(Params):
    """Delete ended jobs with their attempts and output (`job.clean`): those in `states`
    (default: completed, canceled and dead; a state that has not ended is refused) that ended
    more than `older_than_s` ago (default: each state's retention, `retain-*`; a state kept
    forever is then left alone), of `queue`, with `label`. `dry_run`: count, change nothing.
    A job some job that has not ended depends on is kept."""

    states: Annotated[list[Annotated[JobState, Field(strict=False)]], Field(min_length=1, max_length=6)] | None = None
    older_than_s: DurationS | None = None
    queue: QueueName | None = None
    label: Label | None = None
    dry_run: bool = False


class DlqRetryAllParams(Params):
    """Retry every dead job matching `filter` (`dlq.retry_all`), one transaction per page."""

    filter: DlqFilter = DlqFilter()


class WaitParams(Params):
    """Block until every job is terminal or `timeout_s` passes (`job.wait`)."""

    ids: Annotated[list[JobId], Field(min_length=1, max_length=10_000)]
    timeout_s: Annotated[float, Field(ge=0, le=30)] = 10.0


class WaitQueueParams(Params):
    """Block until `queue` has nothing pending, waiting for a retry, or running, or `timeout_s`
    passes (`queue.wait`, a drain). Held jobs do not count: they never start by themselves."""

    queue: QueueName
    timeout_s: Annotated[float, Field(ge=0, le=30)] = 10.0


class JobFilter(Params):
    """Which jobs a bulk action takes: every field given must match."""

    queue: QueueName | None = None
    label: Label | None = None
    state: Annotated[JobState | None, Field(strict=False)] = None


class ReleaseParams(Params):
    """Release held jobs (`job.release`): `ids` (each must be held), or every held job matching
    `filter` (`job.release` with `filter.queue` is `release --queue Q`)."""

    ids: Annotated[list[JobId], Field(min_length=1, max_length=10_000)] | None = None
    filter: JobFilter | None = None


class RestartParams(Params):
    """Run finished jobs (completed, dead or canceled) again as a new series of attempts, their
    history kept (`job.restart`): all of `ids` or none."""

    ids: Annotated[list[JobId], Field(min_length=1, max_length=10_000)]


class HoldParams(Params):
    """Hold waiting jobs (pending, or failed awaiting a retry), all or none: they stay stored and
    never start until `job.release`."""

    ids: Annotated[list[JobId], Field(min_length=1, max_length=10_000)]


class EditParams(Params):
    """Change a job that is not running (`job.edit`); only the fields given change. `delay_s`
    sets its run time to now + delay, `run_at` to that instant (either reschedules a waiting job:
    pending, or failed and waiting for its retry; an ended one is refused); `after` / `after_any` replace its dependencies (a cycle is
    refused)."""

    id: JobId
    command: Command | None = None
    priority: Priority | None = None
    queue: QueueName | None = None
    max_retries: MaxRetries | None = None
    timeout_s: TimeoutS | None = None
    clear_timeout: bool = False  #: back to the config's `job-timeout`
    delay_s: Annotated[float, Field(ge=0, le=365 * 86400)] | None = None
    run_at: RunAt | None = None
    after: Dependencies | None = None
    after_any: Dependencies | None = None
    labels: Labels | None = None


class QueueRef(Params):
    """A queue by name (`queue.get`, `queue.rm`)."""

    name: QueueName


class QueueAddParams(Params):
    """Add a named queue (`queue.add`); `concurrency` omitted: no limit but the daemons' slots."""

    name: QueueName
    concurrency: Concurrency | None = None


class QueueSetParams(Params):
    """Change a queue's limit (`queue.set`); `unlimited` removes it."""

    name: QueueName
    concurrency: Concurrency | None = None
    unlimited: bool = False


class QueuePauseParams(Params):
    """Pause queues (`queue.pause`): nothing new starts in them, on any daemon, until resumed;
    `kill` also stops their running jobs and returns them to pending uncounted. `names`, or `all`."""

    names: Annotated[list[QueueName], Field(min_length=1, max_length=1000)] | None = None
    all: bool = False
    kill: bool = False


class QueueResumeParams(Params):
    """Resume paused queues (`queue.resume`): `names`, or `all`."""

    names: Annotated[list[QueueName], Field(min_length=1, max_length=1000)] | None = None
    all: bool = False


CronName = Annotated[str, Field(pattern=NAME_PATTERN, description="1-64 chars of [A-Za-z0-9._:-]")]
CronSpec = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[^\x00\n]*$")]
ZoneName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._+/-]+$")]


class CronAddParams(Params):
    """Add a cron schedule (`cron.add`): `job` is enqueued at each slot of `spec` in zone `tz`
    (omitted: the daemon's local zone). `job` takes JobSpec's fields but an id, a delay,
    dependencies and a hold (a fire's job is an ordinary job otherwise)."""

    name: CronName
    spec: CronSpec  #: 5 cron fields, an optional 6th for seconds, or @hourly, @daily, ...
    job: JobSpec
    tz: ZoneName | None = None
    catch_up: Literal["skip", "once", "all"] = "skip"  #: slots missed while no daemon ran
    max_catch_up: Annotated[int, Field(ge=1, le=1000)] = 10  #: `all` fires at most this many
    overlap: Literal["skip", "allow"] = "skip"  #: whether to fire while the previous job has not ended


class CronRef(Params):
    """A cron schedule by name (`cron.get`, `cron.rm`, `cron.pause`, `cron.resume`, `cron.run`)."""

    name: CronName


class LogsParams(Params):
    """Read an attempt's output from `offset` (`job.logs`); `follow` waits up to 1 s for more."""

    id: JobId
    attempt: Annotated[int, Field(ge=1, le=MAX_ATTEMPT)] | None = None  #: latest when omitted
    offset: Annotated[int, Field(ge=0, le=MAX_OFFSET)] = 0
    follow: bool = False
    limit: Annotated[int, Field(ge=1, le=4 * 1024 * 1024)] = 256 * 1024
    tail: bool = False  #: the last `limit` bytes written so far instead (`offset` is ignored)


class ConfigGetParams(Params):
    """Read one config key (`config.get`)."""

    key: Annotated[str, Field(min_length=1, max_length=64)]


class ConfigSetParams(Params):
    """Validate and store one config key (`config.set`). Values arrive as text or numbers."""

    key: Annotated[str, Field(min_length=1, max_length=64)]
    value: Annotated[str, Field(max_length=64)] | bool | int | float


class WorkersStartParams(Params):
    """Run `count` worker slots and resume claiming (`workers.start`)."""

    count: Annotated[int, Field(ge=1, le=256)] | None = None  #: config `workers` if omitted


class WorkersStopParams(Params):
    """Stop claiming (`workers.stop`). `now` kills running attempts and requeues their jobs."""

    now: bool = False


class AuthParams(Params):
    """Authenticate a TCP connection (`auth.login`); must be its first request."""

    token: Annotated[str, Field(min_length=1, max_length=1024)]


class HelloParams(Params):
    """Check protocol compatibility (`daemon.hello`)."""

    protocol_version: Annotated[int, Field(ge=0, le=2**31 - 1)]


# -- results -------------------------------------------------------------------------------------


class AttemptView(Result):
    """One run of a job: when, where, and how it ended (outcome null: still running)."""

    attempt: int
    started_at: datetime | None
    finished_at: datetime | None
    outcome: OutcomeKind | None = None
    exit_code: int | None
    signal: str | None = None  #: e.g. SIGKILL, when a signal ended the shell
    error: str | None = None  #: what went wrong, in words (null for a success)
    host: str | None = None
    duration_s: float | None = None
    reason: str | None  #: `error`, or the outcome when there is no error text (kept for older clients)
    owner: str | None


class BlockerKind(StrEnum):
    """Why a waiting job is not running: one reason, the first that applies in this order."""

    HELD = "held"  #: enqueued with --hold; waits for `release`
    DEPENDENCY = "dependency"  #: waiting for a dependency to complete (or end)
    NOT_BEFORE = "not-before"  #: its run time (a delay or a retry's backoff) is in the future
    QUEUE_PAUSED = "queue-paused"
    QUEUE_FULL = "queue-full"  #: its queue runs as many jobs as its concurrency allows
    NO_DAEMON = "no-daemon"  #: no live daemon is claiming (all stopped, or none running)
    SLOTS_BUSY = "slots-busy"  #: every slot on every live claiming daemon is busy
    READY = "ready"  #: nothing holds it: it starts now


class BlockedBy(Result):
    """Why a waiting job is not running (`job.explain`, and `blocked_by` in `job.get`)."""

    kind: BlockerKind
    message: str  #: one line for people, e.g. "queue at its concurrency (2/2)"
    dependency: str | None = None  #: DEPENDENCY: the first dependency it waits for
    dependency_state: JobState | None = None
    not_before: datetime | None = None  #: NOT_BEFORE: when it may start
    running: int | None = None  #: QUEUE_FULL / SLOTS_BUSY: busy now
    limit: int | None = None  #: QUEUE_FULL / SLOTS_BUSY: of how many


class DependencyView(Result):
    """One dependency of a job and where it stands."""

    id: str
    any_end: bool  #: `after_any`: satisfied by any end, not only completion
    state: JobState | None  #: null: deleted


class JobView(Result):
    """A job as the client sees it. Timestamps are UTC."""

    id: str
    command: str
    state: JobState
    attempts: int  #: failed attempts so far
    max_retries: int
    priority: int
    timeout_s: float | None
    next_run_at: datetime | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    exit_code: int | None
    last_error: str | None
    owner: str | None
    lease_expires_at: datetime | None
    last_outcome: OutcomeKind | None = None  #: how the last attempt ended
    signal: str | None = None  #: the signal that ended the last attempt's shell, e.g. SIGKILL
    host: str | None = None  #: where the last attempt ran
    duration_s: float | None = None  #: how long the last attempt ran
    retry_on_exit: list[int] | None = None  #: the job's own retry rules (null: the config's)
    no_retry_on_exit: list[int] | None = None
    retry_on_timeout: bool | None = None
    no_retry_on_signal: list[str] | None = None
    backoff_base: float | None = None  #: the job's own backoff (null: the config's)
    backoff_max_s: float | None = None
    queue: str = DEFAULT_QUEUE
    labels: list[str] = []
    held: bool = False
    cwd: str | None = None  #: null: the daemon's state dir
    #: The environment's variable names (values: `env`); null when the job has the daemon's.
    env_names: list[str] | None = None
    clean_env: bool = False  #: its `env` is laid over the daemon's base environment
    canceled_by: str | None = None  #: the dependency whose end canceled it
    output_tail: str | None = None  #: only in `job.get`
    attempt_history: list[AttemptView] | None = None  #: only in `job.get`
    dependencies: list[DependencyView] | None = None  #: only in `job.get`
    #: only in `job.get`: the variables, values of secret-looking names masked unless asked for
    env: dict[str, str] | None = None
    blocked_by: BlockedBy | None = None  #: only in `job.get`, for a waiting job
    schedule: str | None = None  #: the cron schedule that enqueued it
    slot: datetime | None = None  #: the slot it was fired for (null with a schedule: `cron run`)


class JobsResult(Result):
    """One page of a listing, oldest first; `next_cursor` asks for the next (null: none follows)."""

    jobs: list[JobView]
    next_cursor: str | None = None


class IdsResult(Result):
    """Ids of the batch's jobs, in order; `existing` of them were already there with identical
    fields (a repeat, e.g. a retry after a lost answer) and were not added again."""

    ids: list[str]
    existing: int = 0


class CountResult(Result):
    """How many jobs a bulk action took (`dlq.retry_all`, `dlq.purge`), and their ids when few."""

    count: int
    ids: list[str] | None = None  #: the ids, when at most 1,000


class CleanResult(Result):
    """What `job.clean` removed (or, `dry_run`, would remove): how many jobs in all and per
    state, and the ids of the first 1,000 (oldest ended first)."""

    count: int
    counts: dict[str, int]  #: per state, each state asked for (0 included)
    ids: list[str]  #: at most 1,000: all of them when count <= 1,000
    dry_run: bool = False


class WorkersView(Result):
    """Worker slots of every live daemon sharing the store: this one's exactly, its peers' as of
    their last heartbeat. `active`: slots running (claiming or not); `busy`: attempts in flight;
    `claiming` is this daemon's."""

    active: int
    busy: int = 0
    slots: int
    claiming: bool
    daemons: int


class QueueView(Result):
    """A named queue: its limit, pause, and what it holds now."""

    name: str
    concurrency: int | None  #: null: no limit but the daemons' slots
    paused: bool
    pending: int  #: waiting to run (pending or failed awaiting a retry), held included
    held: int = 0
    running: int
    #: since when its longest-waiting job (not held, not blocked) has been due; may be in the future
    oldest_waiting_at: datetime | None = None
    completed: int = 0  #: ended jobs still stored (`top` shows throughput as their change)
    dead: int = 0


class QueuesResult(Result):
    """Every queue, by name."""

    queues: list[QueueView]


class CronView(Result):
    """A cron schedule: its spec, zone and job, where it stands (next slot, last fire and its
    job, last skip and why), and its policies. Times are UTC."""

    name: str
    spec: str
    tz: str
    command: str
    queue: str
    catch_up: str
    max_catch_up: int
    overlap: str
    paused: bool
    created_at: datetime
    next_fire: datetime | None  #: null: paused
    last_slot: datetime | None = None  #: the slot of the last fire (not of a `cron run`)
    last_fire_at: datetime | None = None
    last_job_id: str | None = None
    last_job_state: JobState | None = None  #: null: no job yet, or deleted since
    last_skip_slot: datetime | None = None
    last_skip_reason: str | None = None
    fires: int = 0  #: jobs enqueued so far (runs by hand included)
    skips: int = 0  #: fires skipped so far (overlap, missed slots)
    #: The job each fire enqueues: JobSpec's fields that were given (the environment's names
    #: only, in `env_names`).
    job: dict[str, Any] = {}


class CronList(Result):
    """Every cron schedule, by name."""

    schedules: list[CronView]


class DaemonView(Result):
    """A live daemon sharing the store."""

    id: str
    host: str
    pid: int
    slots: int
    active: int
    claiming: bool
    heartbeat_at: datetime


class DaemonsResult(Result):
    """`daemon.list`: every live daemon sharing the store, the one answering first."""

    daemons: list[DaemonView]


class StoreView(Result):
    """The store's health as this daemon sees it."""

    #: ok; degraded (a damaged page was found: requests that touch it fail; until a restart);
    #: disk full (writes fail until one succeeds with space free); unavailable (until a call succeeds)
    state: Literal["ok", "degraded", "disk full", "unavailable"]
    detail: str | None = None  #: the error that changed the state
    since: datetime | None = None  #: when it changed


class StatusResult(Result):
    """`daemon.status`: workers, a count per state with `total` (empty when the store could not
    be read), and the store's health."""

    workers: WorkersView
    counts: dict[str, int]
    daemon: dict[str, Any]
    store: StoreView
    queues: list[QueueView] = []


class WaitResult(Result):
    """Final (or current, on timeout) states of waited jobs."""

    done: bool
    states: dict[str, JobState]


class LogsResult(Result):
    """A chunk of output; `next_offset` continues it; `finished` when the attempt ended."""

    attempt: int
    data: str
    next_offset: int
    finished: bool
    truncated: bool


class ConfigValue(Result):
    """One config key's value."""

    key: str
    value: Any


class ConfigList(Result):
    """Every config key with its value."""

    config: dict[str, Any]


class Ack(Result):
    """A plain acknowledgement with a short description."""

    ok: bool = True
    message: str = ""


class HandoverResult(Result):
    """`daemon.handover`: the daemon that answered stops claiming and exits without stopping its
    running jobs, which its job keeper keeps running for the next daemon on the state dir."""

    pid: int  #: the daemon that hands over
    running: int  #: its running attempts, left to the keeper
    message: str


class HelloResult(Result):
    """The daemon's protocol and version."""

    protocol_version: int
    version: str


METHODS: dict[str, type[Params]] = {
    "job.enqueue": EnqueueParams,
    "job.enqueue_batch": EnqueueBatchParams,
    "job.get": GetParams,
    "job.list": ListParams,
    "job.cancel": JobRef,
    "job.delete": JobRef,
    "job.wait": WaitParams,
    "job.logs": LogsParams,
    "job.explain": JobRef,
    "job.release": ReleaseParams,
    "job.hold": HoldParams,
    "job.restart": RestartParams,
    "job.edit": EditParams,
    "queue.add": QueueAddParams,
    "queue.set": QueueSetParams,
    "queue.list": EmptyParams,
    "queue.get": QueueRef,
    "queue.rm": QueueRef,
    "queue.pause": QueuePauseParams,
    "queue.resume": QueueResumeParams,
    "queue.wait": WaitQueueParams,
    "cron.add": CronAddParams,
    "cron.list": EmptyParams,
    "cron.get": CronRef,
    "cron.rm": CronRef,
    "cron.pause": CronRef,
    "cron.resume": CronRef,
    "cron.run": CronRef,
    "job.clean": CleanParams,
    "job.ended_per_minute": EndedPerMinuteParams,
    "dlq.list": DlqListParams,
    "dlq.retry": DlqRetryParams,
    "dlq.retry_all": DlqRetryAllParams,
    "dlq.purge": DlqPurgeParams,
    "config.get": ConfigGetParams,
    "config.set": ConfigSetParams,
    "config.list": EmptyParams,
    "workers.start": WorkersStartParams,
    "workers.stop": WorkersStopParams,
    "daemon.status": EmptyParams,
    "daemon.list": EmptyParams,
    "daemon.stop": EmptyParams,
    "daemon.handover": EmptyParams,
    "daemon.hello": HelloParams,
    "auth.login": AuthParams,
}
"""Every method and its params model: the protocol's table of contents."""
