"""(2) Batch enqueue: 100,000 jobs through one `queuectl enqueue --file` process, no workers running.

The figure is N / the wall time of that one process, so it includes the client's start-up (about
a Python start) and its parsing of the file: it is what a user sees.
"""

from __future__ import annotations

import sys
from typing import Any

from bench.daemon import Daemon
from bench.measure import timed_run, write_lines
from bench.report import Figure, Target
from bench.settings import BenchSettings

TARGET = Target(">=", 50_000, " jobs/s")


def run(settings: BenchSettings, details: dict[str, Any]) -> list[Figure]:
    """Enqueue the file once into an empty store with claiming stopped; check every job arrived."""
    n = settings.batch_jobs
    profile = settings.profile_dir / "batch.txt" if settings.profile_dir else None
    # The daemon claims from the moment it starts: stop its slots before any job exists.
    with Daemon(1, log_level=settings.log_level, profile_to=profile) as d, d.client() as c:
        c.workers_stop()
        jobs = write_lines(d.root / "jobs.txt", "true", n)
        seconds = timed_run(d.cli("enqueue", "--file", str(jobs)))
        counts = c.status()["counts"]
        if counts["pending"] != n:
            raise RuntimeError(f"expected {n} pending jobs after the batch, found {counts}")
        python_s = timed_run([sys.executable, "-c", "pass"])
    details["batch"] = {"jobs": n, "seconds": seconds, "python_start_s": python_s}
    return [Figure("2 batch enqueue", f"{n:,} jobs, one `enqueue --file`", n / seconds, "jobs/s",
                   target=TARGET, note=f"wall time of the whole client process ({seconds:.2f} s, of which about "
                   f"{python_s * 1000:.0f} ms is starting Python); workers stopped")]
