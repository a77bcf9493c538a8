"""The daemon's side of the job keeper without a keeper: deadlines from leases, and how each of the
keeper's ends becomes an Outcome (keeper_link.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from queuectld.jobs import Job, JobState, OutcomeKind
from queuectld.keeper_link import (
    KEEPER_LOST_ERROR,
    KeeperAttempt,
    KeeperLink,
    deadline_grace,
    deadline_in,
    deadline_margin,
)
from queuectld.keeper_wire import DEADLINE_ERROR, Ended, EndKind
from queuectld.runner import KillReason


@pytest.mark.parametrize(("lease_s", "kill_grace_s"), [(30, 5), (30, 60), (2, 5), (1.5, 1), (600, 0)])
def test_a_deadline_kill_ends_with_its_sigkill_before_the_lease_expires(lease_s: float, kill_grace_s: float) -> None:
    grace = deadline_grace(lease_s, kill_grace_s)
    assert 0 <= grace <= kill_grace_s
    for lease_left in (lease_s, lease_s * 0.9, lease_s * 0.7):  # as a renewal (or the claim) leaves it
        deadline = deadline_in(lease_left, lease_s, grace)
        assert deadline > 0
        # SIGTERM at the deadline, SIGKILL a grace later: still a margin before the lease runs out.
        assert deadline + grace <= lease_left - deadline_margin(lease_s) + 1e-9


def test_the_deadline_grace_is_the_kill_grace_when_the_lease_leaves_room_for_it() -> None:
    assert deadline_grace(30, 5) == 5
    assert deadline_grace(30, 60) == pytest.approx((30 - 1) / 4)  # capped: the SIGKILL must come in time
    assert deadline_margin(30) == 1.0 and deadline_margin(2) == pytest.approx(0.2)


def test_a_spent_lease_still_gives_a_short_positive_deadline() -> None:
    assert 0 < deadline_in(-5, 30, 5) < 0.1


def _attempt(tmp_path: Path, **overrides: Any) -> tuple[KeeperAttempt, list[Any]]:
    job = Job(id="j", command="true", state=JobState.PROCESSING, attempts=2, max_retries=3, priority=0, timeout_s=2.0,
              next_run_at=None, created_at=0.0, updated_at=0.0, run=3)
    fields: dict[str, Any] = {"timeout_s": 2.0, "kill_grace_s": 1.0, "output_max_bytes": 1000, "snooze_exit": None,
                              "snooze_file": str(tmp_path / "j.3.snooze"), "cwd": str(tmp_path), "lease_from": 0.0}
    fields.update(overrides)
    attempt = KeeperAttempt(KeeperLink(tmp_path, 30.0), job, "d-1", str(tmp_path / "j.3.log"), **fields)
    done: list[Any] = []
    attempt.adopt(lambda a, outcome: done.append(outcome), pid=123)
    return attempt, done


@pytest.mark.parametrize(("ended", "kind", "error"), [
    (Ended("j/3", EndKind.EXIT, exit_code=0), OutcomeKind.EXIT, None),
    (Ended("j/3", EndKind.EXIT, exit_code=4), OutcomeKind.EXIT, None),
    (Ended("j/3", EndKind.SIGNAL, signal=9), OutcomeKind.SIGNAL, None),
    (Ended("j/3", EndKind.TIMEOUT, signal=15, reason="timed out after 2s"), OutcomeKind.TIMEOUT, "timed out after 2s"),
    (Ended("j/3", EndKind.DEADLINE, signal=15, reason=DEADLINE_ERROR), OutcomeKind.KILLED,
     f"killed by its job keeper: {DEADLINE_ERROR}"),
    (Ended("j/3", EndKind.SPAWN_FAILED, reason="cwd /x does not exist"), OutcomeKind.SPAWN_FAILED,
     "cwd /x does not exist"),
    (Ended("j/3", EndKind.KILLED, signal=15, reason="keeper shutdown"), OutcomeKind.KILLED,
     "killed by its job keeper: keeper shutdown"),
])
def test_each_end_of_the_keeper_is_the_outcome_the_runner_would_give(tmp_path: Path, ended: Ended,
                                                                     kind: OutcomeKind, error: str | None) -> None:
    attempt, done = _attempt(tmp_path)
    attempt.on_end(ended)
    [outcome] = done
    assert (outcome.kind, outcome.exit_code, outcome.signal, outcome.error) == (kind, ended.exit_code, ended.signal, error)
    assert attempt.ended


@pytest.mark.parametrize(("reason", "kind"), [(KillReason.CANCELED, OutcomeKind.CANCELED),
                                              (KillReason.REQUEUE, OutcomeKind.REQUEUED),
                                              (KillReason.LEASE_LOST, OutcomeKind.KILLED)])
def test_a_kill_of_ours_decides_the_outcome_only_when_the_shell_died_of_it(tmp_path: Path, reason: KillReason,
                                                                          kind: OutcomeKind) -> None:
    killed, done = _attempt(tmp_path)
    killed.kill_reason = reason  # as `kill` sets it (without a keeper to send it to)
    killed.on_end(Ended("j/3", EndKind.KILLED, signal=15, reason="whatever we sent"))
    assert done[0].kind is kind

    exited, done = _attempt(tmp_path)
    exited.kill_reason = reason
    exited.on_end(Ended("j/3", EndKind.EXIT, exit_code=0))  # it had exited by itself: its own outcome
    assert (done[0].kind, done[0].exit_code) == (OutcomeKind.EXIT, 0)


def test_a_snoozing_exit_reads_and_removes_the_snooze_file(tmp_path: Path) -> None:
    attempt, done = _attempt(tmp_path, snooze_exit=75)
    Path(attempt.snooze_file).write_text("5m\n")
    attempt.on_end(Ended("j/3", EndKind.EXIT, exit_code=75))
    assert (done[0].kind, done[0].snooze_s) == (OutcomeKind.SNOOZED, 300.0)
    assert not Path(attempt.snooze_file).exists()


def test_an_attempt_ends_once_and_a_lost_keeper_says_so(tmp_path: Path) -> None:
    attempt, done = _attempt(tmp_path)
    attempt.on_keeper_lost("connection reset")
    attempt.on_end(Ended("j/3", EndKind.EXIT, exit_code=0))  # too late: it has ended
    [outcome] = done
    assert outcome.kind is OutcomeKind.KILLED
    assert outcome.error == KEEPER_LOST_ERROR.format(why="connection reset")
