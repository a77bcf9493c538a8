"""(1) End to end: N jobs of `true` at C slots against `xargs -P C` forking `sh -c true` N times.

The clock starts before the `queuectl enqueue --file` process is forked (so enqueueing is inside the
measurement, as a user would experience it) and stops when `daemon.status` first shows all N
completed. The daemon is started before the clock: a queue is a long-running service.

Beside the rates, CPU time per job is recorded for both sides (the daemon's own, its jobs' shells,
the enqueue client; xargs with its shells). CPU per job is steadier than wall time on a shared
machine and says whether the queue is slow because it burns CPU or because it waits.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from bench.daemon import Daemon
from bench.measure import children_cpu_s, clock, median, timed_run, wait_for, write_lines, xargs_seconds
from bench.report import Figure, Target
from bench.settings import BenchSettings

TARGET = Target(">=", 0.75, "x")


def queue_run(n: int, slots: int, settings: BenchSettings, tag: str, db_url: str | None = None) -> dict[str, float]:
    """Wall seconds from forking the enqueue client until all N `true` jobs are completed, and CPU
    (`db_url`: on that PostgreSQL database, else SQLite)."""
    profile = settings.profile_dir / f"e2e-c{slots}-{tag}.txt" if settings.profile_dir else None
    with Daemon(slots, log_level=settings.log_level, profile_to=profile, db_url=db_url) as d, d.client() as c:
        jobs = write_lines(d.root / "jobs.txt", "true", n)
        c.status()  # connect now, not inside the measurement
        own0, shells0 = d.cpu_s()
        client0 = children_cpu_s()
        t0 = clock()
        timed_run(d.cli("enqueue", "--file", str(jobs)))
        t1, _ = wait_for(c, lambda counts: n - counts["completed"], timeout_s=60 + n / 10)
        own1, shells1 = d.cpu_s()
        return {"wall_s": t1 - t0, "daemon_cpu_s": own1 - own0, "shells_cpu_s": shells1 - shells0,
                "client_cpu_s": children_cpu_s() - client0}


def xargs_run(n: int, slots: int) -> dict[str, float]:
    """Wall and CPU seconds (xargs and its shells) of the baseline."""
    with tempfile.TemporaryDirectory(prefix="qb", dir="/tmp") as tmp:
        args = write_lines(Path(tmp) / "args.txt", "x", n)
        cpu0 = children_cpu_s()
        wall = xargs_seconds(args, slots)
        return {"wall_s": wall, "cpu_s": children_cpu_s() - cpu0}


def run(settings: BenchSettings, details: dict[str, Any]) -> list[Figure]:
    """Both sides at every C, alternating (xargs, queue, xargs, queue, ...) to share the noise."""
    n = settings.e2e_jobs
    figures = []
    for slots in settings.slots:
        xs, qs = [], []
        for r in range(settings.rounds):
            xs.append(xargs_run(n, slots))
            qs.append(queue_run(n, slots, settings, str(r)))
        details[f"e2e_c{slots}"] = {"jobs": n, "slots": slots, "xargs": xs, "queue": qs}
        x_rate = n / median([x["wall_s"] for x in xs])
        q_rate = n / median([q["wall_s"] for q in qs])
        per_job = {k: median([q[k] for q in qs]) / n * 1000 for k in ("daemon_cpu_s", "shells_cpu_s")}
        x_cpu = median([x["cpu_s"] for x in xs]) / n * 1000
        note = (f"CPU per job: daemon and keeper {per_job['daemon_cpu_s']:.2f} ms + its shells {per_job['shells_cpu_s']:.2f} ms; "
                f"xargs with its shells {x_cpu:.2f} ms")
        if slots == settings.slots[0]:
            note = ("baseline: xargs -P C -n 1 /bin/sh -c true; clock from forking `queuectl enqueue --file` to "
                    "all completed (daemon already up). " + note)
        figures.append(Figure("1 end to end", f"N={n:,} `true`, C={slots}", q_rate, "jobs/s", baseline=x_rate,
                              ratio=q_rate / x_rate, target=TARGET, note=note))
        if settings.pg_url:
            figures.append(_postgres_row(n, slots, settings, q_rate, details))
    if not settings.pg_url:
        figures.append(Figure("1 end to end", "PostgreSQL", float("nan"), "jobs/s",
                              note="skipped: set QUEUECTL_BENCH_PG_URL to a server the bench may create a database on"))
    return figures


def _postgres_row(n: int, slots: int, settings: BenchSettings, sqlite_rate: float,
                  details: dict[str, Any]) -> Figure:
    """The same workload on a fresh PostgreSQL database (a scratch one per round), against SQLite."""
    from bench.pg import scratch_database

    assert settings.pg_url is not None
    runs = []
    for r in range(settings.rounds):
        with scratch_database(settings.pg_url) as url:
            runs.append(queue_run(n, slots, settings, f"pg{r}", db_url=url))
    details[f"e2e_pg_c{slots}"] = {"jobs": n, "slots": slots, "queue": runs}
    rate = n / median([q["wall_s"] for q in runs])
    cpu = median([q["daemon_cpu_s"] for q in runs]) / n * 1000
    return Figure("1 end to end", f"PostgreSQL, N={n:,}, C={slots}", rate, "jobs/s", baseline=sqlite_rate,
                  ratio=rate / sqlite_rate,
                  note=f"baseline: queuectl on SQLite, same run; CPU per job: daemon and keeper {cpu:.2f} ms")
