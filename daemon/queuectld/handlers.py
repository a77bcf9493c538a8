"""One function per RPC method: the only place where requests meet the domain.

Handlers get validated params and return result models; only the server touches the socket.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from queuectl import __version__
from queuectl import protocol as p
from queuectl.errors import InvalidValue, JobNotFound, ProtocolMismatch, QueuectlError
from queuectld import config as config_keys
from queuectld import cron_service, enqueueing, paging, retention, runner, workflow
from queuectld.clock import StoreClock
from queuectld.envcache import EnvCache
from queuectld.explain import WAITING_STATES
from queuectld.jobs import TERMINAL_STATES, Job, JobState, OutcomeKind
from queuectld.metrics import Metrics
from queuectld.outputlog import MARKER_PREFIX
from queuectld.scheduler import Scheduler
from queuectld.settings import Settings
from queuectld.store.base import (
    AttemptRecord,
    DeadFilter,
    Dependency,
    EnvSnapshot,
    ListPosition,
    Store,
)
from queuectld.store_threads import StoreThreads
from queuectld.views import attempt_view, dependency_views, env_view, job_view, queue_view, ts, ts_of

__all__ = ["HANDLERS", "Context", "Encoded", "attempt_view", "job_view"]

#: Dead jobs one transaction of a bulk DLQ action takes. Small enough that the scheduler's own
#: writes (which queue behind it in the writer thread) wait a few milliseconds, not seconds.
BULK_PAGE = 500
#: A CountResult lists the ids of the jobs it took up to this many.
MAX_COUNT_IDS = 1000


class StopRequest(Protocol):
    """app.request_stop: drain (a second call kills the running jobs), or hand the running jobs
    over to the job keeper for the next daemon (`handover`)."""

    def __call__(self, handover: bool = False) -> None: ...


@dataclass
class Context:
    """What handlers share: the store, the scheduler, the config, and the stop switch."""

    db: StoreThreads
    scheduler: Scheduler
    settings: Settings
    config: dict[str, Any]
    stop: StopRequest
    started_at: float = field(default_factory=time.time)
    #: The store's time (the scheduler's, in the daemon): every time a handler gives the store.
    clock: StoreClock = field(default_factory=lambda: StoreClock.local(time.time()))
    metrics: Metrics = field(default_factory=Metrics)  #: what `--metrics` serves (a no-op without)
    #: What the pruner did (retention.PruneStats), for `daemon status`; None where none runs.
    retention: Any = None

    def now(self) -> float:
        """The store's time now: on a shared database no host's own clock takes part."""
        return self.clock.now()


@dataclass(frozen=True, slots=True)
class Encoded:
    """A result already serialized as its model's JSON (off the event loop, for large ones)."""

    json: str


Handler = Callable[[Context, Any], Awaitable["p.Result | Encoded | None"]]


# -- jobs ----------------------------------------------------------------------------------------


async def get_job(ctx: Context, params: p.GetParams) -> p.JobView:
    """job.get: the job with its attempts, dependencies, environment (values of secret-looking
    names masked unless `reveal_env`) and, when it waits, the one reason it is not running."""
    job, attempts, deps, snapshot = await ctx.db.read(_details, ctx.db.store, ctx.scheduler.envs, params.id)
    view = job_view(job, attempts)
    view.dependencies = dependency_views(deps)
    if snapshot is not None:
        patterns = config_keys.secret_patterns(str(ctx.config.get("secret-env-patterns",
                                                                  config_keys.DEFAULT_SECRET_ENV_PATTERNS)))
        view.env_names = sorted(snapshot.vars)
        view.clean_env = snapshot.clean
        view.env = env_view(snapshot, patterns, params.reveal_env)
    if job.state in WAITING_STATES:
        view.blocked_by = await workflow.blocker(ctx, job, deps)
    return view


