"""(6) Retry churn: N jobs that fail twice and then succeed, backoff-base 1 and a small backoff-max.

Each job runs `test "$QUEUECTL_ATTEMPT" -ge 3` (`test` is a dash builtin, so an attempt costs one
fork and exec of /bin/sh, like `true`), with max_retries 2: attempts 1 and 2 fail, 3 succeeds.
With backoff-base 1 every wait is min(1 ** n, backoff-max) = backoff-max seconds.

The ideal, measured in the same run: the 3N attempts forked by `xargs -P C` at the same C, plus
the two backoff waits the last job must sit through one after the other. (This ideal is lenient:
a scheduler can overlap other jobs' attempts with those waits, so the true lower bound is
max(3N attempts, N attempts + 2 waits), which is also recorded in the JSON details.)
"""

from __future__ import annotations

import json
from typing import Any

from bench.daemon import Daemon
from bench.measure import clock, timed_run, wait_for, write_lines, xargs_seconds
from bench.report import Figure
from bench.settings import BenchSettings

COMMAND = 'test "$QUEUECTL_ATTEMPT" -ge 3'
FAILURES = 2


def run(settings: BenchSettings, details: dict[str, Any]) -> list[Figure]:
    """Baseline first, then the queue run, then a check that every job took exactly three attempts."""
    n, slots, wait_s = settings.retry_jobs, settings.retry_slots, settings.retry_backoff_s
    profile = settings.profile_dir / "retry.txt" if settings.profile_dir else None
    with Daemon(slots, log_level=settings.log_level, profile_to=profile) as d, d.client() as c:
        attempts_s = xargs_seconds(write_lines(d.root / "args.txt", "x", n * (FAILURES + 1)), slots)
        first_s = xargs_seconds(write_lines(d.root / "args1.txt", "x", n), slots)
        c.config_set("backoff-base", "1")
        c.config_set("backoff-max", f"{wait_s:g}")
        jobs = write_lines(d.root / "jobs.jsonl", json.dumps({"command": COMMAND, "max_retries": FAILURES}), n)
        t0 = clock()
        timed_run(d.cli("enqueue", "--file", str(jobs)))
        t1, _ = wait_for(c, lambda counts: n - counts["completed"], timeout_s=120 + n / 5)
        done = c.list_jobs("completed")
    took = [j["attempts"] for j in done]
    if any(a != FAILURES for a in took):
        raise RuntimeError(f"expected every job to fail exactly {FAILURES} times; got {sorted(set(took))}")
    wall = t1 - t0
    ideal = attempts_s + FAILURES * wait_s
    details["retry"] = {"jobs": n, "slots": slots, "backoff_s": wait_s, "wall_s": wall, "xargs_3n_s": attempts_s,
                        "xargs_n_s": first_s, "ideal_s": ideal,
                        "lower_bound_s": max(attempts_s, first_s + FAILURES * wait_s)}
    return [Figure("6 retry churn", f"N={n:,} x 3 attempts, C={slots}, backoff {wait_s:g} s", wall, "s",
                   baseline=ideal, ratio=wall / ideal,
                   note=f"ideal = xargs -P {slots} forking 3N shells ({attempts_s:.2f} s) + {FAILURES} x "
                   f"{wait_s:g} s backoff; ratio = wall / ideal, lower is better (no target in the issue)")]
