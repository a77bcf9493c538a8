"""Cron schedules in the daemon: the handlers of cron.* and the ticker that fires due schedules.

The ticker is a maintenance service (maintenance.py): it sleeps until the earliest `next_fire`
the store keeps (one probe of ix_schedules_next), looks again at most every MAX_SLEEP_S (a peer
sharing the store may have added or fired a schedule), and is woken at once by cron.add and
cron.resume. Times are the store clock's (clock.StoreClock): on PostgreSQL the shared database
clock's estimate, as every other due time. Which slots a due schedule fires is cron.plan's; the
store fires them exactly once per slot (store/schedules.py).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from queuectl import ids
from queuectl import protocol as p
from queuectl.errors import InvalidValue
from queuectld import cron, enqueueing
from queuectld.maintenance import Service
from queuectld.store.base import EnvSnapshot, NewJob, Schedule
from queuectld.views import job_view, ts, ts_of

if TYPE_CHECKING:
    from queuectld.handlers import Context, Handler
    from queuectld.scheduler import Scheduler
    from queuectld.store_threads import StoreThreads

log = logging.getLogger("queuectld.cron")

#: The longest the ticker sleeps without looking at the store (a peer's new schedule, a peer
#: gone before firing one). Shorter than cron.GRACE_S: a slot a dead peer left is still on time.
MAX_SLEEP_S = 5.0
#: JobSpec fields a schedule's job may not have: a fire's job runs at its slot, alone.
_NOT_FOR_CRON = ("id", "delay_s", "after", "after_any", "hold")


class _Defaults:
    """What enqueueing._new_job reads of a handler's Context: the config (its defaults)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config


def local_zone() -> str:
    """The daemon's local time zone as an IANA name: $TZ, else /etc/localtime's target, else UTC."""
    env = os.environ.get("TZ", "").lstrip(":")
    if env:
        try:
            cron.zone(env)
            return env
        except InvalidValue:
            pass
    try:
        target = str(Path("/etc/localtime").resolve())
    except OSError:
        return "UTC"
    if "zoneinfo/" in target:
        name = target.split("zoneinfo/", 1)[1]
        try:
            cron.zone(name)
            return name
        except InvalidValue:
            pass
    return "UTC"


def fire_jobs(config: dict[str, Any], s: Schedule, slots: tuple[float, ...] | list[float | None], now: float
              ) -> tuple[list[NewJob], list[EnvSnapshot]]:
    """The jobs of one fire of `s` (one per slot, each with a fresh id), and their environment."""
    spec = p.JobSpec.model_validate_json(s.job)
    envs = enqueueing.Environments()
    env_id = envs.of(spec.env, spec.clean_env)
    defaults: Any = _Defaults(config)
    new = [enqueueing._new_job(defaults, spec, now, ids.new_stem(now), env_id) for _ in slots]
    return new, list(envs.snapshots.values())


class CronTicker(Service):
    """Fire the schedules that are due, then sleep until the next one is (see the module docstring)."""

    name = "cron"

    def __init__(self, scheduler: Scheduler, db: StoreThreads, config: dict[str, Any]) -> None:
        super().__init__(MAX_SLEEP_S)
        self.scheduler = scheduler
        self.db = db
        self.config = config
        self._warned = False

    async def run(self, now: float) -> float | None:
        """Fire every due schedule once; return how long to sleep."""
        store = self.db.store
        due = await self.db.read(store.cron_due, now)
        if due and not cron.available():
            if not self._warned:
                log.warning("%d cron schedule(s) are due, but this queuectld cannot fire them: "
                            "pip install 'queuectl[cron]' and restart it", len(due))
                self._warned = True
            return None
        for s in due:
            await self.fire(s, now)
        following = await self.db.read(store.cron_next_fire)
        if following is None:
            return None
        return max(0.0, min(MAX_SLEEP_S, following - now))

    async def fire(self, s: Schedule, now: float) -> None:
        """Fire one due schedule: the slots cron.plan picks, in one store transaction."""
        assert s.next_fire is not None
        plan = cron.plan(s.spec, cron.zone(s.tz), s.next_fire, now, s.catch_up, s.max_catch_up)
        new, envs = fire_jobs(self.config, s, plan.fire, now)
        fired = await self.db.write(self.db.store.cron_fire, s.name, s.next_fire, list(zip(plan.fire, new, strict=True)),
                                    plan.next_fire, now, envs, plan.skipped, plan.skip_reason)
        if fired is None:
            log.debug("cron %s: slot %s fired elsewhere (or paused, removed) first", s.name, s.next_fire)
            return
        for snapshot in envs:
            self.scheduler.envs.add(snapshot)
        for slot, job_id in fired.jobs:
            log.info("cron %s: slot %s fired as job %s", s.name, ts_of(slot).isoformat(), job_id)
        if fired.skipped is not None:
            log.info("cron %s: slot %s skipped (%s)", s.name, ts_of(fired.skipped).isoformat(), fired.skip_reason)
        if fired.jobs:
            self.scheduler.metrics.job_enqueued(new[0].queue, len(fired.jobs))
            self.scheduler.notify()