def _details(store: Store, envs: EnvCache, job_id: str) -> tuple[Job, list[AttemptRecord], list[Dependency],
                                                                   EnvSnapshot | None]:
    """What `show` prints beside the job, read in one trip to the reader thread."""
    job = store.get(job_id)
    attempts = store.attempts_of(job_id)
    deps = store.dependencies_of(job_id)
    snapshot = None if job.env_id is None else envs.resolve(store, [job.env_id]).get(job.env_id)
    return job, attempts, deps, snapshot


async def list_jobs(ctx: Context, params: p.ListParams) -> Encoded:
    """job.list: one page, of one state, last outcome, queue and label when they are given."""
    return await _page(ctx, params.state, params.outcome, params.limit, params.cursor, params.queue, params.label,
                       params.newest_first)


async def _page(ctx: Context, state: JobState | None, outcome: OutcomeKind | None, limit: int | None,
                cursor: str | None, queue: str | None = None, label: str | None = None,
                newest_first: bool = False) -> Encoded:
    after = None if cursor is None else paging.decode_cursor(cursor, state, outcome, newest_first=newest_first)
    size = min(limit or p.MAX_PAGE_JOBS, p.MAX_PAGE_JOBS)
    return await ctx.db.page(_encode_page, ctx.db.store, state, outcome, size, after, queue, label, newest_first)


def _encode_page(store: Store, state: JobState | None, outcome: OutcomeKind | None, size: int,
                 after: ListPosition | None, queue: str | None = None, label: str | None = None,
                 newest_first: bool = False) -> Encoded:
    """Read and encode one page, in the page thread: at 1,000 jobs building the views and their
    JSON is ~15 ms of CPU that the event loop (and `status`) should not wait behind."""
    # One more than asked: is there a next page?
    listed = store.list_page(state, size + 1, after, outcome=outcome, queue=queue, label=label,
                             newest_first=newest_first)
    page = listed[:size]
    text = paging.page_json([job_view(job).model_dump_json() for job, _ in page], [pos for _, pos in page],
                            state, more=len(listed) > size, outcome=outcome, newest_first=newest_first)
    return Encoded(text)


async def cancel(ctx: Context, params: p.JobRef) -> p.JobView:
    """job.cancel"""
    job, before = await ctx.db.write(ctx.db.store.cancel, params.id, ctx.now())
    if before is JobState.PROCESSING:
        ctx.scheduler.kill_local(params.id, runner.KillReason.CANCELED)
    ctx.scheduler.jobs_changed()  # a dependent --after-any it may now run
    return job_view(job)


async def delete_job(ctx: Context, params: p.JobRef) -> p.JobView:
    """job.delete"""
    job = await ctx.db.write(ctx.db.store.delete, params.id)
    _remove_logs(ctx.settings.logs_dir, [job])
    ctx.scheduler.jobs_changed()  # its dependents were canceled: wake their `wait`s
    return job_view(job)


async def wait(ctx: Context, params: p.WaitParams) -> p.WaitResult:
    """job.wait: returns when all are terminal, or with done=false after timeout_s."""
    deadline = time.monotonic() + params.timeout_s
    ids = list(dict.fromkeys(params.ids))
    while True:
        changed = ctx.scheduler.changed()
        states = await ctx.db.read(ctx.db.store.states_of, ids)
        missing = [i for i in ids if i not in states]
        if missing:
            raise JobNotFound(job_id=missing[0])
        done = all(s in TERMINAL_STATES for s in states.values())
        left = deadline - time.monotonic()
        if done or left <= 0:
            return p.WaitResult(done=done, states=states)
        # Another host may finish a job too: look again at least every second.
        try:
            await asyncio.wait_for(changed.wait(), min(left, 1.0))
        except TimeoutError:
            pass


