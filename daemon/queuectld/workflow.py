"""Handlers of the workflow methods: named queues (add, set, list, get, rm, pause, resume, wait),
held jobs (release), edits, restarts, and `explain`. handlers.HANDLERS dispatches to them."""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING

from queuectl import protocol as p
from queuectl.errors import InvalidValue, QueuectlError
from queuectld.enqueueing import due_at
from queuectld.explain import WAITING_STATES, explain
from queuectld.jobs import Job, encode_labels
from queuectld.store.base import DaemonInfo, Dependency, JobEdit, JobFilter
from queuectld.views import job_view, queue_view

if TYPE_CHECKING:
    from queuectld.handlers import Context, Handler

#: Held jobs one transaction of `release --queue Q` takes (see handlers.BULK_PAGE).
RELEASE_PAGE = 500
#: A CountResult lists the ids of the jobs it took up to this many.
MAX_COUNT_IDS = 1000


# -- why a job is not running --------------------------------------------------------------------


async def blocker(ctx: Context, job: Job, deps: list[Dependency] | None = None) -> p.BlockedBy | None:
    """Why a waiting job is not running now: explain.explain over what the store and this daemon
    know (its queue, its dependencies, the live daemons)."""
    store = ctx.db.store
    if deps is None:
        deps = await ctx.db.read(store.dependencies_of, job.id)
    queue = await ctx.db.read(store.queue_get, job.queue)
    return explain(job, queue, deps, await live_daemons(ctx), ctx.now())


async def live_daemons(ctx: Context) -> list[DaemonInfo]:
    """Every live daemon sharing the store: this one as it is now, its peers as of their last
    heartbeat (a peer silent for 3 leases is not live)."""
    sched = ctx.scheduler
    now = ctx.now()
    me = DaemonInfo(id=sched.owner, host=ctx.settings.host, pid=os.getpid(), proc_start=None,
                    started_at=ctx.started_at, heartbeat_at=now, slots=sched.slots, active=sched.active,
                    claiming=sched.claiming)
    try:
        daemons = await ctx.db.read(ctx.db.store.daemons)
    except QueuectlError:
        daemons = []  # a store that fails still has this daemon's own slots to show (health says why)
    fresh_after = now - 3 * ctx.settings.lease_s
    return [me] + [d for d in daemons if d.id != sched.owner and d.heartbeat_at >= fresh_after]


async def explain_job(ctx: Context, params: p.JobRef) -> p.BlockedBy | None:
    """job.explain: the one reason a waiting job is not running; null for a job that is not
    waiting (running, or finished)."""
    job = await ctx.db.read(ctx.db.store.get, params.id)
    if job.state not in WAITING_STATES:
        return None
    return await blocker(ctx, job)


# -- held jobs, edits, restarts ------------------------------------------------------------------


async def release(ctx: Context, params: p.ReleaseParams) -> p.CountResult:
    """job.release: `ids` (all or none; each must be held), or every held job matching `filter`,
    one transaction per RELEASE_PAGE jobs."""
    if (params.ids is None) == (params.filter is None):
        raise InvalidValue(key="job.release", detail="give ids, or a filter (queue, label), not both or neither")
    if params.ids is not None:
        released = await ctx.db.write(ctx.db.store.release, list(dict.fromkeys(params.ids)), ctx.now())
        ctx.scheduler.notify()
        return _count([job.id for job in released], len(released))
    assert params.filter is not None
    where = JobFilter(state=params.filter.state, queue=params.filter.queue, label=params.filter.label)
    taken: list[str] = []
    count = 0
    while True:
        page = await ctx.db.write(ctx.db.store.release_matching, where, ctx.now(), RELEASE_PAGE)
        count += len(page)
        if len(taken) <= MAX_COUNT_IDS:
            taken.extend(page[: MAX_COUNT_IDS + 1 - len(taken)])
        if page:
            ctx.scheduler.notify()
        if len(page) < RELEASE_PAGE:
            return _count(taken, count)


async def hold(ctx: Context, params: p.HoldParams) -> p.CountResult:
    """job.hold: waiting jobs held (never started until released), all or none."""
    held = await ctx.db.write(ctx.db.store.hold, list(dict.fromkeys(params.ids)), ctx.now())
    ctx.scheduler.jobs_changed()  # a held job may have been the next due one
    return _count([job.id for job in held], len(held))


async def restart(ctx: Context, params: p.RestartParams) -> p.CountResult:
    """job.restart: finished jobs back to pending as a new series of attempts, all or none."""
    restarted = await ctx.db.write(ctx.db.store.restart, list(dict.fromkeys(params.ids)), ctx.now())
    ctx.scheduler.notify()
    return _count([job.id for job in restarted], len(restarted))


