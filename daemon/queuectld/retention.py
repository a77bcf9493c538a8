"""Retention: which ended jobs have expired (pure), their log files, and the pruner service.

Each ended state has a retention key (`retain-completed`, `retain-canceled`, `retain-dead`;
0 keeps forever). The pruner deletes what expired in small batches (`BATCH` jobs, one short
write transaction each, timed), lets the scheduler's own writes in between, removes the log
files of what it deleted after each commit, and then, on SQLite, gives free pages back to the
file system a step at a time. A crash between a commit and the removal of its files leaves at
worst orphan files: the sweep (`stale_logs`, at start and every `SWEEP_EVERY_S`) removes log
files whose job is gone, or whose run the job (replaced since) has not reached. It is also what
removes, on each host, the files of jobs that another daemon sharing the store pruned.

A job some job that has not ended depends on is never pruned (the store's rule): deleting it
would cancel that dependent. Several daemons may prune one PostgreSQL database at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import statistics
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from queuectl import protocol as p
from queuectl.errors import InvalidValue
from queuectld import runner
from queuectld.jobs import TERMINAL_STATES, JobState
from queuectld.maintenance import Service
from queuectld.store.base import CleanFilter, Pruned
from queuectld.store_threads import StoreThreads

if TYPE_CHECKING:
    from queuectld.handlers import Context, Handler

log = logging.getLogger("queuectld.retention")

#: The retention key of each ended state.
RETAIN_KEYS: dict[JobState, str] = {
    JobState.COMPLETED: "retain-completed",
    JobState.CANCELED: "retain-canceled",
    JobState.DEAD: "retain-dead",
}
#: A CleanResult lists the ids of the first this many jobs (as handlers.MAX_COUNT_IDS).
MAX_CLEAN_IDS = 1000
#: Jobs per prune transaction (also `jobs clean`'s, as the DLQ's bulk actions): ~10-20 ms of write lock on SQLite (see the README's figures), so a
#: claim queued behind one waits about as long as behind one turn.
BATCH = 500
#: A pass ends after this long (wall time, batches and pauses) and the next one starts at once:
#: the other maintenance services (lease renewal) run in between, never held up longer.
PASS_BUDGET_S = 0.5
#: Between batches the pruner sleeps this long, so the scheduler's turns (queued in the same
#: writer thread) run between them, not after the whole pass.
YIELD_S = 0.005
#: The pass runs at most this often, and at least twice per shortest retention (>= MIN_INTERVAL_S).
INTERVAL_S = 60.0
MIN_INTERVAL_S = 1.0
#: SQLite: free pages kept for new jobs (a fraction of the file), and pages given back per step.
KEEP_FREE_FRACTION = 0.10
RECLAIM_STEP_PAGES = 2000
#: How often the log-dir sweep looks for orphan files; files younger than SWEEP_MIN_AGE_S are
#: left alone (an attempt may just have opened one for a job a concurrent replace recreated).
SWEEP_EVERY_S = 600.0
SWEEP_MIN_AGE_S = 60.0
#: Ids asked of the store per read during the sweep.
SWEEP_CHUNK = 2000

#: A per-attempt file in the logs dir: `<id>.<run>.log` (output) or `<id>.<run>.snooze`.
_ATTEMPT_FILE = re.compile(r"^(?P<id>[A-Za-z0-9._:-]{1,128})\.(?P<run>[0-9]{1,9})\.(?:log|snooze)$")


def cutoffs(config: Mapping[str, Any], now: float) -> list[tuple[JobState, float]]:
    """Each ended state with a retention (not 0) and the time before which its jobs expired."""
    out: list[tuple[JobState, float]] = []
    for state, key in RETAIN_KEYS.items():
        keep_s = float(config.get(key) or 0)
        if keep_s > 0:
            out.append((state, now - keep_s))
    return out


def pass_interval(config: Mapping[str, Any], longest_s: float = INTERVAL_S) -> float:
    """How long until the next pass: `longest_s`, or half the shortest retention if that is
    shorter (a 1m retention keeps jobs 1 to 1.5 minutes), never under MIN_INTERVAL_S."""
    kept = [float(config.get(key) or 0) for key in RETAIN_KEYS.values()]
    shortest = min((k for k in kept if k > 0), default=longest_s * 2)
    return max(MIN_INTERVAL_S, min(longest_s, shortest / 2))


def attempt_files(logs_dir: Any, job_id: str, run: int) -> list[str]:
    """Every per-attempt file a job with `run` attempts may have (output and snooze)."""
    files = []
    for attempt in range(1, run + 1):
        files.append(runner.log_path(logs_dir, job_id, attempt))
        files.append(runner.snooze_path(logs_dir, job_id, attempt))
    return files


def remove_job_files(logs_dir: Any, jobs: Iterable[tuple[str, int]]) -> int:
    """Remove the per-attempt files of each (id, run); returns how many files were removed.
    Runs off the event loop (hundreds of unlinks)."""
    removed = 0
    for job_id, run in jobs:
        for path in attempt_files(logs_dir, job_id, run):
            try:
                os.unlink(path)
                removed += 1
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cannot remove %s: %s", path, exc.strerror or exc)
    return removed


def attempt_files_in(logs_dir: Any, older_than: float) -> dict[str, list[tuple[int, str]]]:
    """The per-attempt files of the logs dir last modified before `older_than` (wall clock), by
    job id: (run, path). Other files are not looked at."""
    found: dict[str, list[tuple[int, str]]] = {}
    try:
        entries = os.scandir(logs_dir)
    except FileNotFoundError:
        return found
    with entries:
        for entry in entries:
            m = _ATTEMPT_FILE.match(entry.name)
            if m is None:
                continue
            try:
                if entry.stat(follow_symlinks=False).st_mtime >= older_than:
                    continue
            except FileNotFoundError:
                continue
            found.setdefault(m["id"], []).append((int(m["run"]), entry.path))
    return found


def stale(files: Mapping[str, list[tuple[int, str]]], runs: Mapping[str, int]) -> list[str]:
    """The files whose job is gone (not in `runs`) or that belong to a run the job has not
    started (a replaced job's: the new one started fewer, or none yet). Pure."""
    out: list[str] = []
    for job_id, held in files.items():
        run = runs.get(job_id)
        out.extend(path for attempt, path in held if run is None or attempt > run)
    return out


def percentile(values: Iterable[float], q: float) -> float:
    """The q-quantile (0..1) of `values` (0 for none)."""
    data = sorted(values)
    if not data:
        return 0.0
    return data[min(len(data) - 1, int(q * len(data)))]


@dataclass
class PruneStats:
    """What the pruner did since the daemon started: jobs deleted per state, files removed,
    and the duration of each batch's transaction (the last 10,000 kept)."""

    jobs: dict[str, int]
    files: int = 0
    passes: int = 0
    batch_s: deque[float] | None = None
    reclaim_s: deque[float] | None = None

    def summary(self) -> dict[str, Any]:
        """The counts, and the batch and reclaim transaction times as p50 / max in ms."""
        batches = list(self.batch_s or ())
        reclaims = list(self.reclaim_s or ())
        return {
            "jobs": dict(self.jobs), "files": self.files, "passes": self.passes, "batches": len(batches),
            "batch_ms_p50": round(statistics.median(batches) * 1000, 2) if batches else 0.0,
            "batch_ms_max": round(max(batches) * 1000, 2) if batches else 0.0,
            "reclaim_ms_p50": round(statistics.median(reclaims) * 1000, 2) if reclaims else 0.0,
            "reclaim_ms_max": round(max(reclaims) * 1000, 2) if reclaims else 0.0,
        }


def _timed(fn: Any, *args: Any) -> tuple[Any, float]:
    """fn(*args) and how long it took (in the store's thread: the transaction, not the queue)."""
    started = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - started


async def prune_batch(db: StoreThreads, logs_dir: Any, where: CleanFilter, limit: int,
                      stats: PruneStats | None = None) -> list[Pruned]:
    """One prune transaction (timed into `stats`), then, after its commit, the removal of its
    jobs' files (off the event loop)."""
    gone, took_s = await db.write(_timed, db.store.prune, where, limit)
    if stats is not None:
        assert stats.batch_s is not None
        stats.batch_s.append(took_s)
        stats.jobs[where.state.value] = stats.jobs.get(where.state.value, 0) + len(gone)
    if gone:
        removed = await asyncio.to_thread(remove_job_files, logs_dir, [(p.id, p.run) for p in gone])
        if stats is not None:
            stats.files += removed
    return list(gone)


class Pruner(Service):
    """Deletes expired ended jobs and their log files (see the module docstring)."""

    name = "pruner"

    def __init__(self, db: StoreThreads, config: Mapping[str, Any], logs_dir: Any, *,
                 interval_s: float = INTERVAL_S, monotonic: Any = time.monotonic, wall: Any = time.time) -> None:
        super().__init__(interval_s)
        self.db = db
        self.config = config
        self.logs_dir = logs_dir
        self.longest_s = interval_s
        self._monotonic = monotonic
        self._wall = wall
        self._swept_at: float | None = None
        self.stats = PruneStats({s.value: 0 for s in RETAIN_KEYS}, batch_s=deque(maxlen=10_000),
                                reclaim_s=deque(maxlen=10_000))

    async def run(self, now: float) -> float | None:
        """One pass: prune each state down to its cutoff, reclaim space, sweep if due."""
        deleted, more = await self.prune(now)
        if deleted:
            await self.reclaim()
        if self._swept_at is None or self._monotonic() - self._swept_at >= SWEEP_EVERY_S:
            await self.sweep()
            self._swept_at = self._monotonic()
        self.stats.passes += 1
        return 0.0 if more else pass_interval(self.config, self.longest_s)

    async def prune(self, now: float) -> tuple[int, bool]:
        """Delete expired jobs, batch by batch; returns how many and whether some are left
        (the pass stopped after PASS_BUDGET_S)."""
        total = 0
        ends_at = self._monotonic() + PASS_BUDGET_S
        by_state: dict[str, int] = {}
        for state, before in cutoffs(self.config, now):
            while True:
                gone = await self.batch(CleanFilter(state, finished_before=before))
                total += len(gone)
                by_state[state.value] = by_state.get(state.value, 0) + len(gone)
                if len(gone) < BATCH:
                    break
                if self._monotonic() >= ends_at:
                    self._log_pass(by_state)
                    return total, True
                await asyncio.sleep(YIELD_S)  # the scheduler's writes go in between
        self._log_pass(by_state)
        return total, False

    async def batch(self, where: CleanFilter, limit: int = BATCH) -> list[Pruned]:
        """One prune transaction (timed), then the removal of its jobs' files."""
        return await prune_batch(self.db, self.logs_dir, where, limit, self.stats)

    def _log_pass(self, by_state: dict[str, int]) -> None:
        done = {state: n for state, n in by_state.items() if n}
        if done:
            summary = self.stats.summary()
            log.info("retention: deleted %s job(s) and their logs; prune transactions p50 %.1f ms, max %.1f ms",
                     ", ".join(f"{n} {state}" for state, n in done.items()), summary["batch_ms_p50"],
                     summary["batch_ms_max"])

    async def reclaim(self) -> None:
        """SQLite: give the free pages beyond KEEP_FREE_FRACTION back, a step per transaction;
        PostgreSQL with autovacuum off: vacuum. In the store's background thread: the writer
        thread (claims) never waits behind it."""
        ends_at = self._monotonic() + PASS_BUDGET_S  # what is left goes at the next pass
        while self._monotonic() < ends_at:
            left, took_s = await self.db.background(_timed, self.db.store.reclaim_space, RECLAIM_STEP_PAGES,
                                                    KEEP_FREE_FRACTION)
            assert self.stats.reclaim_s is not None
            self.stats.reclaim_s.append(took_s)
            if left <= 0:
                return
            await asyncio.sleep(YIELD_S)

    async def sweep(self) -> int:
        """Remove orphan per-attempt files (their job gone, or a run it has not started);
        returns how many."""
        older_than = self._wall() - SWEEP_MIN_AGE_S
        files = await asyncio.to_thread(attempt_files_in, self.logs_dir, older_than)
        ids = sorted(files)
        orphans: list[str] = []
        for i in range(0, len(ids), SWEEP_CHUNK):
            chunk = ids[i:i + SWEEP_CHUNK]
            runs = await self.db.read(self.db.store.runs_of, chunk)
            orphans.extend(stale({job_id: files[job_id] for job_id in chunk}, runs))
        if orphans:
            await asyncio.to_thread(_unlink_all, orphans, older_than)
            log.info("retention: removed %d log file(s) whose job is gone", len(orphans))
        return len(orphans)


def _unlink_all(paths: Iterable[str], older_than: float) -> None:
    for path in paths:
        try:
            # Looked at again: an attempt of a job recreated under the same id since the store
            # was read may just have opened this path (O_TRUNC), and its output is not stale.
            if os.stat(path).st_mtime >= older_than:
                continue
        except FileNotFoundError:
            continue
        runner.remove_quietly(path)


# -- job.clean -----------------------------------------------------------------------------------


async def clean(ctx: Context, params: p.CleanParams) -> p.CleanResult:
    """job.clean: delete ended jobs by state, age (default: each state's retention), queue and
    label, with their attempts and log files, one transaction per BATCH jobs (as the pruner
    does); `dry_run` only counts. Only jobs that ended before the request began are taken."""
    states = list(dict.fromkeys(params.states or RETAIN_KEYS))
    not_ended = [s.value for s in states if s not in TERMINAL_STATES]
    if not_ended:
        raise InvalidValue(key="--state", detail=f"{', '.join(not_ended)} jobs have not ended; clean takes "
                           "completed, canceled or dead jobs (cancel or delete others first). Nothing was removed")
    now = ctx.now()
    wheres: list[CleanFilter] = []
    for state in states:
        keep_s = params.older_than_s if params.older_than_s is not None else float(
            ctx.config.get(RETAIN_KEYS[state]) or 0)
        if params.older_than_s is None and keep_s <= 0:
            continue  # kept forever, and no age was asked for
        wheres.append(CleanFilter(state, finished_before=now - keep_s, queue=params.queue, label=params.label))
    counts = {state.value: 0 for state in states}
    taken: list[str] = []
    for where in wheres:
        if params.dry_run:
            count, ids = await ctx.db.read(ctx.db.store.prune_preview, where, max(0, MAX_CLEAN_IDS - len(taken)))
            counts[where.state.value] = count
            taken.extend(ids)
            continue
        while True:
            gone = await prune_batch(ctx.db, ctx.settings.logs_dir, where, BATCH, ctx.retention)
            counts[where.state.value] += len(gone)
            taken.extend(job.id for job in gone[: max(0, MAX_CLEAN_IDS - len(taken))])
            if len(gone) < BATCH:
                break
    return p.CleanResult(count=sum(counts.values()), counts=counts, ids=taken, dry_run=params.dry_run)


HANDLERS: dict[str, Handler] = {"job.clean": clean}
"""The retention methods, merged into handlers.HANDLERS."""