async def logs(ctx: Context, params: p.LogsParams) -> p.LogsResult:
    """job.logs"""
    deadline = time.monotonic() + (1.0 if params.follow else 0.0)
    while True:
        job = await ctx.db.read(ctx.db.store.get, params.id)
        attempt = params.attempt or max(job.run, 1)
        if attempt > max(job.run, 1):
            raise InvalidValue(key="--attempt", detail=f"job {job.id} has {job.run} attempt(s)")
        # A job not started yet has its first attempt still to come: `enqueue && logs --follow`
        # must wait for it, not end before it began.
        to_come = job.run < attempt and job.state not in TERMINAL_STATES
        finished = not to_come and not (job.state is JobState.PROCESSING and job.run == attempt)
        path = runner.log_path(ctx.settings.logs_dir, job.id, attempt)
        offset = _tail_offset(path, params.limit) if params.tail else params.offset
        # An attempt not started yet has no output: a file under its name is a replaced job's.
        data = b"" if job.run < attempt else _read_chunk(path, offset, params.limit)
        if data or finished or time.monotonic() >= deadline:
            text, consumed = _decode(data, final=finished)
            truncated = MARKER_PREFIX.encode() in data
            return p.LogsResult(attempt=attempt, data=text, next_offset=offset + consumed,
                                finished=finished and consumed == len(data), truncated=truncated)
        await asyncio.sleep(0.1)


def _tail_offset(path: Any, limit: int) -> int:
    """Where the last `limit` bytes of a log begin (0 for a log not written yet)."""
    try:
        return max(0, os.path.getsize(path) - limit)
    except OSError:
        return 0


