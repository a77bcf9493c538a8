"""Jobs as the daemon sees them, how an attempt ended, legal transitions, and the retry policy.

Pure: no I/O, no clock reads (callers pass `now`), so all of it is unit-tested without a daemon.
"""

from __future__ import annotations

from dataclasses import dataclass

from queuectl.protocol import TERMINAL_STATES, JobState

__all__ = ["Job", "JobState", "Outcome", "RetryPolicy", "TRANSITIONS", "check_transition", "TERMINAL_STATES"]


@dataclass(frozen=True, slots=True)
class Job:
    """One job row. Times are UNIX seconds (UTC); `run` numbers the attempts started so far."""

    id: str
    command: str
    state: JobState
    attempts: int
    max_retries: int
    priority: int
    timeout_s: float | None
    next_run_at: float | None
    created_at: float
    updated_at: float
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    last_error: str | None = None
    owner: str | None = None
    lease_expires_at: float | None = None
    run: int = 0
    pid: int | None = None
    proc_start: int | None = None
    host: str | None = None
    output_tail: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended. `exit_code` is None when no exit status exists (lost, killed)."""

    exit_code: int | None
    reason: str  #: "exit", "timeout", "killed", "worker lost", "canceled", "spawn failed"
    error: str | None = None  #: human text for last_error

    @property
    def succeeded(self) -> bool:
        """True when the command exited 0 on its own."""
        return self.reason == "exit" and self.exit_code == 0

    def describe(self) -> str:
        """One line for last_error and the log."""
        if self.error:
            return self.error
        if self.reason == "exit":
            return f"exit code {self.exit_code}"
        return self.reason


#: state -> states it may move to. Everything else is a bug or a request to refuse.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.PROCESSING, JobState.CANCELED}),
    JobState.FAILED: frozenset({JobState.PROCESSING, JobState.CANCELED}),
    JobState.PROCESSING: frozenset(
        {JobState.COMPLETED, JobState.FAILED, JobState.DEAD, JobState.CANCELED, JobState.PENDING}
    ),
    JobState.COMPLETED: frozenset(),
    JobState.DEAD: frozenset({JobState.PENDING}),  # dlq retry
    JobState.CANCELED: frozenset(),
}


def check_transition(current: JobState, target: JobState) -> bool:
    """True when a job in `current` may move to `target`."""
    return target in TRANSITIONS[current]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff: after failed attempt n the job waits min(base ** n, max) seconds."""

    backoff_base: float = 2.0
    backoff_max_s: float = 300.0

    def delay_s(self, attempts: int) -> float:
        """Seconds to wait after the `attempts`-th failed attempt (1-based)."""
        try:
            return float(min(self.backoff_base**attempts, self.backoff_max_s))
        except OverflowError:
            return float(self.backoff_max_s)

    def after_failure(self, attempts_before: int, max_retries: int, now: float) -> tuple[JobState, int, float | None]:
        """State, new attempt count and next_run_at after one more failed attempt.

        `max_retries` counts retries after the first attempt, so a job runs at most
        max_retries + 1 times; past that it goes to the dead-letter queue.
        """
        attempts = attempts_before + 1
        if attempts <= max_retries:
            return JobState.FAILED, attempts, now + self.delay_s(attempts)
        return JobState.DEAD, attempts, None
