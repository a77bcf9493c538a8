"""Small measuring tools shared by the scenarios: clocks, order statistics, baselines, waits."""

from __future__ import annotations

import math
import os
import resource
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from queuectl.client import Client

#: How often completion is polled with `daemon.status` (one open connection; a counter read).
POLL_S = 0.02

clock = time.perf_counter  #: CLOCK_MONOTONIC: one clock for every interval the bench measures


def median(values: Sequence[float]) -> float:
    """The median (mean of the middle two for an even count)."""
    s = sorted(values)
    if not s:
        return math.nan
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def percentile(values: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile: the smallest value with at least `pct`% of values at or below it."""
    s = sorted(values)
    if not s:
        return math.nan
    rank = max(1, math.ceil(pct / 100 * len(s)))
    return s[rank - 1]


def timed_run(argv: Sequence[str], *, stdin: Path | None = None, env: dict[str, str] | None = None) -> float:
    """Wall seconds of one process from fork to reap; fails loudly if it fails."""
    fh = open(stdin, "rb") if stdin is not None else subprocess.DEVNULL
    try:
        t0 = clock()
        proc = subprocess.run(argv, stdin=fh, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        elapsed = clock() - t0
    finally:
        if stdin is not None:
            fh.close()  # type: ignore[union-attr]
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode(errors='replace')[-2000:]}")
    return elapsed


def children_cpu_s() -> float:
    """CPU seconds (user + system) of every child of this process reaped so far, and theirs."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def process_cpu_s(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) of process `pid` itself, and of the children it has reaped,
    from /proc/PID/stat; (0, 0) once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except FileNotFoundError:
        return 0.0, 0.0
    fields = stat[stat.rfind(b")") + 2 :].split()  # comm may contain spaces: split after it
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    tick = os.sysconf("SC_CLK_TCK")
    return (utime + stime) / tick, (cutime + cstime) / tick


def write_lines(path: Path, line: str, count: int) -> Path:
    """A file of `count` identical lines (jobs for `enqueue --file`, arguments for xargs)."""
    with open(path, "w") as fh:
        fh.write((line + "\n") * count)
    return path


def xargs_seconds(lines: Path, slots: int, command: str = "true") -> float:
    """The baseline: `xargs -P C` forking `/bin/sh -c COMMAND` once per input line.

    Each job of the queue is also `/bin/sh -c COMMAND`, so both sides fork and exec the same shell
    the same number of times; xargs adds next to nothing on top, which is what makes it the bar.
    """
    return timed_run(["xargs", "-P", str(slots), "-n", "1", "/bin/sh", "-c", command], stdin=lines)


class WaitTimeout(RuntimeError):
    """The jobs did not finish in time; `counts` and `at` say how far they got, and when."""

    def __init__(self, message: str, counts: dict[str, int], at: float) -> None:
        super().__init__(message)
        self.counts = counts
        self.at = at


def wait_for(client: Client, left: Callable[[dict[str, int]], int], timeout_s: float,
             poll_s: float = POLL_S) -> tuple[float, dict[str, int]]:
    """Poll `daemon.status` until `left(counts)` (jobs still to finish) is 0; returns the clock time
    that was first seen, and the counts.

    Polls sparingly while much is left (half the time the rest should take at the rate seen so
    far, at most 1 s) and every `poll_s` near the end: the daemon under test shares two cores
    with us, and 50 status calls a second would be load of our making. Raises if jobs end up
    dead (the scenarios' jobs are not meant to) or the timeout passes.
    """
    start = clock()
    deadline = start + timeout_s
    first_left: int | None = None
    while True:
        counts = client.status()["counts"]
        now = clock()
        remaining = left(counts)
        if remaining <= 0:
            return now, counts
        if counts.get("dead"):
            raise RuntimeError(f"{counts['dead']} job(s) went to the dead-letter queue: {counts}")
        if now > deadline:
            raise WaitTimeout(f"timed out after {timeout_s:g}s; counts: {counts}", counts, now)
        if first_left is None:
            first_left = remaining
        rate = (first_left - remaining) / (now - start) if now > start else 0.0
        nap = remaining / rate / 2 if rate > 0 else 0.05  # no progress yet: no estimate
        time.sleep(min(max(nap, poll_s), 1.0))

