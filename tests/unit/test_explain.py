"""explain: the one reason a waiting job is not running, the first that applies in a fixed order,
with its message; a table of (job, queue, dependencies, daemons) -> blocker."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from queuectl.protocol import BlockerKind
from queuectld.explain import explain, in_words
from queuectld.jobs import Job, JobState
from queuectld.store.base import DaemonInfo, Dependency, QueueInfo

NOW = datetime(2026, 12, 2, 17, 59, 18, tzinfo=UTC).timestamp()

JOB = Job(id="j1", command="true", state=JobState.PENDING, attempts=0, max_retries=3, priority=0, timeout_s=None,
          next_run_at=NOW - 1, created_at=NOW - 10, updated_at=NOW - 10)
QUEUE = QueueInfo(name="build", concurrency=None, paused=False, pending=1)
LIMITED = QueueInfo(name="build", concurrency=2, paused=False, pending=3, running=2)


def daemon(name: str, slots: int, active: int, claiming: bool = True) -> DaemonInfo:
    return DaemonInfo(id=name, host="h", pid=1, proc_start=None, started_at=NOW - 100, heartbeat_at=NOW,
                      slots=slots, active=active, claiming=claiming)


IDLE = [daemon("a", 4, 1)]
BUSY = [daemon("a", 2, 2), daemon("b", 2, 2)]
DEP_RUNNING = [Dependency("build-1", False, JobState.PROCESSING)]

#: (case, job changes, queue, dependencies, daemons, expected kind, expected message)
CASES: list[tuple[str, dict[str, Any], QueueInfo, list[Dependency], list[DaemonInfo], BlockerKind, str]] = [
    ("ready", {}, QUEUE, [], IDLE, BlockerKind.READY, "ready, starting now"),
    ("held first of all", {"held": True, "deps_left": 1, "next_run_at": NOW + 42}, replace(LIMITED, paused=True),
     DEP_RUNNING, [], BlockerKind.HELD, "held: release it with `queuectl release j1`"),
    ("dependency before the run time", {"deps_left": 1, "next_run_at": NOW + 42}, QUEUE, DEP_RUNNING, IDLE,
     BlockerKind.DEPENDENCY, "waiting for dependency build-1 (processing)"),
    ("the first unsatisfied dependency",
     {"deps_left": 1}, QUEUE,
     [Dependency("a", False, JobState.COMPLETED), Dependency("b", True, JobState.DEAD),
      Dependency("c", True, JobState.FAILED)], IDLE,
     BlockerKind.DEPENDENCY, "waiting for dependency c (failed)"),
    ("a dependency restarted after it satisfied the job holds nothing", {"deps_left": 0}, QUEUE,
     [Dependency("a", False, JobState.PENDING)], IDLE, BlockerKind.READY, "ready, starting now"),
    ("an edge the listing missed", {"deps_left": 2}, QUEUE, [], IDLE, BlockerKind.DEPENDENCY,
     "waiting for 2 dependency(ies)"),
    ("not before, before the queue", {"next_run_at": NOW + 42}, replace(LIMITED, paused=True), [], IDLE,
     BlockerKind.NOT_BEFORE, "not before 2026-12-02 18:00:00 UTC (in 42 s)"),
    ("a failed job waits for its retry", {"state": JobState.FAILED, "next_run_at": NOW + 41.2}, QUEUE, [], IDLE,
     BlockerKind.NOT_BEFORE, "not before 2026-12-02 17:59:59 UTC (in 42 s)"),
    ("paused before full", {}, replace(LIMITED, paused=True), [], IDLE, BlockerKind.QUEUE_PAUSED,
     "queue build is paused: resume it with `queuectl queue resume build`"),
    ("full", {}, LIMITED, [], IDLE, BlockerKind.QUEUE_FULL, "queue at its concurrency (2/2)"),
    ("over its limit (lowered while running)", {}, replace(LIMITED, concurrency=1), [], IDLE,
     BlockerKind.QUEUE_FULL, "queue at its concurrency (2/1)"),
    ("room in a limited queue", {}, replace(LIMITED, running=1), [], IDLE, BlockerKind.READY, "ready, starting now"),
    ("no daemon", {}, QUEUE, [], [], BlockerKind.NO_DAEMON, "no daemon is claiming (all stopped or none running)"),
    ("every daemon stopped claiming", {}, QUEUE, [], [daemon("a", 4, 0, claiming=False)], BlockerKind.NO_DAEMON,
     "no daemon is claiming (all stopped or none running)"),
    ("slots busy", {}, QUEUE, [], BUSY, BlockerKind.SLOTS_BUSY, "every slot busy on every live daemon (4/4)"),
    ("a stopped daemon's slots do not count", {}, QUEUE, [], [daemon("a", 2, 2), daemon("b", 8, 0, claiming=False)],
     BlockerKind.SLOTS_BUSY, "every slot busy on every live daemon (2/2)"),
    ("one free slot anywhere", {}, QUEUE, [], [daemon("a", 2, 2), daemon("b", 2, 1)], BlockerKind.READY,
     "ready, starting now"),
]


@pytest.mark.parametrize(("job_changes", "queue", "deps", "daemons", "kind", "message"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_first_reason_that_applies(job_changes: dict[str, Any], queue: QueueInfo, deps: list[Dependency],
                                       daemons: list[DaemonInfo], kind: BlockerKind, message: str) -> None:
    blocked = explain(replace(JOB, **job_changes), queue, deps, daemons, NOW)
    assert blocked is not None
    assert (blocked.kind, blocked.message) == (kind, message)


@pytest.mark.parametrize("state", [JobState.PROCESSING, JobState.COMPLETED, JobState.DEAD, JobState.CANCELED])
def test_a_job_that_is_not_waiting_has_no_blocker(state: JobState) -> None:
    assert explain(replace(JOB, state=state, held=True), LIMITED, DEP_RUNNING, [], NOW) is None


def test_the_blocker_carries_its_data() -> None:
    dep = explain(replace(JOB, deps_left=1), QUEUE, DEP_RUNNING, IDLE, NOW)
    assert dep is not None and (dep.dependency, dep.dependency_state) == ("build-1", JobState.PROCESSING)
    full = explain(JOB, LIMITED, [], IDLE, NOW)
    assert full is not None and (full.running, full.limit) == (2, 2)
    busy = explain(JOB, QUEUE, [], BUSY, NOW)
    assert busy is not None and (busy.running, busy.limit) == (4, 4)
    later = explain(replace(JOB, next_run_at=NOW + 42), QUEUE, [], IDLE, NOW)
    assert later is not None and later.not_before == datetime(2026, 12, 2, 18, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("seconds", "words"), [(0.2, "in 1 s"), (42, "in 42 s"), (89.5, "in 90 s"),
                                                (90, "in 2 min"), (3600, "in 60 min"), (5400, "in 2 h"),
                                                (47 * 3600, "in 47 h"), (48 * 3600, "in 2 d")])
def test_delays_in_words(seconds: float, words: str) -> None:
    assert in_words(seconds) == words