def _read_chunk(path: Any, offset: int, limit: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read(limit)
    except FileNotFoundError:
        return b""


def _decode(data: bytes, *, final: bool) -> tuple[str, int]:
    """Decode without splitting a UTF-8 sequence across chunks."""
    try:
        return data.decode("utf-8"), len(data)
    except UnicodeDecodeError as exc:
        if not final and exc.start >= len(data) - 3 and exc.reason == "unexpected end of data":
            return data[: exc.start].decode("utf-8", errors="replace"), exc.start
        return data.decode("utf-8", errors="replace"), len(data)


# -- dead-letter queue ---------------------------------------------------------------------------


async def dlq_list(ctx: Context, params: p.DlqListParams) -> Encoded:
    """dlq.list: one page, of one last outcome, queue and label when they are given."""
    return await _page(ctx, JobState.DEAD, params.outcome, params.limit, params.cursor, params.queue, params.label,
                       params.newest_first)


async def dlq_retry(ctx: Context, params: p.DlqRetryParams) -> p.CountResult:
    """dlq.retry: every job of `ids` back to pending, attempts reset, or none of them (a missing
    or not dead one fails the request); `command` replaces the command of the one job first;
    `with_dependents` also brings back the jobs their death canceled (counted and listed too)."""
    job_ids = list(dict.fromkeys(params.ids))
    if params.command is not None and len(job_ids) != 1:
        raise InvalidValue(key="command", detail=f"a new command is for one job; {len(job_ids)} ids were given. "
                           "Retry them without it, or one at a time")
    retried = await ctx.db.write(ctx.db.store.dlq_retry, job_ids, ctx.now(), params.command,
                                 with_dependents=params.with_dependents)
    ctx.scheduler.notify()
    return _count([job.id for job in retried], len(retried))


async def dlq_retry_all(ctx: Context, params: p.DlqRetryAllParams) -> p.CountResult:
    """dlq.retry_all: every dead job matching the filter, one transaction per BULK_PAGE jobs.

    Only jobs that died before the action began are taken, so a retried job that dies again
    meanwhile is not retried twice. Between pages the event loop serves other requests (each
    page is a store call off the loop) and the scheduler's own writes get the writer thread."""
    where = _dead_filter(params.filter, ctx.now())
    taken: list[str] = []
    count = 0
    while True:
        page = await ctx.db.write(ctx.db.store.dlq_retry_matching, where, ctx.now(), BULK_PAGE)
        count += len(page)
        _keep_ids(taken, page)
        if page:
            ctx.scheduler.notify()  # the slots can start on this page while the next is retried
        if len(page) < BULK_PAGE:
            return _count(taken, count)
        # Awaiting each page (run in the writer thread) is what yields to the loop between them.


async def dlq_purge(ctx: Context, params: p.DlqPurgeParams) -> p.CountResult:
    """dlq.purge: delete dead jobs with their attempts and output: `ids` (all or none), or every
    dead job matching `filter`, one transaction per BULK_PAGE jobs. A filter that matches every
    dead job needs `all`, so nothing is purged by a request that forgot to say which jobs."""
    if params.ids is not None:
        if params.filter is not None or params.all:
            raise InvalidValue(key="ids", detail="give ids, or a filter / all, not both")
        purged = await ctx.db.write(ctx.db.store.dlq_purge, list(dict.fromkeys(params.ids)))
        await asyncio.to_thread(_remove_logs, ctx.settings.logs_dir, purged)
        return _count([job.id for job in purged], len(purged))
    wanted = params.filter or p.DlqFilter()
    if not params.all and wanted == p.DlqFilter():
        raise InvalidValue(key="dlq.purge", detail="say which dead jobs: ids, a filter (outcome, since_s, "
                           "older_than_s), or all=true for every one. Nothing was purged")
    where = _dead_filter(wanted, ctx.now())
    taken: list[str] = []
    count = 0
    while True:
        jobs = await ctx.db.write(ctx.db.store.dlq_purge_matching, where, BULK_PAGE)
        count += len(jobs)
        _keep_ids(taken, [job.id for job in jobs])
        # Unlinking up to 500 x runs files is disk work the loop should not wait on.
        await asyncio.to_thread(_remove_logs, ctx.settings.logs_dir, jobs)
        if len(jobs) < BULK_PAGE:
            return _count(taken, count)


def _dead_filter(wanted: p.DlqFilter, began: float) -> DeadFilter:
    """The store's filter for a bulk action that began at `began`: died before then (and before
    `older_than_s` ago), after `since_s` ago, with the given outcome, queue and label."""
    before = began if wanted.older_than_s is None else began - wanted.older_than_s
    after = None if wanted.since_s is None else began - wanted.since_s
    return DeadFilter(outcome=wanted.outcome, finished_after=after, finished_before=before, queue=wanted.queue,
                      label=wanted.label)


def _keep_ids(taken: list[str], ids: list[str]) -> None:
    """Collect ids for the CountResult until there are more than it lists (then stop: no use)."""
    if len(taken) <= MAX_COUNT_IDS:
        taken.extend(ids[: MAX_COUNT_IDS + 1 - len(taken)])


def _count(ids: list[str], count: int) -> p.CountResult:
    return p.CountResult(count=count, ids=ids if count <= MAX_COUNT_IDS else None)


def _remove_logs(logs_dir: Any, jobs: list[Job]) -> None:
    """Delete the output files of every run of `jobs` (those that exist)."""
    for job in jobs:
        for run in range(1, job.run + 1):
            try:
                os.unlink(runner.log_path(logs_dir, job.id, run))
            except FileNotFoundError:
                pass


# -- config --------------------------------------------------------------------------------------


async def config_get(ctx: Context, params: p.ConfigGetParams) -> p.ConfigValue:
    """config.get"""
    config_keys.validate(params.key, config_keys.DEFAULTS.get(params.key, 0))  # unknown key -> error
    return p.ConfigValue(key=params.key, value=ctx.config[params.key])


async def config_set(ctx: Context, params: p.ConfigSetParams) -> p.ConfigValue:
    """config.set"""
    value = config_keys.validate(params.key, params.value)
    await ctx.db.write(ctx.db.store.config_set, params.key, value)
    ctx.config[params.key] = value
    ctx.scheduler.notify()
    return p.ConfigValue(key=params.key, value=value)


async def config_list(ctx: Context, params: p.EmptyParams) -> p.ConfigList:
    """config.list"""
    return p.ConfigList(config=dict(ctx.config))


# -- workers and daemon --------------------------------------------------------------------------


async def workers_start(ctx: Context, params: p.WorkersStartParams) -> p.WorkersView:
    """workers.start"""
    ctx.scheduler.start_workers(params.count or int(ctx.config["workers"]))
    return await _workers(ctx)


async def workers_stop(ctx: Context, params: p.WorkersStopParams) -> p.WorkersView:
    """workers.stop"""
    ctx.scheduler.stop_workers(params.now)
    return await _workers(ctx)


async def _workers(ctx: Context) -> p.WorkersView:
    """The slots of every live daemon (this one's exactly, its peers' as of their heartbeats):
    `active` slots running, claiming or not; `busy` of them running an attempt."""
    daemons = await workflow.live_daemons(ctx)
    slots = sum(d.slots for d in daemons)
    return p.WorkersView(active=slots, busy=sum(d.active for d in daemons), slots=slots,
                         claiming=ctx.scheduler.claiming, daemons=len(daemons))


async def ended_per_minute(ctx: Context, params: p.EndedPerMinuteParams) -> p.EndedPerMinuteResult:
    """job.ended_per_minute: the jobs that ended (completed or dead) per minute, from the store, so
    that a throughput chart opened now shows the hour before it (every daemon's jobs)."""
    now = ctx.now()
    counts = await ctx.db.read(ctx.db.store.ended_per_minute, now, params.minutes)
    return p.EndedPerMinuteResult(counts=counts, until=ts_of(now))


async def daemon_list(ctx: Context, params: p.EmptyParams) -> p.DaemonsResult:
    """daemon.list: the live daemons sharing the store (this one first, as it is now; its peers as
    of their last heartbeat), for `queuectl web`'s daemons page."""
    return p.DaemonsResult(daemons=[
        p.DaemonView(id=d.id, host=d.host, pid=d.pid, slots=d.slots, active=d.active, claiming=d.claiming,
                     heartbeat_at=ts_of(d.heartbeat_at))
        for d in await workflow.live_daemons(ctx)])


async def status(ctx: Context, params: p.EmptyParams) -> p.StatusResult:
    """daemon.status: answers even when the store fails, with the counts and queues left out and
    the store's state saying why."""
    try:
        counts: dict[str, int] = await ctx.db.read(ctx.db.store.counts)
        counts["total"] = sum(counts.values())
        queues = [queue_view(q) for q in await ctx.db.read(ctx.db.store.queues)]
    except QueuectlError:
        counts, queues = {}, []
    health = ctx.db.health.view()
    return p.StatusResult(
        store=p.StoreView(state=health["state"], detail=health["detail"], since=ts(health["since"])),
        workers=await _workers(ctx),
        counts=counts,
        queues=queues,
        daemon={
            "pid": os.getpid(), "version": __version__, "owner": ctx.scheduler.owner,
            "started_at": ts(ctx.started_at).isoformat() if ctx.started_at else None,  # type: ignore[union-attr]
            "socket": str(ctx.settings.socket_path), "state_dir": str(ctx.settings.state_dir),
            "running": ctx.scheduler.active,
            "keeper": _keeper_view(ctx),
            # Where it logs (None: stderr), which may have come from the config file: `daemon restart` says it.
            "log": str(ctx.settings.log_path) if ctx.settings.log_path else None,
            "retention": ctx.retention.summary() if ctx.retention is not None else None,
            **start_command(ctx.settings, sys.argv[1:]),
        },
    )


def _keeper_view(ctx: Context) -> dict[str, Any] | None:
    """The job keeper as `daemon status` shows it (None: `--no-keeper`)."""
    link = ctx.scheduler.keeper
    if link is None:
        return None
    client = link.client
    return {"pid": client.keeper_pid if client else None, "tracking": client.keeper_tracking if client else None,
            "connected": link.up, "deadlines": link.fencing}


def start_command(settings: Settings, flags: list[str]) -> dict[str, Any]:
    """How `queuectl daemon restart` starts this daemon again: `argv`, its interpreter with
    `-m queuectld` and its flags (`flags`), where the state dir, socket and log level, which may
    have come from the environment or been relative, are given as they resolved; `cwd`, where
    the other relative paths resolve as they did here; `from_env`, the variables the restart
    must have set as well (QUEUECTL_DB when the store's URL came from it: a secret, so it is
    named here, never sent)."""
    pinned = {"--state-dir": str(settings.state_dir), "--socket": str(settings.socket_path),
              "--log-level": settings.log_level}
    kept: list[str] = []
    args = iter(flags)
    for arg in args:
        name, equals, _ = arg.partition("=")
        if name in pinned:
            if not equals:
                next(args, None)  # its value
            continue
        kept.append(arg)
    try:
        cwd: str | None = os.getcwd()
    except OSError:  # removed since: the restart runs from / instead
        cwd = None
    from_env = ["QUEUECTL_DB"] if os.environ.get("QUEUECTL_DB") == settings.db_url else []
    return {"argv": [sys.executable, "-m", "queuectld", *kept, *(part for item in pinned.items() for part in item)],
            "cwd": cwd, "from_env": from_env}


async def stop(ctx: Context, params: p.EmptyParams) -> p.Ack:
    """daemon.stop"""
    ctx.stop()
    return p.Ack(message=f"queuectld (pid {os.getpid()}) is stopping after {ctx.scheduler.active} running job(s)")


async def handover(ctx: Context, params: p.EmptyParams) -> p.HandoverResult:
    """daemon.handover: stop claiming and exit without stopping the running jobs, which stay with
    the job keeper for the daemon that asked (`queuectld --replace`) to adopt."""
    running = ctx.scheduler.active
    ctx.stop(handover=True)
    return p.HandoverResult(pid=os.getpid(), running=running,
                            message=f"queuectld (pid {os.getpid()}) hands over and exits; its {running} running "
                            "job(s) stay with its job keeper")


async def hello(ctx: Context, params: p.HelloParams) -> p.HelloResult:
    """daemon.hello"""
    if params.protocol_version != p.PROTOCOL_VERSION:
        refused = ProtocolMismatch(detail=f"client speaks {params.protocol_version}, queuectld {__version__} speaks "
                                   f"{p.PROTOCOL_VERSION}")
        refused.data = {"protocol_version": p.PROTOCOL_VERSION, "version": __version__}  # for the client's advice
        raise refused
    return p.HelloResult(protocol_version=p.PROTOCOL_VERSION, version=__version__)


HANDLERS: dict[str, Handler] = {
    "job.enqueue": enqueueing.enqueue,
    "job.enqueue_batch": enqueueing.enqueue_batch,
    "job.get": get_job,
    "job.list": list_jobs,
    "job.cancel": cancel,
    "job.delete": delete_job,
    "job.wait": wait,
    "job.logs": logs,
    **retention.HANDLERS,
    **workflow.HANDLERS,
    **cron_service.HANDLERS,
    "job.ended_per_minute": ended_per_minute,
    "dlq.list": dlq_list,
    "dlq.retry": dlq_retry,
    "dlq.retry_all": dlq_retry_all,
    "dlq.purge": dlq_purge,
    "config.get": config_get,
    "config.set": config_set,
    "config.list": config_list,
    "workers.start": workers_start,
    "workers.stop": workers_stop,
    "daemon.status": status,
    "daemon.list": daemon_list,
    "daemon.stop": stop,
    "daemon.handover": handover,
    "daemon.hello": hello,
}
"""Every method the server dispatches (auth.login is handled by the server itself)."""
