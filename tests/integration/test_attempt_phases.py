"""Real attempts, in process: a real /bin/sh, the real tracker (a cgroup where the machine allows,
else the process tree), a real asyncio loop; no daemon. Each outcome kind, the phases, snoozing,
and the regression tests for the two races of issue 9:

(a) `worker stop --now` arriving after the shell is done (it has ended, or exited by itself and
    only its output drain is left) must leave the real outcome, so a completed job never runs
    again;
(b) a timeout that fires during the output drain (the shell exited 0, a background child keeps
    the pipe open) does not make the attempt a timeout.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import secrets
import signal
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from queuectld import runner, tracking
from queuectld.jobs import Job, JobState, Outcome, OutcomeKind
from queuectld.proctree import ChildReaper
from queuectld.runner import Attempt, KillReason, Phase
from queuectld.tracking import Target, TreeTracker

OWNER = f"test:{os.getpid()}:{secrets.token_hex(4)}"
BASE_ENV = runner.base_environment(dict(os.environ))
SNOOZE_EXIT = 75


@pytest.fixture(scope="module")
def tracker() -> Iterator[tracking.Tracker]:
    """The tracker the daemon would pick here (never the subreaper: this is the test process)."""
    t = tracking.open_tracker(OWNER, ChildReaper())
    yield t
    t.close()


def make_job(command: str, timeout_s: float | None = None) -> Job:
    return Job(id=f"j{secrets.token_hex(4)}", command=command, state=JobState.PROCESSING, attempts=0,
               max_retries=3, priority=0, timeout_s=timeout_s, next_run_at=None, created_at=0.0, updated_at=0.0,
               run=1)


def make_attempt(tmp_path: Path, tracker: Any, command: str, job_id: str | None = None, **kw: Any) -> Attempt:
    job = make_job(command)
    if job_id is not None:
        job = replace(job, id=job_id)
    kw.setdefault("timeout_s", None)
    kw.setdefault("kill_grace_s", 1.0)
    kw.setdefault("output_max_bytes", 1 << 20)
    kw.setdefault("drain_s", 0.1)
    return Attempt(job, OWNER, runner.log_path(tmp_path, job.id, job.run), tracker=tracker, **kw)


class Watched:
    """An attempt started and watched on the running loop; `outcomes` are what on_done got."""

    def __init__(self, attempt: Attempt, on_done: Callable[[Attempt, Outcome], None] | None = None) -> None:
        self.attempt = attempt
        self.outcomes: list[Outcome] = []
        self.done = asyncio.Event()
        self._extra = on_done

    def start(self) -> Watched:
        a = self.attempt
        if a.phase is Phase.SPAWNING and a.pid is None and a._spawn_error is None:
            a.spawn(runner.job_environment(BASE_ENV, a.job, OWNER), 0o022)
        a.watch(self._on_done, lambda _a: None)
        return self

    def _on_done(self, attempt: Attempt, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        if self._extra is not None:
            self._extra(attempt, outcome)
        self.done.set()

    async def outcome(self, timeout_s: float = 10.0) -> Outcome:
        await asyncio.wait_for(self.done.wait(), timeout_s)
        await asyncio.sleep(0)  # anything the end scheduled has run: on_done must not come twice
        assert len(self.outcomes) == 1, self.outcomes
        return self.outcomes[0]


async def until(predicate: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    """Poll on the loop until `predicate()`; fail after `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)


def run_to_end(attempt: Attempt) -> Outcome:
    async def main() -> Outcome:
        return await Watched(attempt).start().outcome()

    return asyncio.run(main())


# -- outcomes of a shell left alone ---------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 3])
def test_a_shell_that_exits_by_itself_is_an_exit_with_its_code(tmp_path: Path, tracker: Any, code: int) -> None:
    attempt = make_attempt(tmp_path, tracker, f"echo out; exit {code}")
    assert run_to_end(attempt) == Outcome(OutcomeKind.EXIT, exit_code=code)
    assert attempt.phase is Phase.ENDED and attempt.ended
    assert attempt.kill_reason is None
    assert attempt.tail_text() == "out\n"


def test_a_shell_killing_itself_with_a_signal_is_that_signal(tmp_path: Path, tracker: Any) -> None:
    outcome = run_to_end(make_attempt(tmp_path, tracker, "kill -USR1 $$; sleep 5"))
    assert outcome == Outcome(OutcomeKind.SIGNAL, signal=signal.SIGUSR1)
    assert outcome.describe() == "killed by SIGUSR1"


def test_the_attempt_is_given_a_snooze_file_of_its_own_beside_its_log(tmp_path: Path, tracker: Any) -> None:
    expected = runner.snooze_path(tmp_path, "snoozer", 1)
    attempt = make_attempt(tmp_path, tracker, f'test "$QUEUECTL_SNOOZE_FILE" = "{expected}"', job_id="snoozer")
    assert run_to_end(attempt) == Outcome(OutcomeKind.EXIT, exit_code=0)


def test_spawn_failed_when_the_tracker_cannot_place_the_attempt(tmp_path: Path) -> None:
    class NoRoomTracker(TreeTracker):
        def place(self) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    broken = NoRoomTracker(ChildReaper())
    try:
        attempt = make_attempt(tmp_path, broken, "true")
        attempt.spawn(runner.job_environment(BASE_ENV, attempt.job, OWNER), 0o022)  # must not raise
        outcome = run_to_end(attempt)
    finally:
        broken.close()
    assert outcome.kind is OutcomeKind.SPAWN_FAILED
    assert outcome.error == f"could not start /bin/sh: {os.strerror(errno.ENOSPC)}"
    assert attempt.pid is None and attempt.phase is Phase.ENDED


def test_output_past_the_cap_keeps_head_and_tail(tmp_path: Path, tracker: Any) -> None:
    attempt = make_attempt(tmp_path, tracker, "head -c 50000 /dev/zero | tr '\\0' x; echo; echo end",
                           output_max_bytes=1024)
    assert run_to_end(attempt) == Outcome(OutcomeKind.EXIT, exit_code=0)
    written = Path(attempt.log_file).read_bytes()
    assert written.startswith(b"x" * 512 + b"\n[queuectl: output truncated at 1024 bytes: ")
    assert written.endswith(b"the last 512 bytes follow]\n" + b"x" * 507 + b"\nend\n"), written[-600:]
    assert attempt.truncated and (attempt.tail_text() or "").endswith("x\nend\n")


def test_the_drain_ends_the_attempt_while_a_background_child_holds_the_pipe(tmp_path: Path, tracker: Any) -> None:
    attempt = make_attempt(tmp_path, tracker, "sleep 30 & echo started; exit 0", drain_s=0.05)
    phases: list[Phase] = []

    async def main() -> Outcome:
        watched = Watched(attempt).start()
        await until(lambda: attempt.phase is not Phase.RUNNING, "the shell to exit")
        phases.append(attempt.phase)
        return await watched.outcome()

    assert asyncio.run(main()) == Outcome(OutcomeKind.EXIT, exit_code=0)
    assert phases == [Phase.DRAINING]
    assert attempt.tail_text() == "started\n"


# -- outcomes of a kill ---------------------------------------------------------------------------


def test_timeout_of_a_shell_that_dies_of_the_kill(tmp_path: Path, tracker: Any) -> None:
    outcome = run_to_end(make_attempt(tmp_path, tracker, "sleep 30", timeout_s=0.05))
    assert outcome == Outcome(OutcomeKind.TIMEOUT, signal=signal.SIGTERM, error="timed out after 0.05s")


def test_timeout_of_a_shell_that_exits_after_the_kill_keeps_its_exit_code(tmp_path: Path, tracker: Any) -> None:
    # The trap is set before the timer can fire: the shell says so on its output first.
    attempt = make_attempt(tmp_path, tracker, "trap 'exit 7' TERM; echo armed; sleep 30 & wait", timeout_s=30)

    async def main() -> Outcome:
        watched = Watched(attempt).start()
        await until(lambda: "armed" in (attempt.tail_text() or ""), "the trap to be set")
        attempt._on_timeout()  # what the timer calls; not waiting 30 s for it
        assert attempt.phase is Phase.KILLING and attempt.kill_reason is KillReason.TIMEOUT
        return await watched.outcome()

    assert asyncio.run(main()) == Outcome(OutcomeKind.TIMEOUT, exit_code=7, error="timed out after 30s")


@pytest.mark.parametrize(("reason", "kind"), [
    (KillReason.CANCELED, OutcomeKind.CANCELED),
    (KillReason.REQUEUE, OutcomeKind.REQUEUED),
    (KillReason.SHUTDOWN, OutcomeKind.REQUEUED),
    (KillReason.LEASE_LOST, OutcomeKind.KILLED),
])
def test_a_kill_while_the_shell_runs_decides_the_outcome(
    tmp_path: Path, tracker: Any, reason: KillReason, kind: OutcomeKind
) -> None:
    attempt = make_attempt(tmp_path, tracker, "sleep 30")

    async def main() -> Outcome:
        watched = Watched(attempt).start()
        assert attempt.phase is Phase.RUNNING
        attempt.kill(reason)
        assert attempt.phase is Phase.KILLING
        attempt.kill(KillReason.TIMEOUT)  # a second kill changes nothing: the first reason stands
        return await watched.outcome()

    outcome = asyncio.run(main())
    assert (outcome.kind, outcome.signal, outcome.exit_code) == (kind, signal.SIGTERM, None)
    assert attempt.kill_reason is reason and outcome.error


def test_what_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path, tracker: Any) -> None:
    attempt = make_attempt(tmp_path, tracker, "trap '' TERM; echo deaf; sleep 30", kill_grace_s=0.05)

    async def main() -> Outcome:
        watched = Watched(attempt).start()
        await until(lambda: "deaf" in (attempt.tail_text() or ""), "the trap to be set")
        attempt.kill(KillReason.CANCELED)
        return await watched.outcome()

    outcome = asyncio.run(main())
    assert (outcome.kind, outcome.signal) == (OutcomeKind.CANCELED, signal.SIGKILL)


def test_a_kill_during_the_spawn_is_applied_once_watched(tmp_path: Path, tracker: Any) -> None:
    attempt = make_attempt(tmp_path, tracker, "sleep 30")
    attempt.spawn(runner.job_environment(BASE_ENV, attempt.job, OWNER), 0o022)
    attempt.kill(KillReason.REQUEUE)  # `worker stop --now` while the turn was spawning it
    assert attempt.phase is Phase.SPAWNING
    outcome = run_to_end(attempt)
    assert (outcome.kind, outcome.signal) == (OutcomeKind.REQUEUED, signal.SIGTERM)


# -- snooze ---------------------------------------------------------------------------------------


def snooze(tmp_path: Path, tracker: Any, command: str, snooze_exit: int | None = SNOOZE_EXIT) -> tuple[Outcome, Attempt]:
    attempt = make_attempt(tmp_path, tracker, command, snooze_exit=snooze_exit)
    outcome = run_to_end(attempt)
    assert not os.path.lexists(attempt.snooze_file), "the snooze file is removed when the attempt ends"
    return outcome, attempt


def test_snooze_with_a_file_asking_five_minutes(tmp_path: Path, tracker: Any) -> None:
    outcome, _ = snooze(tmp_path, tracker, f'echo 5m > "$QUEUECTL_SNOOZE_FILE"; exit {SNOOZE_EXIT}')
    assert outcome == Outcome(OutcomeKind.SNOOZED, exit_code=SNOOZE_EXIT, snooze_s=300.0)
    assert not outcome.counted


def test_snooze_with_no_file_takes_the_configured_delay(tmp_path: Path, tracker: Any) -> None:
    outcome, _ = snooze(tmp_path, tracker, f"exit {SNOOZE_EXIT}")
    assert outcome == Outcome(OutcomeKind.SNOOZED, exit_code=SNOOZE_EXIT, snooze_s=None)


@pytest.mark.parametrize(("write", "why"), [
    ("echo soon >", "'soon' is not a duration"),
    ("head -c 4096 /dev/zero >", "longer than 64 bytes"),
    ("echo 1000d >", "longer than 365 days"),
    ("mkfifo", "not a regular file"),  # a FIFO would block a plain open: it must not
])
def test_snooze_with_a_bad_file_is_logged_and_takes_the_configured_delay(
    tmp_path: Path, tracker: Any, caplog: pytest.LogCaptureFixture, write: str, why: str
) -> None:
    with caplog.at_level(logging.WARNING, logger="queuectld.runner"):
        outcome, attempt = snooze(tmp_path, tracker, f'{write} "$QUEUECTL_SNOOZE_FILE"; exit {SNOOZE_EXIT}')
    assert outcome == Outcome(OutcomeKind.SNOOZED, exit_code=SNOOZE_EXIT, snooze_s=None)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and why in messages[0] and attempt.job.id in messages[0], messages


def test_the_snooze_exit_code_is_an_ordinary_exit_when_snoozing_is_off(tmp_path: Path, tracker: Any) -> None:
    outcome, _ = snooze(tmp_path, tracker, f'echo 5m > "$QUEUECTL_SNOOZE_FILE"; exit {SNOOZE_EXIT}', snooze_exit=None)
    assert outcome == Outcome(OutcomeKind.EXIT, exit_code=SNOOZE_EXIT)


def test_a_snooze_file_is_removed_after_an_attempt_that_did_not_snooze(tmp_path: Path, tracker: Any) -> None:
    outcome, _ = snooze(tmp_path, tracker, 'echo 5m > "$QUEUECTL_SNOOZE_FILE"; exit 0')
    assert outcome.succeeded


def test_a_killed_attempt_does_not_snooze(tmp_path: Path, tracker: Any) -> None:
    attempt = make_attempt(tmp_path, tracker, f"trap 'exit {SNOOZE_EXIT}' TERM; echo armed; sleep 30 & wait",
                           snooze_exit=SNOOZE_EXIT, kill_grace_s=0.1)

    async def main() -> Outcome:
        watched = Watched(attempt).start()
        await until(lambda: "armed" in (attempt.tail_text() or ""), "the trap to be set")
        attempt.kill(KillReason.REQUEUE)
        return await watched.outcome()

    outcome = asyncio.run(main())
    assert (outcome.kind, outcome.exit_code) == (OutcomeKind.REQUEUED, SNOOZE_EXIT)


# -- the races of issue 9 -------------------------------------------------------------------------


class SignalLog:
    """Wraps a tracker and records every signal the attempt sends through it."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.sent: list[int] = []

    def signal_all(self, target: Target, sig: int) -> int:
        self.sent.append(sig)
        return int(self._inner.signal_all(target, sig))

    def kill_all(self, target: Target) -> None:
        self.sent.append(signal.SIGKILL)
        self._inner.kill_all(target)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_race_a_stop_now_after_the_attempt_ended_leaves_its_real_outcome(tmp_path: Path, tracker: Any) -> None:
    """The scheduler's `worker stop --now` kills every attempt in `running`, which still holds
    those that have ended but whose results are not recorded yet: such a kill must change nothing,
    and must signal nothing (the shell's pid may already belong to another process)."""
    signals = SignalLog(tracker)
    attempt = make_attempt(tmp_path, signals, "exit 0")

    def stop_now_before_recording(a: Attempt, _outcome: Outcome) -> None:
        a.kill(KillReason.REQUEUE)

    async def main() -> Outcome:
        watched = Watched(attempt, on_done=stop_now_before_recording).start()
        outcome = await watched.outcome()
        attempt.kill(KillReason.REQUEUE)  # and again, later: still before the turn records it
        await asyncio.sleep(0.05)
        return outcome

    assert asyncio.run(main()) == Outcome(OutcomeKind.EXIT, exit_code=0)
    assert attempt.kill_reason is None, "an ended attempt was never killed"
    assert signals.sent == [], "nothing was signalled after the end"


def test_race_a_stop_now_during_the_drain_leaves_a_completed_job_completed(tmp_path: Path, tracker: Any) -> None:
    """The shell has exited 0 by itself; a background child still holds the pipe. `worker stop
    --now` now only ends the leftovers: the attempt succeeded, so its job is never run again."""
    attempt = make_attempt(tmp_path, tracker, "sleep 30 & exit 0", drain_s=30)

    async def main() -> Outcome:
        watched = Watched(attempt).start()
        await until(lambda: attempt.phase is Phase.DRAINING, "the shell to exit")
        attempt.kill(KillReason.REQUEUE)
        assert attempt.phase is Phase.DRAINING
        return await watched.outcome()

    assert asyncio.run(main()) == Outcome(OutcomeKind.EXIT, exit_code=0)


def test_race_b_a_timeout_during_the_drain_is_not_a_timeout(tmp_path: Path, tracker: Any) -> None:
    """The shell exited 0 in time; a background child keeps the pipe open past the timeout. The
    timer fires during the drain (called here exactly when the attempt is draining, rather than
    hoping a real timer lands there): the attempt is an exit 0, not timed out, not even killed."""
    signals = SignalLog(tracker)
    attempt = make_attempt(tmp_path, signals, "sleep 30 & exit 0", timeout_s=30, drain_s=0.1)
    seen: list[Phase] = []

    async def main() -> Outcome:
        watched = Watched(attempt).start()
        await until(lambda: attempt.phase is Phase.DRAINING, "the shell to exit")
        seen.append(attempt.phase)
        attempt._on_timeout()  # the timeout timer's callback
        assert attempt.kill_reason is None
        return await watched.outcome()

    assert asyncio.run(main()) == Outcome(OutcomeKind.EXIT, exit_code=0)
    assert seen == [Phase.DRAINING]
    assert attempt.kill_reason is None
    assert signal.SIGTERM not in signals.sent, "the leftovers were ended at the drain's end, not as a timeout"


def test_race_b_with_the_real_timer(tmp_path: Path, tracker: Any) -> None:
    """The same with the real timer: the drain outlasts the timeout by far, so the timer fires
    in it whenever the shell exits before the timeout (checked, not assumed)."""
    attempt = make_attempt(tmp_path, tracker, "sleep 30 & exit 0", timeout_s=0.2, drain_s=0.6)
    fired_in: list[Phase] = []
    real = attempt._on_timeout

    def on_timeout() -> None:
        fired_in.append(attempt.phase)
        real()

    attempt._on_timeout = on_timeout  # type: ignore[method-assign]
    outcome = run_to_end(attempt)
    if fired_in != [Phase.DRAINING]:
        pytest.skip(f"the machine is too slow for this variant: the timer fired in {fired_in}")
    assert outcome == Outcome(OutcomeKind.EXIT, exit_code=0)
