"""(2) Batch enqueue: 100,000 jobs through one `queuectl enqueue --file` process, no workers running.

The figure is N / the wall time of that one process, so it includes the client's start-up (about
a Python start) and its parsing of the file: it is what a user sees. With QUEUECTL_BENCH_PG_URL
set, the same batch also goes to a scratch PostgreSQL database.
"""

from __future__ import annotations

import sys
from typing import Any

from bench.daemon import Daemon
from bench.measure import timed_run, write_lines
from bench.report import Figure, Target
from bench.settings import BenchSettings

TARGET = Target(">=", 50_000, " jobs/s")  #: on SQLite (issue 5) and on PostgreSQL (issue 14)


def enqueue_file(settings: BenchSettings, tag: str, db_url: str | None = None) -> dict[str, float]:
    """Enqueue the file once into an empty store with claiming stopped; check every job arrived."""
    n = settings.batch_jobs
    profile = settings.profile_dir / f"batch{tag}.txt" if settings.profile_dir else None
    # The daemon claims from the moment it starts: stop its slots before any job exists.
    with Daemon(1, log_level=settings.log_level, profile_to=profile, db_url=db_url) as d, d.client() as c:
        c.workers_stop()
        jobs = write_lines(d.root / "jobs.txt", "true", n)
        seconds = timed_run(d.cli("enqueue", "--file", str(jobs)))
        counts = c.status()["counts"]
        if counts["pending"] != n:
            raise RuntimeError(f"expected {n} pending jobs after the batch, found {counts}")
        python_s = timed_run([sys.executable, "-c", "pass"])
    return {"jobs": n, "seconds": seconds, "python_start_s": python_s}


def _figure(metric: str, got: dict[str, float], where: str) -> Figure:
    return Figure("2 batch enqueue", metric, got["jobs"] / got["seconds"], "jobs/s", target=TARGET,
                  note=f"wall time of the whole client process ({got['seconds']:.2f} s, of which about "
                  f"{got['python_start_s'] * 1000:.0f} ms is starting Python); workers stopped{where}")


def run(settings: BenchSettings, details: dict[str, Any]) -> list[Figure]:
    """The batch on SQLite, then on PostgreSQL when a server is given."""
    n = settings.batch_jobs
    details["batch"] = got = enqueue_file(settings, "")
    figures = [_figure(f"{n:,} jobs, one `enqueue --file`", got, "")]
    if settings.pg_url:
        from bench.pg import scratch_database

        with scratch_database(settings.pg_url) as url:
            details["batch_pg"] = got = enqueue_file(settings, "-pg", db_url=url)
        figures.append(_figure(f"PostgreSQL, {n:,} jobs, one `enqueue --file`", got, "; a scratch database"))
    return figures
