"""(3) Single enqueue: one `queuectl enqueue --command true` process against `python -c pass`;
and the `job.enqueue` round trip itself over an open connection, on SQLite (and on PostgreSQL).

Both run from the same interpreter in the same virtual environment, so the ratio is what the
client adds on top of starting Python. The runs are interleaved (python, enqueue, status, python,
...) so that a burst of load on the shared machine hits all three alike; medians are reported.

The client's modules are compiled to bytecode first, as an installed package's are: with
PYTHONDONTWRITEBYTECODE set (as on the machines here) an editable install would otherwise
compile its source on every run, and the figure would measure the compiler.

The round trip is timed from this process, already connected, while the daemon's slots are busy
(each runs a `sleep` that outlasts the measurement, so the enqueued `true` jobs wait and no fork
lands on a measurement): send, the daemon validates, stores and commits, the answer is read.
"""

from __future__ import annotations

import compileall
import sys
from pathlib import Path
from typing import Any

import queuectl
from bench.daemon import Daemon
from bench.measure import clock, median, percentile, timed_run
from bench.report import Figure, Target
from bench.settings import BenchSettings

TARGET = Target("<=", 6, "x")
SQLITE_RT_P50 = Target("<=", 0.3, " ms")  #: issue 14 (huey's in-process enqueue: 0.18 ms)
PG_RT_P50 = Target("<=", 1, " ms")  #: issue 14
BUSY_SLOTS = 2
WARM_UP_CALLS = 20


def round_trips(settings: BenchSettings, db_url: str | None = None) -> list[float]:
    """Seconds of each `job.enqueue` round trip over one open connection, slots busy."""
    with Daemon(BUSY_SLOTS, log_level=settings.log_level, db_url=db_url) as d, d.client() as c:
        for i in range(BUSY_SLOTS):
            c.enqueue("sleep 3600", id=f"busy-{i}")
        deadline = clock() + 30
        while c.status()["counts"]["processing"] < BUSY_SLOTS:
            if clock() > deadline:
                raise RuntimeError(f"the slots did not take the sleep jobs: {c.status()['counts']}")
        times = []
        for i in range(WARM_UP_CALLS + settings.roundtrip_calls):
            t0 = clock()
            c.enqueue("true")
            if i >= WARM_UP_CALLS:
                times.append(clock() - t0)
        c.workers_stop(now=True)  # kill the sleeps; nothing else is claimed before the daemon stops
        return times


def round_trip_figures(label: str, times: list[float], target: Target, note: str = "") -> list[Figure]:
    """p50 (against the issue's target) and p99 rows of one store's round trips."""
    ms = [t * 1000 for t in times]
    return [
        Figure("3 single enqueue", f"job.enqueue round trip, {label}, p50", percentile(ms, 50), "ms",
               target=target, note=note),
        Figure("3 single enqueue", f"job.enqueue round trip, {label}, p99", percentile(ms, 99), "ms"),
    ]


def run(settings: BenchSettings, details: dict[str, Any]) -> list[Figure]:
    """Time the three commands in turn, `single_runs` rounds after one warm-up round."""
    profile = settings.profile_dir / "single.txt" if settings.profile_dir else None
    compileall.compile_dir(str(Path(queuectl.__file__).parent), quiet=1)
    with Daemon(1, log_level=settings.log_level, profile_to=profile) as d, d.client() as c:
        # No slot runs the enqueued `true` jobs: their forks would land on the next measurement.
        c.workers_stop()
        commands = {
            "python": [sys.executable, "-c", "pass"],
            "enqueue": d.cli("enqueue", "--command", "true"),
            "status": d.cli("status"),
        }
        times: dict[str, list[float]] = {k: [] for k in commands}
        for rnd in range(settings.single_runs + 1):
            for name, argv in commands.items():
                elapsed = timed_run(argv, env=d.env)
                if rnd:  # round 0 warms the page cache and the daemon
                    times[name].append(elapsed)
    details["single"] = times
    py, enq, st = (median(times[k]) for k in ("python", "enqueue", "status"))
    rt = round_trips(settings)
    details["roundtrip_sqlite_ms"] = [t * 1000 for t in rt]
    note = (f"{len(rt)} calls over one open connection after {WARM_UP_CALLS} warm-up ones, "
            f"{BUSY_SLOTS} slots busy with `sleep`")
    roundtrip = round_trip_figures("SQLite", rt, SQLITE_RT_P50, note)
    if settings.pg_url:
        from bench.pg import scratch_database

        with scratch_database(settings.pg_url) as url:
            rt_pg = round_trips(settings, db_url=url)
        details["roundtrip_pg_ms"] = [t * 1000 for t in rt_pg]
        roundtrip += round_trip_figures("PostgreSQL", rt_pg, PG_RT_P50, "the same on a scratch PostgreSQL database")
    return [
        Figure("3 single enqueue", "`queuectl enqueue --command true`", enq * 1000, "ms", baseline=py * 1000,
               ratio=enq / py, target=TARGET,
               note=f"baseline: `{sys.executable} -c pass`; medians of {settings.single_runs} interleaved runs"),
        Figure("3 single enqueue", "`queuectl status`", st * 1000, "ms", baseline=py * 1000, ratio=st / py),
        *roundtrip,
    ]
