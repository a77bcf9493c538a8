"""(3) Single enqueue: one `queuectl enqueue --command true` process against `python -c pass`.

Both run from the same interpreter in the same virtual environment, so the ratio is what the
client adds on top of starting Python. The runs are interleaved (python, enqueue, status, python,
...) so that a burst of load on the shared machine hits all three alike; medians are reported.

The client's modules are compiled to bytecode first, as an installed package's are: with
PYTHONDONTWRITEBYTECODE set (as on the machines here) an editable install would otherwise
compile its source on every run, and the figure would measure the compiler.
"""

from __future__ import annotations

import compileall
import sys
from pathlib import Path
from typing import Any

import queuectl
from bench.daemon import Daemon
from bench.measure import median, timed_run
from bench.report import Figure, Target
from bench.settings import BenchSettings

TARGET = Target("<=", 6, "x")


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
    return [
        Figure("3 single enqueue", "`queuectl enqueue --command true`", enq * 1000, "ms", baseline=py * 1000,
               ratio=enq / py, target=TARGET,
               note=f"baseline: `{sys.executable} -c pass`; medians of {settings.single_runs} interleaved runs"),
        Figure("3 single enqueue", "`queuectl status`", st * 1000, "ms", baseline=py * 1000, ratio=st / py),
    ]
