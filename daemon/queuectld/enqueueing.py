"""Handlers of job.enqueue and job.enqueue_batch: a job's defaults, its retry rules, and its
context (queue, cwd, environment snapshot, labels, dependencies, hold). A batch of 100,000 jobs
passes through here, so its loop is written inline and its environments are made once."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from queuectl import ids
from queuectl import protocol as p
from queuectl.errors import InvalidValue
from queuectl.rules import parse_signals
from queuectld import retention
from queuectld.jobs import Job, JobState, RetryRules, encode_labels
from queuectld.memory import release_freed_memory
from queuectld.metrics import Metrics
from queuectld.store.base import Enqueued, EnvSnapshot, NewJob, Store
from queuectld.views import job_view

if TYPE_CHECKING:
    from queuectld.handlers import Context


def encode_rules(retry_on_exit: list[int] | None, no_retry_on_exit: list[int] | None,
                 retry_on_timeout: bool | None, no_retry_on_signal: list[str] | None, where: str = "") -> str | None:
    """A job's own retry rules in their stored form (None: it has none, the config's apply).

    Signal names are checked here, against the signals this system knows (the protocol checks
    only their spelling): InvalidValue names the field, and `where` (e.g. `jobs.3.`) the job."""
    if retry_on_exit is None and no_retry_on_exit is None and retry_on_timeout is None and no_retry_on_signal is None:
        return None  # the common case, and the fast one
    signals: tuple[str, ...] | None = None
    if no_retry_on_signal is not None:
        try:
            signals = parse_signals(no_retry_on_signal)
        except ValueError as exc:
            raise InvalidValue(key=f"{where}no_retry_on_signal", detail=str(exc)) from None
    return RetryRules(
        None if retry_on_exit is None else tuple(sorted(set(retry_on_exit))),
        None if no_retry_on_exit is None else tuple(sorted(set(no_retry_on_exit))),
        retry_on_timeout,
        signals,
    ).encode()


class Environments:
    """The environment snapshots of one enqueue call, each made once: a batch whose jobs share
    the batch's environment (the common case) makes one snapshot, not one per job.

    A job without `env` takes the batch's (`env`, `clean_env`); one with `env` lays it over the
    batch's, or with its own `clean_env` over the daemon's base only."""

    def __init__(self, env: dict[str, str] | None = None, clean: bool = False) -> None:
        self.snapshots: dict[str, EnvSnapshot] = {}
        self._env = env
        self._clean = clean
        self._made: dict[tuple[bool, tuple[tuple[str, str], ...]], str] = {}
        self.batch_id = None if env is None else self._add(EnvSnapshot.make(env, clean))

    def _add(self, snapshot: EnvSnapshot) -> str:
        self.snapshots.setdefault(snapshot.id, snapshot)
        return snapshot.id

    def keep_only(self, used: set[str | None]) -> None:
        """Drop the snapshots no job uses (a batch's environment that each job replaced)."""
        self.snapshots = {i: snapshot for i, snapshot in self.snapshots.items() if i in used}

    def of(self, env: dict[str, str] | None, clean: bool) -> str | None:
        """The snapshot id of a job with its own `env` / `clean_env` (None: the daemon's base)."""
        if env is None:
            return None if clean else self.batch_id
        key = (clean, tuple(env.items()))
        made = self._made.get(key)
        if made is None:
            if clean or self._env is None:
                snapshot = EnvSnapshot.make(env, clean)
            else:
                snapshot = EnvSnapshot.make({**self._env, **env}, self._clean)
            made = self._made[key] = self._add(snapshot)
        return made


def due_at(ctx: Context, now: float, delay_s: float | None, run_at: float | None, where: str = "") -> float:
    """When a job (or an edit) asks to run: now + delay, or the wall instant `run_at` on the
    store's time base (clock.StoreClock.from_wall); both given is refused."""
    if run_at is None:
        return now + (delay_s or 0)
    if delay_s:
        raise InvalidValue(key=f"{where}run_at", detail="give run_at or delay_s, not both")
    return max(now, ctx.clock.from_wall(run_at, time.time()))


def _new_job(ctx: Context, spec: p.JobSpec, now: float, generated_id: str, env_id: str | None) -> NewJob:
    return NewJob(
        id=spec.id or generated_id,
        command=spec.command,
        max_retries=spec.max_retries if spec.max_retries is not None else int(ctx.config["max-retries"]),
        priority=spec.priority,
        timeout_s=spec.timeout_s,
        next_run_at=due_at(ctx, now, spec.delay_s, spec.run_at),
        created_at=now,
        retry_rules=encode_rules(spec.retry_on_exit, spec.no_retry_on_exit, spec.retry_on_timeout,
                                 spec.no_retry_on_signal),
        backoff_base=spec.backoff_base,
        backoff_max_s=spec.backoff_max_s,
        queue=spec.queue,
        cwd=spec.cwd,
        env_id=env_id,
        labels=encode_labels(spec.labels),
        held=spec.hold,
        after=tuple(spec.after or ()),
        after_any=tuple(spec.after_any or ()),
    )


async def _store_jobs(ctx: Context, new: list[NewJob], replace: bool, now: float, envs: Environments) -> Enqueued:
    """Enqueue in the writer thread, with the call's environment snapshots."""
    snapshots = list(envs.snapshots.values())
    if replace:
        done = await ctx.db.write(_replace_jobs, ctx.db.store, ctx.settings.logs_dir, new, now, snapshots)
    else:
        done = await ctx.db.add(ctx.db.store.enqueue, new, replace=False, now=now, envs=snapshots)
    for snapshot in snapshots:  # its jobs' first turn finds them without a store call
        ctx.scheduler.envs.add(snapshot)
    return done


def _replace_jobs(store: Store, logs_dir: Path, new: list[NewJob], now: float,
                  snapshots: list[EnvSnapshot]) -> Enqueued:
    """Enqueue with replace, then remove the log files of the jobs replaced, in the writer
    thread: after the commit (a crash between leaves orphans, which the retention sweep removes),
    and before this daemon's next claim (which goes through the same thread), so the new job
    starts with no output and its own first attempt's file is never the one removed."""
    done = store.enqueue(new, replace=True, now=now, envs=snapshots)
    if done.replaced:
        retention.remove_job_files(logs_dir, done.replaced.items())
    return done


async def enqueue(ctx: Context, params: p.EnqueueParams) -> p.JobView:
    """job.enqueue: a repeat of an existing job (same id, identical fields) returns it as it is."""
    now = ctx.now()
    envs = Environments()
    new = _new_job(ctx, params, now, ids.new_stem(now), envs.of(params.env, params.clean_env))
    # Always a turn: a job that is already there may be the one a lost answer left unannounced.
    existing = (await _store_jobs(ctx, [new], params.replace, now, envs)).existing
    ctx.scheduler.notify()
    if not existing:
        ctx.metrics.job_enqueued(new.queue)
    if existing:  # e.g. a retry after a lost answer
        return job_view(await ctx.db.read(ctx.db.store.get, new.id))
    # The job as committed (no second trip to the store: the slot may be starting it already).
    view = job_view(Job(id=new.id, command=new.command, state=JobState.PENDING, attempts=0,
                        max_retries=new.max_retries, priority=new.priority, timeout_s=new.timeout_s,
                        next_run_at=new.next_run_at, created_at=new.created_at, updated_at=now,
                        retry_rules=new.retry_rules, backoff_base=new.backoff_base,
                        backoff_max_s=new.backoff_max_s, queue=new.queue, cwd=new.cwd, env_id=new.env_id,
                        labels=new.labels, held=new.held))
    if new.env_id is not None:
        snapshot = envs.snapshots[new.env_id]
        view.env_names, view.clean_env = sorted(snapshot.vars), snapshot.clean
    return view


async def enqueue_batch(ctx: Context, params: p.EnqueueBatchParams) -> p.IdsResult:
    """job.enqueue_batch: jobs identical to existing ones are skipped and counted in `existing`.
    The batch's cwd and environment are each job's unless it has its own (see Environments)."""
    now = ctx.now()
    count = len(params.jobs)
    generated = (ids.batch_ids(params.id_stem, params.id_start, count) if params.id_stem
                 else ids.new_job_ids(now, count))
    default_retries = int(ctx.config["max-retries"])
    envs = Environments(params.env, params.clean_env)
    batch_cwd, batch_env = params.cwd, envs.batch_id
    # Inline rather than _new_job per job: this loop runs 100,000 times for one `enqueue --file`.
    # Jobs are 1 µs apart so that those of one batch run (and list) in the order given.
    new: list[NewJob] = []
    add = new.append
    for i, spec in enumerate(params.jobs):
        at = now + i * 1e-6
        if len(spec) == 1:  # the command alone: each `enqueue --file` line without flags or JSON
            add(NewJob(generated[i], spec["command"], default_retries, 0, None, at, at, None, None, None,
                       p.DEFAULT_QUEUE, batch_cwd, batch_env))
            continue
        retries = spec.get("max_retries")
        env, clean = spec.get("env"), spec.get("clean_env", False)
        labels = spec.get("labels")
        add(NewJob(
            spec.get("id") or generated[i], spec["command"], default_retries if retries is None else retries,
            spec.get("priority", 0), spec.get("timeout_s"),
            at + spec.get("delay_s", 0) if spec.get("run_at") is None
            else due_at(ctx, at, spec.get("delay_s"), spec.get("run_at"), f"jobs.{i}."), at,
            encode_rules(spec.get("retry_on_exit"), spec.get("no_retry_on_exit"), spec.get("retry_on_timeout"),
                         spec.get("no_retry_on_signal"), f"jobs.{i}."),
            spec.get("backoff_base"), spec.get("backoff_max_s"), spec.get("queue", p.DEFAULT_QUEUE),
            spec.get("cwd") or batch_cwd, batch_env if env is None and not clean else envs.of(env, clean),
            None if labels is None else encode_labels(labels), spec.get("hold", False),
            tuple(spec.get("after") or ()), tuple(spec.get("after_any") or ())))
    if envs.batch_id is not None and len(envs.snapshots) > 1:
        envs.keep_only({n.env_id for n in new})  # the batch's own, when every job replaced it
    done = await _store_jobs(ctx, new, params.replace, now, envs)
    if ctx.metrics.enabled:
        _count_enqueued(ctx.metrics, new, done.existing)
    # Always a turn, also when every job was there: a chunk sent again after its answer was lost
    # holds jobs the first try committed and nobody announced (they waited for the next poll).
    ctx.scheduler.notify()
    if count >= TRIM_AFTER_JOBS:
        # Once this request is answered and its parsed jobs are freed: ~1 ms, and a million jobs
        # sent in chunks leave the daemon ~15 MB smaller (measured: 94 -> 79 MB).
        asyncio.get_running_loop().call_soon(release_freed_memory)
    return p.IdsResult(ids=done.ids, existing=len(done.existing))


def _count_enqueued(metrics: Metrics, new: list[NewJob], existing: Iterable[str]) -> None:
    skipped = set(existing)
    for queue, n in Counter(job.queue for job in new if job.id not in skipped).items():
        metrics.job_enqueued(queue, n)


#: A batch at least this large gives its freed memory back (see memory.py).
TRIM_AFTER_JOBS = 1000