async def edit(ctx: Context, params: p.EditParams) -> p.JobView:
    """job.edit: change a job that is not running; only the fields given change."""
    if params.clear_timeout and params.timeout_s is not None:
        raise InvalidValue(key="timeout_s", detail="give a timeout or clear it, not both")
    if params.delay_s is not None and params.run_at is not None:
        raise InvalidValue(key="run_at", detail="give run_at or delay_s, not both")
    now = ctx.now()
    change = JobEdit(
        command=params.command, priority=params.priority, queue=params.queue, max_retries=params.max_retries,
        timeout_s=params.timeout_s, clear_timeout=params.clear_timeout,
        next_run_at=(None if params.delay_s is None and params.run_at is None
                     else due_at(ctx, now, params.delay_s, params.run_at)),
        after=None if params.after is None else tuple(dict.fromkeys(params.after)),
        after_any=None if params.after_any is None else tuple(dict.fromkeys(params.after_any)),
        labels=None if params.labels is None else (encode_labels(params.labels) or ""),
    )
    if change == JobEdit():
        raise InvalidValue(key="job.edit", detail="nothing to change: give at least one field")
    job = await ctx.db.write(ctx.db.store.edit, params.id, change, now)
    ctx.scheduler.jobs_changed()
    return job_view(job)


# -- named queues --------------------------------------------------------------------------------


async def queue_add(ctx: Context, params: p.QueueAddParams) -> p.QueueView:
    """queue.add"""
    return queue_view(await ctx.db.write(ctx.db.store.queue_add, params.name, params.concurrency, ctx.now()))


async def queue_set(ctx: Context, params: p.QueueSetParams) -> p.QueueView:
    """queue.set: a new limit (or none, `unlimited`), applied at the next claim of every daemon."""
    if (params.concurrency is None) == (not params.unlimited):
        raise InvalidValue(key="queue.set", detail="give a concurrency or unlimited, one of them")
    queue = await ctx.db.write(ctx.db.store.queue_set, params.name, params.concurrency)
    ctx.scheduler.notify()  # a higher limit: jobs may start now
    return queue_view(queue)


async def queue_list(ctx: Context, params: p.EmptyParams) -> p.QueuesResult:
    """queue.list"""
    return p.QueuesResult(queues=[queue_view(q) for q in await ctx.db.read(ctx.db.store.queues)])


async def queue_get(ctx: Context, params: p.QueueRef) -> p.QueueView:
    """queue.get"""
    return queue_view(await ctx.db.read(ctx.db.store.queue_get, params.name))


async def queue_rm(ctx: Context, params: p.QueueRef) -> p.Ack:
    """queue.rm: only an empty queue, never `default`."""
    await ctx.db.write(ctx.db.store.queue_rm, params.name)
    return p.Ack(message=f"queue {params.name} removed")


def _names(names: list[str] | None, every: bool, method: str) -> list[str] | None:
    """The queues a pause or resume takes (None: all of them)."""
    if (names is None) == (not every):
        raise InvalidValue(key=method, detail="give queue names, or all, one of them")
    return None if every else list(dict.fromkeys(names or ()))


async def queue_pause(ctx: Context, params: p.QueuePauseParams) -> p.QueuesResult:
    """queue.pause: nothing new starts in the queues, on any daemon. With `kill`, their running
    attempts end as requeued (uncounted) in the store, and those running here are killed now
    (a peer kills its own when its lease renewal finds the lease gone)."""
    names = _names(params.names, params.all, "queue.pause")
    paused = await ctx.db.write(ctx.db.store.queue_pause, names, True)
    if params.kill:
        keys = await ctx.db.write(ctx.db.store.requeue_running, names, ctx.now())
        ctx.scheduler.kill_requeued(keys)
    return p.QueuesResult(queues=[queue_view(q) for q in paused])


async def queue_resume(ctx: Context, params: p.QueueResumeParams) -> p.QueuesResult:
    """queue.resume"""
    names = _names(params.names, params.all, "queue.resume")
    resumed = await ctx.db.write(ctx.db.store.queue_pause, names, False)
    ctx.scheduler.notify()
    return p.QueuesResult(queues=[queue_view(q) for q in resumed])


async def queue_wait(ctx: Context, params: p.WaitQueueParams) -> p.WaitResult:
    """queue.wait (a drain): returns when the queue has nothing waiting to run (held jobs aside)
    and nothing running, or with done=false after timeout_s. Polls like job.wait: at each change
    here, and at least every second (a peer may run the queue's jobs)."""
    deadline = time.monotonic() + params.timeout_s
    while True:
        changed = ctx.scheduler.changed()
        queue = await ctx.db.read(ctx.db.store.queue_get, params.queue)
        done = queue.pending - queue.held <= 0 and queue.running == 0
        left = deadline - time.monotonic()
        if done or left <= 0:
            return p.WaitResult(done=done, states={})
        try:
            await asyncio.wait_for(changed.wait(), min(left, 1.0))
        except TimeoutError:
            pass


def _count(ids: list[str], count: int) -> p.CountResult:
    return p.CountResult(count=count, ids=ids if count <= MAX_COUNT_IDS else None)


HANDLERS: dict[str, Handler] = {
    "job.explain": explain_job,
    "job.release": release,
    "job.hold": hold,
    "job.restart": restart,
    "job.edit": edit,
    "queue.add": queue_add,
    "queue.set": queue_set,
    "queue.list": queue_list,
    "queue.get": queue_get,
    "queue.rm": queue_rm,
    "queue.pause": queue_pause,
    "queue.resume": queue_resume,
    "queue.wait": queue_wait,
}
"""The workflow methods, merged into handlers.HANDLERS."""