# -- handlers ------------------------------------------------------------------------------------


def cron_view(s: Schedule) -> p.CronView:
    """The wire shape of a schedule (its job's environment by names only)."""
    job = json.loads(s.job)
    env = job.pop("env", None)
    if env is not None:
        job["env_names"] = sorted(env)
    return p.CronView(
        name=s.name, spec=s.spec, tz=s.tz, command=job.get("command", ""), queue=job.get("queue", p.DEFAULT_QUEUE),
        catch_up=s.catch_up, max_catch_up=s.max_catch_up, overlap=s.overlap, paused=s.paused,
        created_at=ts_of(s.created_at), next_fire=None if s.paused else ts(s.next_fire), last_slot=ts(s.last_slot),
        last_fire_at=ts(s.last_fire_at), last_job_id=s.last_job_id, last_job_state=s.last_job_state,
        last_skip_slot=ts(s.last_skip_slot), last_skip_reason=s.last_skip_reason, fires=s.fires, skips=s.skips,
        job=job,
    )


def _wake_ticker(ctx: Context) -> None:
    ctx.scheduler.on_schedules_changed()


async def cron_add(ctx: Context, params: p.CronAddParams) -> p.CronView:
    """cron.add: the spec and zone are checked here (one line of error, nothing stored)."""
    spec = cron.check_spec(params.spec)  # CronUnavailable without croniter
    tz_name = params.tz or local_zone()
    tz = cron.zone(tz_name)
    given = params.job.model_dump(exclude_defaults=True)
    wrong = [name for name in _NOT_FOR_CRON if name in given]
    if wrong:
        raise InvalidValue(key="cron.add", detail=f"a schedule's job takes no {', '.join(wrong)} "
                                                  "(each fire is one job, run at its slot)")
    job = params.job
    enqueueing.encode_rules(job.retry_on_exit, job.no_retry_on_exit, job.retry_on_timeout, job.no_retry_on_signal,
                            "job.")
    now = ctx.now()
    s = Schedule(name=params.name, spec=spec, tz=tz_name, job=job.model_dump_json(exclude_defaults=True),
                 catch_up=params.catch_up, max_catch_up=params.max_catch_up, overlap=params.overlap,
                 created_at=now, next_fire=cron.next_fire(spec, tz, now))
    stored = await ctx.db.write(ctx.db.store.cron_add, s, job.queue)
    _wake_ticker(ctx)
    return cron_view(stored)


async def cron_list(ctx: Context, params: p.EmptyParams) -> p.CronList:
    """cron.list"""
    cron._croniter()
    return p.CronList(schedules=[cron_view(s) for s in await ctx.db.read(ctx.db.store.cron_list)])


async def cron_get(ctx: Context, params: p.CronRef) -> p.CronView:
    """cron.get"""
    cron._croniter()
    return cron_view(await ctx.db.read(ctx.db.store.cron_get, params.name))


async def cron_rm(ctx: Context, params: p.CronRef) -> p.Ack:
    """cron.rm: the jobs it fired stay."""
    cron._croniter()
    await ctx.db.write(ctx.db.store.cron_rm, params.name)
    return p.Ack(message=f"cron schedule {params.name} removed")


async def cron_pause(ctx: Context, params: p.CronRef) -> p.CronView:
    """cron.pause: no daemon fires it until resumed."""
    cron._croniter()
    return cron_view(await ctx.db.write(ctx.db.store.cron_pause, params.name, True, None))


async def cron_resume(ctx: Context, params: p.CronRef) -> p.CronView:
    """cron.resume: from the next slot after now (the pause's slots are not missed ones)."""
    cron._croniter()
    s = await ctx.db.read(ctx.db.store.cron_get, params.name)
    following = cron.next_fire(s.spec, cron.zone(s.tz), ctx.now())
    resumed = await ctx.db.write(ctx.db.store.cron_pause, params.name, False, following)
    _wake_ticker(ctx)
    return cron_view(resumed)


async def cron_run(ctx: Context, params: p.CronRef) -> p.JobView:
    """cron.run: one job of the schedule now (no slot; its next fire is unchanged)."""
    cron._croniter()
    s = await ctx.db.read(ctx.db.store.cron_get, params.name)
    now = ctx.now()
    [new], envs = fire_jobs(ctx.config, s, [None], now)
    await ctx.db.write(ctx.db.store.cron_run, s.name, new, now, envs)
    for snapshot in envs:
        ctx.scheduler.envs.add(snapshot)
    ctx.scheduler.notify()
    return job_view(await ctx.db.read(ctx.db.store.get, new.id))


HANDLERS: dict[str, Handler] = {
    "cron.add": cron_add,
    "cron.list": cron_list,
    "cron.get": cron_get,
    "cron.rm": cron_rm,
    "cron.pause": cron_pause,
    "cron.resume": cron_resume,
    "cron.run": cron_run,
}
