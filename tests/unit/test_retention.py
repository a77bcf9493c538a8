"""Retention's pure parts: which states expire when, how often the pruner passes, which files
in the logs dir are stale; and the sweep's listing of a real directory."""

from __future__ import annotations

import os
import time
from pathlib import Path

from queuectld.jobs import JobState
from queuectld.retention import (
    MIN_INTERVAL_S,
    attempt_files,
    attempt_files_in,
    cutoffs,
    pass_interval,
    remove_job_files,
    stale,
)

DEFAULTS = {"retain-completed": 7 * 86400, "retain-canceled": 7 * 86400, "retain-dead": 30 * 86400}


def test_cutoffs_are_now_minus_each_retention_and_zero_keeps_forever() -> None:
    assert cutoffs(DEFAULTS, 1_000_000.0) == [(JobState.COMPLETED, 1_000_000.0 - 7 * 86400),
                                              (JobState.CANCELED, 1_000_000.0 - 7 * 86400),
                                              (JobState.DEAD, 1_000_000.0 - 30 * 86400)]
    assert cutoffs({**DEFAULTS, "retain-dead": 0, "retain-canceled": 0}, 100.0) == [
        (JobState.COMPLETED, 100.0 - 7 * 86400)]
    assert cutoffs({"retain-completed": 0, "retain-canceled": 0, "retain-dead": 0}, 5.0) == []


def test_a_short_retention_prunes_more_often_never_too_often() -> None:
    assert pass_interval(DEFAULTS) == 60.0
    assert pass_interval({**DEFAULTS, "retain-completed": 60}) == 30.0
    assert pass_interval({**DEFAULTS, "retain-completed": 0.5}) == MIN_INTERVAL_S
    assert pass_interval({"retain-completed": 0, "retain-canceled": 0, "retain-dead": 0}) == 60.0
    assert pass_interval(DEFAULTS, longest_s=0.5) == MIN_INTERVAL_S


def test_stale_files_are_those_of_gone_jobs_and_of_runs_not_started() -> None:
    files = {"gone": [(1, "gone.1.log")], "replaced": [(1, "replaced.1.log"), (2, "replaced.2.log")],
             "fresh": [(1, "fresh.1.log")], "ran-twice": [(1, "ran-twice.1.log"), (2, "ran-twice.2.snooze")]}
    runs = {"replaced": 1, "fresh": 0, "ran-twice": 2}
    assert sorted(stale(files, runs)) == ["fresh.1.log", "gone.1.log", "replaced.2.log"]


def test_the_sweep_lists_only_old_attempt_files(tmp_path: Path) -> None:
    old = time.time() - 3600
    for name in ["a.1.log", "a.2.snooze", "b.c.3.log", "keeper.log", "x.log", "a.1.log.tmp"]:
        (tmp_path / name).write_text("x")
        os.utime(tmp_path / name, (old, old))
    (tmp_path / "young.1.log").write_text("x")
    got = attempt_files_in(tmp_path, time.time() - 60)
    assert {k: sorted(run for run, _ in v) for k, v in got.items()} == {"a": [1, 2], "b.c": [3]}
    assert attempt_files_in(tmp_path / "missing", time.time()) == {}


def test_remove_job_files_removes_every_run_and_counts(tmp_path: Path) -> None:
    for name in ["j.1.log", "j.2.log", "j.2.snooze", "j.3.log", "k.1.log"]:
        (tmp_path / name).write_text("x")
    assert attempt_files(tmp_path, "j", 2) == [f"{tmp_path}/j.1.log", f"{tmp_path}/j.1.snooze",
                                               f"{tmp_path}/j.2.log", f"{tmp_path}/j.2.snooze"]
    assert remove_job_files(tmp_path, [("j", 2), ("none", 1)]) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["j.3.log", "k.1.log"]
